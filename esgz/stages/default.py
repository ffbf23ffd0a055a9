"""The built-in stages: registries and OCI layouts in and out, the format engine between.

:func:`open_default_stages` opens what the stages share for one run (a registry client
with the config's per-registry options) and yields a :class:`DefaultStages`, the
:class:`~esgz.pipeline.runner.Stages` implementation the pipeline uses unless given
another one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread

from esgz.errors import SandboxError
from esgz.pipeline.config import PipelineConfig
from esgz.pipeline.jobs import (
    ImageJob,
    LayerJob,
    LayerOutput,
    ManifestJob,
    PushedManifest,
    ReuseDecision,
    UploadOutcome,
)
from esgz.pipeline.runner import RunContext
from esgz.registry.options import RegistryOptions
from esgz.stages.convert import convert_layer
from esgz.stages.endpoints import Endpoints, open_endpoints
from esgz.stages.fetch import fetch_layer
from esgz.stages.finalize import finalize_image, finalize_manifest
from esgz.stages.profile import profile_manifest, profiler_unavailable_reason
from esgz.stages.resolve import resolve_image
from esgz.stages.reuse import check_reuse
from esgz.stages.upload import upload_layer

__all__ = ["DefaultStages", "open_default_stages"]


class DefaultStages:
    """Each stage method delegates to its module in :mod:`esgz.stages`.

    Made by :func:`open_default_stages`, which first checks that every workload can run.
    """

    def __init__(self, endpoints: Endpoints) -> None:
        self.endpoints = endpoints

    async def resolve(self, image: ImageJob, ctx: RunContext) -> None:
        """See :func:`esgz.stages.resolve.resolve_image`."""
        await resolve_image(image, ctx, self.endpoints)

    async def fetch(self, layer: LayerJob, ctx: RunContext) -> tuple[Path, bool]:
        """See :func:`esgz.stages.fetch.fetch_layer`."""
        return await fetch_layer(layer, ctx, self.endpoints)

    async def reuse(self, layer: LayerJob, ctx: RunContext) -> ReuseDecision:
        """See :func:`esgz.stages.reuse.check_reuse`."""
        return await check_reuse(layer, ctx)

    async def profile(self, manifest: ManifestJob, ctx: RunContext) -> Mapping[int, Sequence[str]]:
        """See :func:`esgz.stages.profile.profile_manifest`."""
        return await profile_manifest(manifest, ctx)

    async def convert(self, layer: LayerJob, ctx: RunContext) -> LayerOutput:
        """See :func:`esgz.stages.convert.convert_layer`."""
        return await convert_layer(layer, ctx)

    async def upload(self, layer: LayerJob, ctx: RunContext) -> UploadOutcome:
        """See :func:`esgz.stages.upload.upload_layer`."""
        return await upload_layer(layer, ctx, self.endpoints)

    async def finalize_manifest(self, manifest: ManifestJob, ctx: RunContext) -> PushedManifest:
        """See :func:`esgz.stages.finalize.finalize_manifest`."""
        return await finalize_manifest(manifest, ctx, self.endpoints)

    async def finalize_image(self, image: ImageJob, ctx: RunContext) -> PushedManifest:
        """See :func:`esgz.stages.finalize.finalize_image`."""
        return await finalize_image(image, ctx, self.endpoints)


@asynccontextmanager
async def open_default_stages(config: PipelineConfig) -> AsyncIterator[DefaultStages]:
    """The built-in stages for ``config``; SandboxError if a workload cannot run here."""
    for image in config.resolved_images():
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
        yield DefaultStages(endpoints)
