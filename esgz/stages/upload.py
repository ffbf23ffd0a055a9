"""Upload stage: an output layer blob → the target registry or layout."""

from __future__ import annotations

from esgz.oci.reference import RegistryReference
from esgz.pipeline.events import BytesUploaded, LayerPhase, ProgressThrottle
from esgz.pipeline.jobs import LayerJob, UploadOutcome
from esgz.pipeline.runner import RunContext
from esgz.stages.endpoints import Endpoints

__all__ = ["upload_layer"]


async def upload_layer(layer: LayerJob, ctx: RunContext, endpoints: Endpoints) -> UploadOutcome:
    """Put the layer's output at the target; say how it got there.

    A blob already in another repository of the target registry is cross-mounted from
    there instead of uploaded: the source repository for a layer passed through
    unchanged, or a repository this run already pushed it to (images sharing a base).
    """
    output = layer.output
    assert output is not None
    settings = layer.image.settings
    image = layer.image.name

    ctx.events.publish(
        LayerPhase(image=image, layer=layer.source.digest, phase="upload", total=output.size)
    )
    progress = ProgressThrottle(
        ctx.events,
        lambda done, total: BytesUploaded(image=image, layer=output.digest, done=done, total=total),
    )

    mount_from = endpoints.mount_source(output.digest, settings.target_ref)
    if mount_from is None and output.digest == layer.source.digest:
        source = settings.source_ref
        mount_from = source if isinstance(source, RegistryReference) else None
    return await endpoints.push_blob(
        settings.target_ref,
        output.digest,
        output.size,
        output.path,
        mount_from=mount_from,
        progress=progress,
    )
