"""Reuse-check stage: is the layer already a valid eStargz / zstd:chunked blob?"""

from __future__ import annotations

import anyio.to_thread

from esgz.estargz.constants import TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION
from esgz.estargz.reader import is_reusable_layer_async, sniff_layer_format
from esgz.pipeline.jobs import LayerJob, LayerOutput, ReuseCheck
from esgz.pipeline.runner import RunContext

__all__ = ["check_reuse"]


async def check_reuse(layer: LayerJob, ctx: RunContext) -> ReuseCheck:
    """Valid iff the TOC-digest annotation is present and the blob verifies against it.

    Only a finding: whether the layer passes through also depends on its prioritized
    files, which :meth:`~esgz.pipeline.jobs.LayerJob.reusable_output` decides.
    """
    source = layer.source
    toc_digest = source.annotations.get(TOC_DIGEST_ANNOTATION)
    if not toc_digest:
        return ReuseCheck("no TOC digest annotation")
    path = layer.fetched_path
    if not await is_reusable_layer_async(path, toc_digest):
        return ReuseCheck("not a valid eStargz / zstd:chunked layer")
    layer_format = await anyio.to_thread.run_sync(sniff_layer_format, path)
    if layer_format is None or layer_format == "stargz-legacy":
        return ReuseCheck("not a valid eStargz / zstd:chunked layer")
    size_text = source.annotations.get(UNCOMPRESSED_SIZE_ANNOTATION)
    output = LayerOutput(
        path=path,
        digest=source.digest,
        size=source.size,
        diff_id=layer.diff_id or "",
        format=layer_format,
        annotations=dict(source.annotations),
        toc_digest=toc_digest,
        uncompressed_size=int(size_text) if size_text and size_text.isdigit() else None,
    )
    return ReuseCheck(f"already {layer_format}", output)
