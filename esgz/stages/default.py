"""The built-in stages: registries and OCI layouts in and out, the format engine between.

:func:`open_default_stages` checks what can be checked before anything is fetched
(every workload can run here, every layout target is writable), opens what the stages
share for one run (a registry client with the config's per-registry options) and yields
a :class:`DefaultStages`, the :class:`~esgz.pipeline.runner.Stages` implementation the
pipeline uses unless given another one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup

from esgz.errors import EsgzError, SandboxError
from esgz.pipeline.config import PipelineConfig
from esgz.pipeline.jobs import (
    FetchedBlob,
    ImageJob,
    LayerJob,
    LayerOutput,
    ManifestJob,
    PushedManifest,
    ReuseCheck,
)
from esgz.pipeline.runner import RunContext
from esgz.registry.options import RegistryOptions
from esgz.stages.convert import convert_into_store, start_preparations
from esgz.stages.endpoints import Endpoints, open_endpoints
from esgz.stages.fetch import fetch_layer
from esgz.stages.finalize import finalize_image, finalize_manifest
from esgz.stages.profile import profile_manifest, profiler_unavailable_reason
from esgz.stages.resolve import resolve_image
from esgz.stages.reuse import check_reuse
from esgz.stages.upload import upload_layer

if TYPE_CHECKING:
    from esgz.registry.model import PushOutcome

__all__ = ["DefaultStages", "open_default_stages"]


class DefaultStages:
    """Each stage method delegates to its module in :mod:`esgz.stages`.

    Made by :func:`open_default_stages`, which first checks that every workload can run.
    """

    def __init__(self, endpoints: Endpoints, background: TaskGroup) -> None:
        """``background`` runs work that outlives a stage call (layer preparations)."""
        self.endpoints = endpoints
        self._background = background

    async def resolve(self, image: ImageJob, ctx: RunContext) -> None:
        """See :func:`esgz.stages.resolve.resolve_image`."""
        await resolve_image(image, ctx, self.endpoints.source(image.settings.source_ref))

    async def fetch(self, layer: LayerJob, ctx: RunContext) -> FetchedBlob:
        """See :func:`esgz.stages.fetch.fetch_layer`."""
        return await fetch_layer(layer, ctx, self.endpoints.source(layer.image.settings.source_ref))

    async def reuse(self, layer: LayerJob, ctx: RunContext) -> ReuseCheck:
        """See :func:`esgz.stages.reuse.check_reuse`."""
        return await check_reuse(layer, ctx)

    async def profile(self, manifest: ManifestJob, ctx: RunContext) -> Mapping[int, Sequence[str]]:
        """See :func:`esgz.stages.profile.profile_manifest`; meanwhile the layers'
        members are compressed (:func:`esgz.stages.convert.start_preparations`)."""
        start_preparations(manifest, ctx, self._background)
        return await profile_manifest(manifest, ctx)

    async def convert(self, layer: LayerJob, ctx: RunContext) -> LayerOutput:
        """See :func:`esgz.stages.convert.convert_into_store`."""
        return await convert_into_store(layer, ctx)

    async def upload(self, layer: LayerJob, ctx: RunContext) -> PushOutcome:
        """See :func:`esgz.stages.upload.upload_layer`."""
        settings = layer.image.settings
        return await upload_layer(
            layer,
            ctx,
            self.endpoints.source(settings.source_ref),
            self.endpoints.target(settings.target_ref),
        )

    async def finalize_manifest(self, manifest: ManifestJob, ctx: RunContext) -> PushedManifest:
        """See :func:`esgz.stages.finalize.finalize_manifest`."""
        target = self.endpoints.target(manifest.image.settings.target_ref)
        return await finalize_manifest(manifest, ctx, target)

    async def finalize_image(self, image: ImageJob, ctx: RunContext) -> PushedManifest:
        """See :func:`esgz.stages.finalize.finalize_image`."""
        return await finalize_image(image, ctx, self.endpoints.target(image.settings.target_ref))


@asynccontextmanager
async def open_default_stages(config: PipelineConfig) -> AsyncIterator[DefaultStages]:
    """The built-in stages for ``config``.

    SandboxError if a workload cannot run here, LayoutError if a layout target cannot
    be written (before anything is fetched or converted).
    """
    images = config.resolved_images()
    for image in images:
        reason = await anyio.to_thread.run_sync(profiler_unavailable_reason, image)
        if reason is not None:
            raise SandboxError(f"images[{image.index}] ({image.source}): {reason}")
    registries = {
        host: RegistryOptions(
            ca_file=options.ca_file, insecure=options.insecure, plain_http=options.plain_http
        )
        for host, options in config.registries.items()
    }
    transfers = max(config.concurrency.fetch, config.concurrency.upload)
    async with open_endpoints(registries, max_transfers=transfers) as endpoints:
        for image in images:
            try:
                await endpoints.target(image.target_ref).check()
            except EsgzError as exc:
                exc.image = exc.image or image.source
                raise
        failure: BaseException | None = None
        async with anyio.create_task_group() as background:
            try:
                yield DefaultStages(endpoints, background)
            except BaseException as exc:  # re-raised as it is, not in an exception group
                failure = exc
            finally:
                background.cancel_scope.cancel()  # preparations nobody will take
        if failure is not None:
            raise failure
