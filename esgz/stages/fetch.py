"""Fetch stage: a source layer blob → a verified file in the local blob store."""

from __future__ import annotations

from pathlib import Path

from esgz.pipeline.cache import LocalStore
from esgz.pipeline.events import BytesFetched
from esgz.pipeline.jobs import LayerJob
from esgz.pipeline.runner import RunContext
from esgz.registry.client import ProgressCallback
from esgz.stages.endpoints import Source

__all__ = ["fetch_layer", "pull_into_store"]


async def fetch_layer(layer: LayerJob, ctx: RunContext, source: Source) -> tuple[Path, bool]:
    """The local path of the layer's blob and whether it was already in the store."""
    image = layer.image.name

    def progress(digest: str, done: int, total: int) -> None:
        ctx.events.publish(BytesFetched(image=image, layer=digest, done=done, total=total))

    return await pull_into_store(
        ctx.store, source, layer.source.digest, layer.source.size, progress
    )


async def pull_into_store(
    store: LocalStore,
    source: Source,
    digest: str,
    size: int,
    progress: ProgressCallback | None = None,
) -> tuple[Path, bool]:
    """Blob ``digest`` of ``source`` in ``store``: pulled straight in (verified) if missing.

    Returns its path and whether it was already there.
    """
    if await store.has(digest):
        return store.blob_path(digest), True
    path = await source.pull_blob(digest, size, store.blobs, progress)
    store.mark_used(digest)
    return path, False
