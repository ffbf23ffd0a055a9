"""``esgz optimize SRC DST``: convert an image, optimized for the workload it runs.

Every flag of ``ctr-remote image optimize`` (seed documentation and 0.12) is accepted,
with the same meaning; see docs/cli.md. The flags are built from the settings models
(:mod:`esgz.cli.build`).
"""

from __future__ import annotations

from typing import Any

import asyncclick as click

from esgz.cli.build import (
    COMMON_FIELDS,
    OPTIMIZE_FIELDS,
    WORKLOAD_FIELDS,
    CommandFlags,
    build_config,
    format_options,
)
from esgz.cli.execute import execute
from esgz.cli.options import output_options

__all__ = ["OPTIMIZE_FLAGS", "optimize"]

#: The generated flags of ``optimize``.
OPTIMIZE_FLAGS = CommandFlags([*COMMON_FIELDS, *OPTIMIZE_FIELDS], WORKLOAD_FIELDS)


@click.command()
@click.argument("src")
@click.argument("dst")
@format_options(estargz_flag=False)
@OPTIMIZE_FLAGS.options()
@output_options
async def optimize(src: str, dst: str, **flags: Any) -> None:
    """Convert SRC to eStargz, optimized for its workload, and write it to DST.

    The image runs in a sandbox for --period seconds; the files it reads are
    prioritized (prefetched at container start by the stargz snapshotter).
    """
    config = build_config(
        src,
        dst,
        image=OPTIMIZE_FLAGS.image_settings(flags),
        cache_dir=flags["cache_dir"],
        no_cache=flags["no_cache"],
        cache_registry=flags["cache_registry"],
        vocabulary=OPTIMIZE_FLAGS.vocabulary(flags),
    )
    await execute(config, log_format=flags["log_format"], quiet=flags["quiet"])
