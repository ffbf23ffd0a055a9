"""Upload stage: an output layer blob → the target registry or layout."""

from __future__ import annotations

from esgz.pipeline.events import BytesUploaded
from esgz.pipeline.jobs import LayerJob
from esgz.pipeline.runner import RunContext
from esgz.stages.endpoints import Endpoints

__all__ = ["upload_layer"]


async def upload_layer(layer: LayerJob, ctx: RunContext, endpoints: Endpoints) -> bool:
    """Put the layer's output at the target; True if it was already there.

    A layer passed through unchanged is cross-mounted from the source repository when
    both are in the same registry.
    """
    output = layer.output
    assert output is not None
    settings = layer.image.settings
    image = layer.image.name

    def progress(done: int, total: int) -> None:
        ctx.events.publish(BytesUploaded(image=image, layer=output.digest, done=done, total=total))

    mount_from = settings.source_ref if output.digest == layer.source.digest else None
    return await endpoints.push_blob(
        settings.target_ref,
        output.digest,
        output.size,
        output.path,
        mount_from=mount_from,
        progress=progress,
    )
