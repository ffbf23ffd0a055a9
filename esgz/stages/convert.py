"""Convert stage: a fetched layer → an eStargz / zstd:chunked blob in the local store.

The conversion itself (tar parsing, chunking, compression, TOC) is the format engine's
(:func:`esgz.estargz.convert.convert_layer_file`, which works in a worker thread); this
stage picks the options from the image's settings and the layer's prioritized files and
moves the result into the blob store under the digest the engine computed while writing.

While a workload runs, :func:`start_preparations` (called by profile-map) already reads
each layer and compresses its members in the background
(:class:`esgz.estargz.convert.PendingPreparation`); the conversion waits for its layer's
and only assembles the members in the prioritized order
(:func:`esgz.estargz.convert.finish_layer_file`), byte for byte what a conversion from
scratch writes.
"""

from __future__ import annotations

import os
from dataclasses import replace

import anyio
from anyio.abc import TaskGroup

from esgz.estargz.convert import PendingPreparation, convert_layer_file, finish_layer_file
from esgz.estargz.options import ConvertOptions, LayerResult
from esgz.estargz.writer import can_prepare
from esgz.pipeline.events import (
    BytesConverted,
    LayerPhase,
    WarningEvent,
    publish_progress_while,
)
from esgz.pipeline.jobs import LayerJob, LayerOutput, ManifestJob
from esgz.pipeline.runner import RunContext

__all__ = ["convert_into_store", "options_for", "start_preparations"]


def options_for(layer: LayerJob, ctx: RunContext) -> ConvertOptions:
    """The format engine's options for ``layer``.

    Compression threads are shared out between the convert workers, so that N layers
    converting at once do not start N × CPU threads.
    """
    settings = layer.image.settings
    cpus = max(1, os.cpu_count() or 1)
    workers = max(1, cpus // max(1, ctx.config.concurrency.convert))
    options = ConvertOptions(
        format=settings.format,
        compression_level=settings.compression_level,
        prioritized_files=layer.prioritized,
        workers=workers,
        temp_dir=ctx.store.scratch,
    )
    if settings.chunk_size > 0:  # 0 means the engine's default (4 MiB)
        options = replace(options, chunk_size=settings.chunk_size)
    return options


async def convert_into_store(layer: LayerJob, ctx: RunContext) -> LayerOutput:
    """Convert ``layer.fetched_path`` and move the output into the blob store."""
    source = layer.fetched_path
    temp = ctx.store.temp_path("convert")
    image, digest, size = layer.image.name, layer.source.digest, layer.source.size
    ctx.events.publish(LayerPhase(image=image, layer=digest, phase="convert", total=size))
    counts = (0, 0)  # (source bytes read, output bytes written), set by the worker thread

    def on_progress(read: int, written: int) -> None:
        nonlocal counts
        counts = (read, written)

    def sample() -> BytesConverted:
        read, written = counts
        return BytesConverted(image=image, layer=digest, done=read, total=size, written=written)

    preparation, layer.preparation = layer.preparation, None
    options = options_for(layer, ctx)

    async def convert() -> LayerResult:
        prepared = None
        if preparation is not None and preparation.options == replace(
            options, prioritized_files=()
        ):
            prepared = await preparation.take()
        if prepared is None:
            return await convert_layer_file(source, temp, options, progress=on_progress)
        try:
            return await finish_layer_file(
                prepared,
                temp,
                options.prioritized_files,
                progress=lambda _read, written: on_progress(size, written),
            )
        finally:
            prepared.close()

    result = await publish_progress_while(ctx.events, convert, sample)
    # A record file's paths are applied to every layer; most layers lack most of them.
    if result.missing_prioritized and layer.image.settings.record_in is None:
        count = len(result.missing_prioritized)
        ctx.events.publish(
            WarningEvent(
                image=layer.image.name,
                layer=layer.source.digest,
                message=f"{count} prioritized path(s) are not in this layer (first:"
                f" {result.missing_prioritized[0]})",
            )
        )
    path = await ctx.store.move_in(temp, result.digest)
    return LayerOutput(
        path=path,
        digest=result.digest,
        size=result.size,
        diff_id=result.diff_id,
        format=result.format,
        annotations=dict(result.annotations),
        toc_digest=result.toc_digest,
        uncompressed_size=result.uncompressed_size,
    )


def start_preparations(manifest: ManifestJob, ctx: RunContext, background: TaskGroup) -> None:
    """When a workload runs on ``manifest``, start reading its layers and compressing
    their members in ``background`` (:attr:`LayerJob.preparation`, taken by
    :func:`convert_into_store`): eStargz only, once per source blob, not for a layer that
    may pass through as it is, at most ``concurrency.convert`` layers at a time."""
    settings = manifest.image.settings
    if not (settings.needs_workload and manifest.profile and settings.record_in is None):
        return
    limiter = anyio.CapacityLimiter(max(1, ctx.config.concurrency.convert))
    started: set[str] = set()
    for layer in manifest.layers:
        check = layer.reuse_check
        if check is not None and check.output is not None:
            continue
        options = replace(options_for(layer, ctx), prioritized_files=())
        if layer.fetched is None or not can_prepare(options) or layer.source.digest in started:
            continue
        started.add(layer.source.digest)
        preparation = PendingPreparation(layer.fetched_path, options)
        layer.preparation = preparation

        async def run(preparation: PendingPreparation = preparation) -> None:
            async with limiter:
                await preparation.run()

        background.start_soon(run)
