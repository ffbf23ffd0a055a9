"""``esgz run PIPELINE.yaml``: convert every image of a pipeline config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncclick as click
from pydantic import BaseModel, ValidationError

from esgz.cli.execute import execute
from esgz.cli.options import DIR, FILE
from esgz.pipeline.config import CacheConfig, ExecutorConfig, load_config_file

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
@click.option(
    "--broker",
    metavar="URL",
    default=None,
    help=ExecutorConfig.model_fields["broker"].description,
)
@click.option(
    "--cache-registry",
    metavar="REPO",
    default=None,
    help=CacheConfig.model_fields["registry"].description,
)
@click.option("-q", "--quiet", is_flag=True, help="Print only errors and the results.")
async def run(
    pipeline: Path,
    cache_dir: Path | None,
    log_format: str,
    broker: str | None,
    cache_registry: str | None,
    quiet: bool,
) -> None:
    """Convert the images of the YAML pipeline config PIPELINE (see docs/pipeline.md)."""
    config = await load_config_file(pipeline)
    cache: dict[str, Any] = {}
    if cache_dir is not None:
        cache["dir"] = cache_dir
    if cache_registry is not None:
        cache["registry"] = _checked(CacheConfig, "registry", cache_registry, "--cache-registry")
    if cache:
        config = config.model_copy(update={"cache": config.cache.model_copy(update=cache)})
    if broker is not None:
        broker = _checked(ExecutorConfig, "broker", broker, "--broker")
        config = config.model_copy(
            update={"executor": config.executor.model_copy(update={"broker": broker})}
        )
    await execute(config, log_format=log_format, quiet=quiet)


def _checked(model: type[BaseModel], name: str, value: str, flag: str) -> str:
    """``value`` if valid for field ``name`` of ``model``; else a usage error naming ``flag``."""
    try:
        model.model_validate({name: value})
    except ValidationError as exc:
        message = exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
        raise click.UsageError(f"{flag}: {message}") from None
    return value
