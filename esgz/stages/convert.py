"""Convert stage: a fetched layer → an eStargz / zstd:chunked blob in the local store.

The conversion itself (tar parsing, chunking, compression, TOC) is the format engine's
(:mod:`esgz.estargz`); this stage picks the options, runs it in a worker thread bounded
by the run's CPU limiter, and commits the result to the blob store.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import anyio.to_thread

from esgz.errors import FormatError
from esgz.pipeline.jobs import LayerJob, LayerOutput
from esgz.pipeline.runner import RunContext

__all__ = ["convert_layer"]


class _LayerResult(Protocol):
    digest: str
    size: int
    diff_id: str
    toc_digest: str | None
    uncompressed_size: int | None
    annotations: Mapping[str, str]


def _engine() -> Any:
    try:
        return importlib.import_module("esgz.estargz.convert")
    except ModuleNotFoundError:
        raise FormatError("the layer converter (esgz.estargz.convert) is not available") from None


async def convert_layer(layer: LayerJob, ctx: RunContext) -> LayerOutput:
    """Convert ``layer.fetched_path`` with the image's format options."""
    settings = layer.image.settings
    assert layer.fetched_path is not None
    source: Path = layer.fetched_path
    engine = _engine()
    options = engine.ConvertOptions(
        format=settings.format,
        compression_level=settings.compression_level,
        chunk_size=settings.chunk_size,
        prioritized_files=list(layer.prioritized),
    )
    temp = ctx.store.temp_path("convert")
    result: _LayerResult = await anyio.to_thread.run_sync(
        engine.convert_layer_file, source, temp, options, limiter=ctx.cpu_limiter
    )
    path = await ctx.store.commit(temp, result.digest)
    return LayerOutput(
        path=path,
        digest=result.digest,
        size=result.size,
        diff_id=result.diff_id,
        format=settings.format,
        annotations=dict(result.annotations),
        toc_digest=result.toc_digest,
        uncompressed_size=result.uncompressed_size,
    )
