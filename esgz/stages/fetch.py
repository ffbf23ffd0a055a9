"""Fetch stage: a source layer blob → a verified file in the local blob store."""

from __future__ import annotations

from pathlib import Path

from esgz.pipeline.cache import LocalStore
from esgz.pipeline.events import BytesFetched, LayerPhase, ProgressThrottle
from esgz.pipeline.jobs import LayerJob
from esgz.pipeline.runner import RunContext
from esgz.stages.endpoints import Endpoints, ProgressFn, Reference

__all__ = ["fetch_blob", "fetch_layer"]


async def fetch_layer(layer: LayerJob, ctx: RunContext, endpoints: Endpoints) -> tuple[Path, bool]:
    """The local path of the layer's blob and whether it was already in the store."""
    digest = layer.source.digest
    image = layer.image.name
    size = layer.source.size
    ctx.events.publish(LayerPhase(image=image, layer=digest, phase="fetch", total=size))
    progress = ProgressThrottle(
        ctx.events,
        lambda done, total: BytesFetched(image=image, layer=digest, done=done, total=total),
    )
    fetched = await fetch_blob(
        ctx.store, endpoints, layer.image.settings.source_ref, digest, size, progress
    )
    ctx.events.publish(LayerPhase(image=image, layer=digest, phase="wait"))
    return fetched


async def fetch_blob(
    store: LocalStore,
    endpoints: Endpoints,
    ref: Reference,
    digest: str,
    size: int,
    progress: ProgressFn | None = None,
) -> tuple[Path, bool]:
    """Blob ``digest`` of ``ref`` in ``store`` (pulled and verified once, then renamed in).

    Returns its path and whether it was already there.
    """
    if await store.has(digest):
        return store.blob_path(digest), True
    temp = store.temp_path("fetch")
    await endpoints.pull_blob(ref, digest, size, temp, progress)
    return await store.commit(temp, digest), False
