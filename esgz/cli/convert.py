"""``esgz convert SRC DST``: convert an image without running it."""

from __future__ import annotations

from typing import Any

import asyncclick as click

from esgz.cli.build import build_config, conversion_settings
from esgz.cli.execute import execute
from esgz.cli.options import (
    FILE,
    conversion_options,
    output_options,
    platform_options,
    source_options,
)

__all__ = ["convert"]


@click.command()
@click.argument("src")
@click.argument("dst")
@click.option(
    "--estargz",
    is_flag=True,
    help="Produce eStargz layers (the default unless --zstdchunked).",
)
@conversion_options
@click.option(
    "--record-in",
    "--estargz-record-in",
    "--zstdchunked-record-in",
    "record_in",
    type=FILE,
    help="Record file (JSON lines, from optimize --record-out): its paths are prioritized in"
    " every layer that has them.",
)
@click.option(
    "--prefetch-list",
    type=FILE,
    help="File of paths and globs to prioritize, each in the layer that provides it.",
)
@source_options
@platform_options
@output_options
async def convert(src: str, dst: str, **flags: Any) -> None:
    """Convert SRC to eStargz (or zstd:chunked) and write it to DST."""
    if flags["zstdchunked"] and flags["estargz"]:
        raise click.UsageError("--estargz and --zstdchunked cannot be used together")
    image = conversion_settings(flags)
    if flags["record_in"] is not None and flags["prefetch_list"] is not None:
        raise click.UsageError("--record-in and --prefetch-list cannot be used together")
    image["no_optimize"] = flags["record_in"] is None and flags["prefetch_list"] is None
    for key in ("record_in", "prefetch_list"):
        if flags[key] is not None:
            image[key] = str(flags[key])
    config = build_config(
        src, dst, image=image, cache_dir=flags["cache_dir"], no_cache=flags["no_cache"]
    )
    await execute(config, log_format=flags["log_format"], quiet=flags["quiet"])
