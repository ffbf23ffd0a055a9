"""Fetch stage: a source layer blob → a verified file in the local blob store.

The blob is pulled straight into the store (verified while written). Its uncompressed
stream is hashed once per blob (the result is kept in the store, so a re-run does not
decompress it again); the runner checks each layer's config diff_id against it.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from esgz.estargz.source import open_tar_stream
from esgz.oci.digest import is_digest, parse_digest
from esgz.pipeline.cache import LocalStore
from esgz.pipeline.events import BytesFetched, LayerPhase, ProgressThrottle
from esgz.pipeline.jobs import FetchedBlob, LayerJob
from esgz.pipeline.runner import RunContext
from esgz.registry.model import ProgressCallback
from esgz.stages.endpoints import Source
from esgz.threads import run_stoppable

__all__ = ["fetch_layer", "pull_into_store", "uncompressed_digest", "uncompressed_digest_sync"]

_READ = 1 << 20


async def fetch_layer(layer: LayerJob, ctx: RunContext, source: Source) -> FetchedBlob:
    """The layer's blob in the store, whether it was there already, and its diff_id."""
    image = layer.image.name
    digest = layer.source.digest
    ctx.events.publish(
        LayerPhase(image=image, layer=digest, phase="fetch", total=layer.source.size)
    )
    throttle = ProgressThrottle(
        ctx.events,
        lambda done, total: BytesFetched(image=image, layer=digest, done=done, total=total),
    )

    def progress(_digest: str, done: int, total: int) -> None:
        throttle(done, total)

    path, cached = await pull_into_store(ctx.store, source, digest, layer.source.size, progress)
    claimed = layer.source.diff_id
    algorithm = parse_digest(claimed).algorithm if claimed and is_digest(claimed) else "sha256"
    diff_id = await ctx.store.diff_id_of(digest, algorithm)
    if diff_id is None:
        diff_id = await uncompressed_digest(path, algorithm)
        await ctx.store.record_diff_id(digest, diff_id)
    ctx.events.publish(LayerPhase(image=image, layer=digest, phase="wait"))
    return FetchedBlob(path, cached, diff_id)


async def uncompressed_digest(path: Path, algorithm: str = "sha256") -> str:
    """The digest of the blob's uncompressed stream, hashed in a worker thread.

    Cancelling the caller stops the thread at its next read (and waits for that).
    """
    return await run_stoppable(lambda stop: uncompressed_digest_sync(path, algorithm, stop))


class _Stopped(Exception):
    """The hashing was cancelled."""


def uncompressed_digest_sync(
    path: Path, algorithm: str = "sha256", stop: threading.Event | None = None
) -> str:
    """The digest of the blob's uncompressed stream (gzip, zstd or plain tar). Blocking.

    FormatError if the blob cannot be decompressed; stops early once ``stop`` is set.
    """
    hasher = hashlib.new(algorithm)
    with path.open("rb") as file:
        stream = open_tar_stream(file)
        try:
            while chunk := stream.read(_READ):
                if stop is not None and stop.is_set():
                    raise _Stopped
                hasher.update(chunk)
        finally:
            stream.close()
    return f"{algorithm}:{hasher.hexdigest()}"


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
