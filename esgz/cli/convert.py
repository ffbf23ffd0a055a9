"""``esgz convert SRC DST``: convert an image without running it.

The flags are built from the settings models (:mod:`esgz.cli.build`).
"""

from __future__ import annotations

from typing import Any

import asyncclick as click

from esgz.cli.build import COMMON_FIELDS, CONVERT_FIELDS, CommandFlags, build_config, format_options
from esgz.cli.execute import execute
from esgz.cli.options import output_options

__all__ = ["CONVERT_FLAGS", "convert"]

#: The generated flags of ``convert``.
CONVERT_FLAGS = CommandFlags([*COMMON_FIELDS, *CONVERT_FIELDS], ())


@click.command()
@click.argument("src")
@click.argument("dst")
@format_options(estargz_flag=True)
@CONVERT_FLAGS.options()
@output_options
async def convert(src: str, dst: str, **flags: Any) -> None:
    """Convert SRC to eStargz (or zstd:chunked) and write it to DST."""
    if flags["zstdchunked"] and flags["estargz"]:
        raise click.UsageError("--estargz and --zstdchunked cannot be used together")
    image = CONVERT_FLAGS.image_settings(flags)
    image["no_optimize"] = flags["record_in"] is None and flags["prefetch_list"] is None
    config = build_config(
        src,
        dst,
        image=image,
        cache_dir=flags["cache_dir"],
        no_cache=flags["no_cache"],
        cache_registry=flags["cache_registry"],
        vocabulary=CONVERT_FLAGS.vocabulary(flags),
    )
    await execute(config, log_format=flags["log_format"], quiet=flags["quiet"])
