"""``esgz run PIPELINE.yaml``: convert every image of a pipeline config."""

from __future__ import annotations

from pathlib import Path

import asyncclick as click

from esgz.cli.execute import execute
from esgz.cli.options import DIR, FILE
from esgz.pipeline.config import load_config_file

__all__ = ["run"]


@click.command()
@click.argument("pipeline", type=FILE)
@click.option(
    "--cache-dir",
    type=DIR,
    default=None,
    help="Override the config's cache directory.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: progress bars on a terminal, log lines otherwise; json: JSON lines.",
)
@click.option("-q", "--quiet", is_flag=True, help="Print only errors and the results.")
async def run(pipeline: Path, cache_dir: Path | None, log_format: str, quiet: bool) -> None:
    """Convert the images of the YAML pipeline config PIPELINE (see docs/pipeline.md)."""
    config = await load_config_file(pipeline)
    if cache_dir is not None:
        config = config.model_copy(
            update={"cache": config.cache.model_copy(update={"dir": cache_dir})}
        )
    await execute(config, log_format=log_format, quiet=quiet)
