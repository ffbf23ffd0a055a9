"""Top-level ``esgz`` command group and its error handling.

Exit codes: 0 success; 1 an :class:`~esgz.errors.EsgzError` (printed as one line
``esgz: error: <message>``, no traceback), also a full disk, an exceeded quota, a
read-only file system or a file-size limit (one line naming the path); 2 a usage error
(bad flag or flag value, also one line); 130 interrupted (Ctrl-C); 128+N terminated by
signal N — 143 for SIGTERM, 129 for SIGHUP — after the same cleanup as for Ctrl-C
(``esgz: terminated by SIGTERM``); 141 when stdout is a pipe closed by its reader
(``esgz inspect … | head``), silently, as a process killed by SIGPIPE. Any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import anyio
import asyncclick as click

from esgz import __version__
from esgz.cli.convert import convert
from esgz.cli.inspect_image import inspect
from esgz.cli.optimize import optimize
from esgz.cli.runfile import run as run_command
from esgz.cli.verify_image import verify
from esgz.cli.worker import worker
from esgz.errors import EsgzError
from esgz.fsutil import storage_error, storage_problem
from esgz.signals import Termination, cancel_on_signals

__all__ = ["EsgzGroup", "cli", "run"]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside ``exc`` (itself if it is not a group)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _expected_error(exc: BaseException) -> EsgzError | None:
    """The error to print as one line for ``exc``, or None if ``exc`` is a bug.

    An :class:`EsgzError`, also inside an exception group (the first one, when all its
    members are expected); a full disk, exceeded quota or read-only file system anywhere
    in an error's causes becomes a :class:`~esgz.errors.StorageError` naming the path.
    """
    errors: list[EsgzError] = []
    for leaf in _leaves(exc):
        problem = storage_problem(leaf)
        if problem is not None:
            context = leaf if isinstance(leaf, EsgzError) else None
            errors.append(storage_error(problem, context=context))
        elif isinstance(leaf, EsgzError):
            errors.append(leaf)
        else:
            return None
    return errors[0] if errors else None


def _is_cancellation(exc: BaseException) -> bool:
    """Only cancellation exceptions (of any async backend) in ``exc``."""
    cancelled = anyio.get_cancelled_exc_class()
    return all(isinstance(leaf, cancelled) for leaf in _leaves(exc))


def _stdout_closed() -> bool:
    """Whether stdout is a pipe (or socket) whose reading end has been closed."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        events = poller.poll(0)
    except (OSError, ValueError):
        return False
    return any(flags & (select.POLLERR | select.POLLHUP) for _fd, flags in events)


def _is_broken_stdout(exc: BaseException) -> bool:
    """A write to a closed stdout pipe (EPIPE), possibly inside an exception group."""
    leaves = _leaves(exc)
    return (
        all(isinstance(leaf, OSError) and leaf.errno == errno.EPIPE for leaf in leaves)
        and bool(leaves)
        and _stdout_closed()
    )


def _exit_on_broken_stdout() -> NoReturn:
    """Exit as a process killed by SIGPIPE would: quietly, 128 + 13."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # nothing more to flush at exit
    os.close(devnull)
    sys.exit(128 + signal.SIGPIPE)


def _exit_terminated(termination: Termination) -> NoReturn:
    with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
        click.echo(f"esgz: terminated by {termination.name}", err=True)
    sys.exit(termination.exit_code)


class EsgzGroup(click.Group):
    """A command group that turns expected errors and signals into one line and an exit code."""

    async def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command; map errors and signals to exit codes when ``standalone_mode``."""
        if not standalone_mode:
            return await super().main(args, prog_name, complete_var, False, **extra)
        termination = Termination()
        try:
            with anyio.CancelScope() as scope, cancel_on_signals(scope) as termination:
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
        except SystemExit as exc:
            if exc.code == 1 and _stdout_closed():
                _exit_on_broken_stdout()  # click's own answer to EPIPE is a silent 1
            raise
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            if termination.signum is not None and (
                _expected_error(exc) is not None or _is_cancellation(exc)
            ):
                _exit_terminated(termination)  # what the signal's cancellation caused
            if _is_broken_stdout(exc):
                _exit_on_broken_stdout()
            error = _expected_error(exc)
            if error is None:
                raise
            click.echo(f"esgz: error: {_one_line(str(error))}", err=True)
            sys.exit(1)
        if termination.signum is not None and scope.cancelled_caught:
            _exit_terminated(termination)
        try:
            sys.stdout.flush()  # here, not at exit, where a closed pipe is only a warning
        except BrokenPipeError:
            if not _stdout_closed():
                raise
            _exit_on_broken_stdout()
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
    with 130 and one line instead of a traceback; SIGTERM and SIGHUP do the same with
    128 + the signal's number (see the module docstring).
    """
    try:
        cli(_anyio_backend="asyncio")
    except KeyboardInterrupt:
        click.echo("esgz: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        if not _stdout_closed():
            raise
        _exit_on_broken_stdout()
