"""Run a pipeline from a command: render its events, print its result."""

from __future__ import annotations

import anyio
import asyncclick as click

from esgz.cli.render import make_renderer
from esgz.pipeline.api import run_pipeline
from esgz.pipeline.config import PipelineConfig
from esgz.pipeline.events import EventBus
from esgz.pipeline.results import PipelineResult

__all__ = ["execute"]


async def execute(config: PipelineConfig, *, log_format: str, quiet: bool) -> PipelineResult:
    """Run ``config`` while rendering its events; print ``target@digest`` per image.

    The result lines go to stdout (not in JSON mode, where the events say it all).
    """
    bus = EventBus()
    renderer = make_renderer(log_format, quiet)
    subscription = bus.subscribe(max_buffer=1024)
    failure: Exception | None = None
    result: PipelineResult | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(renderer.consume, subscription)
        try:
            result = await run_pipeline(config, events=bus)
        except Exception as exc:  # re-raised below, once the renderer has finished
            failure = exc
            bus.close()
    if failure is not None:
        raise failure
    assert result is not None
    if log_format != "json":
        for image in result.images:
            click.echo(f"{image.target} {image.digest}")
    return result
