"""Top-level ``esgz`` command group and its error handling.

Exit codes: 0 success; 1 an :class:`~esgz.errors.EsgzError` (printed as one line
``esgz: error: <message>``, no traceback); 2 a usage error (bad flag or flag value, also
one line); 130 interrupted. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

import asyncclick as click

from esgz import __version__
from esgz.cli.convert import convert
from esgz.cli.inspect_image import inspect
from esgz.cli.optimize import optimize
from esgz.cli.runfile import run as run_command
from esgz.cli.verify_image import verify
from esgz.cli.worker import worker
from esgz.errors import EsgzError

__all__ = ["EsgzGroup", "cli", "run"]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _single_esgz_error(exc: BaseException) -> EsgzError | None:
    """The EsgzError inside ``exc`` (also if wrapped alone in an exception group)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, EsgzError) else None


class EsgzGroup(click.Group):
    """A command group that turns expected errors into one line and an exit code."""

    async def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command; map errors to exit codes when ``standalone_mode``."""
        if not standalone_mode:
            return await super().main(args, prog_name, complete_var, False, **extra)
        try:
            result = await super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            click.echo(f"esgz: error: {_one_line(exc.format_message())}", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            click.echo(f"esgz: error: {_one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("esgz: interrupted", err=True)
            sys.exit(130)
        except BaseException as exc:
            error = _single_esgz_error(exc)
            if error is None:
                raise
            click.echo(f"esgz: error: {_one_line(str(error))}", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


@click.group(name="esgz", cls=EsgzGroup)
@click.version_option(__version__, prog_name="esgz")
@click.option(
    "--debug",
    is_flag=True,
    help="Log debug messages on stderr.",
)
async def cli(debug: bool) -> None:
    """Convert container images into lazy-pullable eStargz / zstd:chunked images.

    Images are named by registry reference (host/repo:tag, http://host/repo:tag with
    --plain-http) or as an OCI image layout (local:///path[:tag]).
    """
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="esgz: %(levelname)s %(name)s: %(message)s",
    )


cli.add_command(optimize)
cli.add_command(convert)
cli.add_command(run_command)
cli.add_command(inspect)
cli.add_command(verify)
cli.add_command(worker)


def run() -> None:
    """Run the command group (used by the console script).

    Ctrl-C cancels the run (temporary files are removed, nothing is tagged), then exits
    with 130 and one line instead of a traceback.
    """
    try:
        cli(_anyio_backend="asyncio")
    except KeyboardInterrupt:
        click.echo("esgz: interrupted", err=True)
        sys.exit(130)
