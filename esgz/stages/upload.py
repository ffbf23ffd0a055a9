"""Upload stage: an output layer blob → the target registry or layout."""

from __future__ import annotations

from typing import TYPE_CHECKING

from esgz.pipeline.events import BytesUploaded, LayerPhase, ProgressThrottle
from esgz.pipeline.jobs import LayerJob
from esgz.pipeline.runner import RunContext
from esgz.stages.endpoints import Source, Target

if TYPE_CHECKING:
    from esgz.registry.model import PushOutcome

__all__ = ["upload_layer"]


async def upload_layer(
    layer: LayerJob, ctx: RunContext, source: Source, target: Target
) -> PushOutcome:
    """Put the layer's output at the target; say how it got there.

    A blob already in another repository of the target registry is cross-mounted from
    there instead of uploaded: a repository this run already pushed it to (images
    sharing a base), or the source repository for a layer passed through unchanged.
    """
    output = layer.output
    assert output is not None
    image = layer.image.name

    ctx.events.publish(
        LayerPhase(image=image, layer=layer.source.digest, phase="upload", total=output.size)
    )
    throttle = ProgressThrottle(
        ctx.events,
        lambda done, total: BytesUploaded(image=image, layer=output.digest, done=done, total=total),
    )

    def progress(_digest: str, done: int, total: int) -> None:
        throttle(done, total)

    return await target.push_blob(
        output.digest,
        output.size,
        output.path,
        source=source if output.digest == layer.source.digest else None,
        progress=progress,
        mount_from=output.mount_from,
    )
