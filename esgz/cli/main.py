"""Top-level ``esgz`` command group."""

from __future__ import annotations

import asyncclick as click

from esgz import __version__


@click.group()
@click.version_option(__version__, prog_name="esgz")
async def cli() -> None:
    """Convert container images into lazy-pullable eStargz / zstd:chunked images."""


def run() -> None:
    """Run the command group (used by the console script)."""
    cli(_anyio_backend="asyncio")
