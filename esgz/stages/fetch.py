"""Fetch stage: a source layer blob → a verified file in the local blob store."""

from __future__ import annotations

from pathlib import Path

from esgz.pipeline.events import BytesFetched
from esgz.pipeline.jobs import LayerJob
from esgz.pipeline.runner import RunContext
from esgz.stages.endpoints import Endpoints

__all__ = ["fetch_layer"]


async def fetch_layer(layer: LayerJob, ctx: RunContext, endpoints: Endpoints) -> tuple[Path, bool]:
    """The local path of the layer's blob and whether it was already in the store."""
    digest = layer.source.digest
    if await ctx.store.has(digest):
        return ctx.store.blob_path(digest), True
    image = layer.image.name

    def progress(done: int, total: int) -> None:
        ctx.events.publish(BytesFetched(image=image, layer=digest, done=done, total=total))

    temp = ctx.store.temp_path("fetch")
    await endpoints.pull_blob(
        layer.image.settings.source_ref, digest, layer.source.size, temp, progress
    )
    return await ctx.store.commit(temp, digest), False
