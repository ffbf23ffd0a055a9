"""The runner: stages as concurrent task groups joined by bounded memory streams.

::

    images ─► resolve ─► fetch ─► reuse ─► profile ─► convert ─► upload ─┐
                 │                        (gathers a                    │ all layers of a
                 │                         manifest's layers)           ▼ manifest uploaded
                 └── manifests without layers ───────────────────────► finalize ─► image done

Every arrow is a memory object stream with ``concurrency.buffer`` slots, so a slow stage
holds back the ones before it. Each stage runs ``concurrency.<stage>`` workers; every
worker owns a ``clone()`` of its receive stream and of the send streams it feeds, and
closes them when it ends, which is how the end of the input propagates downstream.

Work is de-duplicated across images: a source blob is fetched once per digest, a layer
converted once per :class:`~esgz.pipeline.cache.ConversionKey` (and looked up in the
persistent cache first, then in the shared cache if the run has one — a registry
repository, :mod:`esgz.distributed.regcache`), an output blob uploaded once per target.
The stage functions themselves come from a :class:`Stages` implementation, so the
runner knows nothing of registries or formats.

The first failure cancels the whole run and is raised once. An expected failure (an
:class:`~esgz.errors.EsgzError`) becomes a :class:`~esgz.errors.PipelineError` naming the
image, layer and stage, with the original error as ``__cause__``; anything else is a bug
and is raised as it is, traceback intact, with a note naming image, layer and stage.
Manifests are written only after all their blobs, and the
image's index only after all its manifests, so a failed or cancelled run never leaves
a partially pushed image; its scratch directory is removed in every case.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

import anyio
import anyio.to_thread
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from esgz.errors import EsgzError, ImageError, PipelineError
from esgz.pipeline.cache import (
    ConversionCache,
    ConversionKey,
    LocalStore,
    SharedConversionCache,
    open_store,
)
from esgz.pipeline.config import PipelineConfig
from esgz.pipeline.dedup import OnceMap
from esgz.pipeline.events import (
    EventBus,
    ImageDone,
    ImagePushed,
    ImageResolved,
    LayerConverted,
    LayerFetched,
    LayerReused,
    LayerUploaded,
    PipelineDone,
)
from esgz.pipeline.jobs import (
    FetchedBlob,
    ImageJob,
    LayerJob,
    LayerOutput,
    ManifestJob,
    PushedManifest,
    ReuseCheck,
)
from esgz.pipeline.results import ImageResult, LayerSummary, ManifestResult, PipelineResult

if TYPE_CHECKING:
    from esgz.registry.model import PushOutcome

__all__ = ["RunContext", "Runner", "Stages"]

logger = logging.getLogger(__name__)

V = TypeVar("V")


@dataclass
class RunContext:
    """What stage functions get besides their job: config, events, storage."""

    config: PipelineConfig
    events: EventBus
    store: LocalStore
    cache: ConversionCache | None
    shared_cache: SharedConversionCache | None = None


class Stages(Protocol):
    """The stage functions the runner drives; one implementation per I/O world."""

    async def resolve(self, image: ImageJob, ctx: RunContext) -> None:
        """Fill ``image.manifests`` (and their layers) from the source."""

    async def fetch(self, layer: LayerJob, ctx: RunContext) -> FetchedBlob:
        """Make the source blob available locally, verified; hash its uncompressed stream.

        Called once per source digest; the runner checks each layer's diff_id against
        the result.
        """

    async def reuse(self, layer: LayerJob, ctx: RunContext) -> ReuseCheck:
        """Whether the (fetched) layer is valid as it is (only called with ``reuse``).

        The runner decides whether it then passes through (see
        :meth:`~esgz.pipeline.jobs.LayerJob.reusable_output`).
        """

    async def profile(self, manifest: ManifestJob, ctx: RunContext) -> Mapping[int, Sequence[str]]:
        """Prioritized files per layer index of a complete manifest."""

    async def convert(self, layer: LayerJob, ctx: RunContext) -> LayerOutput:
        """Convert the fetched layer; the output must be moved into ``ctx.store``."""

    async def upload(self, layer: LayerJob, ctx: RunContext) -> PushOutcome:
        """Put ``layer.output`` at the target; say how it got there."""

    async def finalize_manifest(self, manifest: ManifestJob, ctx: RunContext) -> PushedManifest:
        """Write config and manifest of one platform (all its blobs are uploaded)."""

    async def finalize_image(self, image: ImageJob, ctx: RunContext) -> PushedManifest:
        """Write the index (or tag the single manifest) once every manifest is written."""


class Runner:
    """Runs one pipeline config through a :class:`Stages` implementation."""

    def __init__(
        self,
        config: PipelineConfig,
        stages: Stages,
        events: EventBus | None = None,
        *,
        shared_cache: SharedConversionCache | None = None,
    ) -> None:
        self.config = config
        self.stages = stages
        self.shared_cache = shared_cache
        self.events = events if events is not None else EventBus()
        self._failure: Exception | None = None
        self._fetches: OnceMap[str, FetchedBlob] = OnceMap()
        self._conversions: OnceMap[ConversionKey, tuple[LayerOutput, bool]] = OnceMap()
        self._uploads: OnceMap[tuple[str, str], PushOutcome] = OnceMap()
        self._images: list[ImageJob] = []

    # ------------------------------------------------------------------ failures

    def _fail(self, stage: str, image: str, layer: str | None, exc: Exception) -> Exception:
        """The error to raise for ``exc``; the first one is the run's failure.

        An EsgzError is wrapped once in a PipelineError; anything else is a bug and stays
        itself (traceback intact), with a note saying where it happened.
        """
        error: Exception
        if isinstance(exc, PipelineError):
            error = exc
        elif isinstance(exc, EsgzError):
            error = PipelineError(
                exc.message,
                image=image,
                layer=layer or exc.layer,
                stage=stage,
                registry=exc.registry,
            )
            error.__cause__ = exc
        else:
            where = f"image {image}" + (f", layer {layer}" if layer else "")
            exc.add_note(f"esgz: in {where}, stage {stage}")
            error = exc
        if self._failure is None:
            self._failure = error
        return error

    async def _guard(
        self,
        stage: str,
        image: str,
        layer: str | None,
        work: Awaitable[V],
    ) -> V:
        try:
            return await work
        except Exception as exc:
            error = self._fail(stage, image, layer, exc)
            if error is exc:
                raise
            raise error from exc

    # ------------------------------------------------------------------ running

    async def run(self) -> PipelineResult:
        """Run every image; raise the first failure as a PipelineError."""
        started = time.monotonic()
        error_text: str | None = None
        try:
            async with open_store(self.config) as store:
                ctx = RunContext(
                    config=self.config,
                    events=self.events,
                    store=store,
                    cache=ConversionCache(store) if self.config.cache.enabled else None,
                    shared_cache=self.shared_cache,
                )
                try:
                    await self._run_stages(ctx)
                except BaseExceptionGroup as group:
                    failure = self._failure
                    if failure is None:
                        raise
                    if group.subgroup(lambda e: not isinstance(e, Exception)) is not None:
                        raise
                    # Shown with its own cause, not as raised "during" the group.
                    failure.__suppress_context__ = True
                    raise failure from failure.__cause__
                if self.config.cache.enabled:
                    evicted = await store.evict(int(self.config.cache.max_size))
                    if evicted:
                        logger.info("cache: evicted %d blobs", evicted)
        except EsgzError as exc:
            error_text = str(exc)
            raise
        except Exception as exc:
            error_text = f"{type(exc).__name__}: {exc}"
            raise
        except BaseException:
            error_text = "cancelled"
            raise
        finally:
            self.events.publish(
                PipelineDone(
                    image="",
                    images_done=sum(1 for job in self._images if job.pushed is not None),
                    seconds=time.monotonic() - started,
                    error=error_text,
                )
            )
            self.events.close()
        return self._result(time.monotonic() - started)

    async def _run_stages(self, ctx: RunContext) -> None:
        limits = self.config.concurrency
        buffer = limits.buffer
        image_send, image_recv = anyio.create_memory_object_stream[ImageJob](buffer)
        fetch_send, fetch_recv = anyio.create_memory_object_stream[LayerJob](buffer)
        reuse_send, reuse_recv = anyio.create_memory_object_stream[LayerJob](buffer)
        profile_send, profile_recv = anyio.create_memory_object_stream[LayerJob](buffer)
        convert_send, convert_recv = anyio.create_memory_object_stream[LayerJob](buffer)
        upload_send, upload_recv = anyio.create_memory_object_stream[LayerJob](buffer)
        final_send, final_recv = anyio.create_memory_object_stream[ManifestJob](buffer)

        async with anyio.create_task_group() as tg:
            tg.start_soon(self._feed_images, ctx, image_send)
            for _ in range(limits.resolve):
                tg.start_soon(
                    self._resolve_worker,
                    ctx,
                    image_recv.clone(),
                    fetch_send.clone(),
                    final_send.clone(),
                )
            for _ in range(limits.fetch):
                tg.start_soon(
                    self._layer_worker,
                    self._fetch_one,
                    ctx,
                    fetch_recv.clone(),
                    reuse_send.clone(),
                )
            for _ in range(limits.reuse):
                tg.start_soon(
                    self._layer_worker,
                    self._reuse_one,
                    ctx,
                    reuse_recv.clone(),
                    profile_send.clone(),
                )
            for _ in range(limits.profile):
                tg.start_soon(self._profile_worker, ctx, profile_recv.clone(), convert_send.clone())
            for _ in range(limits.convert):
                tg.start_soon(
                    self._layer_worker,
                    self._convert_guarded,
                    ctx,
                    convert_recv.clone(),
                    upload_send.clone(),
                )
            for _ in range(limits.upload):
                tg.start_soon(self._upload_worker, ctx, upload_recv.clone(), final_send.clone())
            for _ in range(limits.finalize):
                tg.start_soon(self._finalize_worker, ctx, final_recv.clone())
            for stream in (
                image_recv,
                fetch_send,
                fetch_recv,
                reuse_send,
                reuse_recv,
                profile_send,
                profile_recv,
                convert_send,
                convert_recv,
                upload_send,
                upload_recv,
                final_send,
                final_recv,
            ):
                stream.close()

    async def _feed_images(self, ctx: RunContext, send: ObjectSendStream[ImageJob]) -> None:
        async with send:
            for settings in self.config.resolved_images():
                job = ImageJob(settings=settings)
                self._images.append(job)
                await send.send(job)

    async def _resolve_worker(
        self,
        ctx: RunContext,
        receive: ObjectReceiveStream[ImageJob],
        layers_out: ObjectSendStream[LayerJob],
        manifests_out: ObjectSendStream[ManifestJob],
    ) -> None:
        async with receive, layers_out, manifests_out:
            async for image in receive:
                await self._guard("resolve", image.name, None, self.stages.resolve(image, ctx))
                ctx.events.publish(
                    ImageResolved(
                        image=image.name,
                        target=image.settings.target,
                        platforms=tuple(m.platform or "" for m in image.manifests),
                        layers=sum(len(m.layers) for m in image.manifests),
                        total_size=sum(
                            layer.source.size for m in image.manifests for layer in m.layers
                        ),
                    )
                )
                for manifest in image.manifests:
                    if not manifest.layers:
                        await manifests_out.send(manifest)
                    for layer in manifest.layers:
                        await layers_out.send(layer)

    async def _layer_worker(
        self,
        step: Callable[[LayerJob, RunContext], Awaitable[None]],
        ctx: RunContext,
        receive: ObjectReceiveStream[LayerJob],
        send: ObjectSendStream[LayerJob],
    ) -> None:
        """Run ``step`` on each layer, then pass the layer on (fetch, reuse, convert)."""
        async with receive, send:
            async for layer in receive:
                await step(layer, ctx)
                await send.send(layer)

    async def _fetch_one(self, layer: LayerJob, ctx: RunContext) -> None:
        digest = layer.source.digest

        async def fetch() -> FetchedBlob:
            return await self.stages.fetch(layer, ctx)

        fetched, shared = await self._guard(
            "fetch", layer.image.name, digest, self._fetches.get(digest, fetch)
        )
        claimed = layer.source.diff_id
        if fetched.diff_id is not None and claimed is not None and fetched.diff_id != claimed:
            error = ImageError(
                f"the uncompressed layer is {fetched.diff_id}, but the config's diff_id is"
                f" {claimed}",
                image=layer.image.name,
                layer=digest,
            )
            raise self._fail("fetch", layer.image.name, digest, error)
        layer.fetched = fetched
        if not shared:
            ctx.events.publish(
                LayerFetched(
                    image=layer.image.name,
                    layer=digest,
                    size=layer.source.size,
                    cached=fetched.cached,
                )
            )

    async def _reuse_one(self, layer: LayerJob, ctx: RunContext) -> None:
        if layer.image.settings.reuse:
            layer.reuse_check = await self._guard(
                "reuse", layer.image.name, layer.source.digest, self.stages.reuse(layer, ctx)
            )

    async def _profile_worker(
        self,
        ctx: RunContext,
        receive: ObjectReceiveStream[LayerJob],
        send: ObjectSendStream[LayerJob],
    ) -> None:
        async with receive, send:
            async for layer in receive:
                manifest = layer.manifest
                manifest._gathered += 1
                if manifest._gathered < len(manifest.layers):
                    continue
                image = manifest.image
                image._profile_waiting.append(manifest)
                while (ready := _next_to_profile(image)) is not None:
                    image._profile_waiting.remove(ready)
                    prioritized = await self._guard(
                        "profile",
                        image.name,
                        None,
                        self.stages.profile(ready, ctx),
                    )
                    ready._profile_done = True
                    for job in ready.layers:
                        job.profiled = job.index in prioritized
                        job.prioritized = tuple(prioritized.get(job.index, ()))
                    for job in ready.layers:
                        await send.send(job)

    async def _convert_guarded(self, layer: LayerJob, ctx: RunContext) -> None:
        await self._guard(
            "convert", layer.image.name, layer.source.digest, self._convert_one(layer, ctx)
        )

    async def _convert_one(self, layer: LayerJob, ctx: RunContext) -> None:
        settings = layer.image.settings
        reusable = layer.reusable_output()
        if reusable is not None:
            layer.output, reason = reusable
            layer.action = "reused"
            ctx.events.publish(
                LayerReused(
                    image=layer.image.name,
                    layer=layer.source.digest,
                    size=layer.source.size,
                    reason=reason,
                )
            )
            return
        key = ConversionKey(
            source_digest=layer.source.digest,
            prioritized=layer.prioritized,
            format=settings.format,
            compression_level=settings.compression_level,
            chunk_size=settings.chunk_size,
        )
        started = time.monotonic()

        async def compute() -> tuple[LayerOutput, bool]:
            shared = ctx.shared_cache
            if ctx.cache is not None:
                cached = await ctx.cache.lookup(key)
                if cached is not None:
                    if shared is not None:
                        await shared.store_output(key, cached)
                    return cached, True
            if shared is None:
                return await convert(), False
            async with shared.claim(key):
                found = await shared.lookup(key, ctx.store, settings.target_ref)
                if found is not None:
                    if ctx.cache is not None and await ctx.store.has(found.digest):
                        await ctx.cache.store_output(key, found)
                    return found, True
                output = await convert()
                await shared.store_output(key, output)
            return output, False

        async def convert() -> LayerOutput:
            output = await self.stages.convert(layer, ctx)
            if ctx.cache is not None:
                await ctx.cache.store_output(key, output)
            return output

        (output, from_cache), shared = await self._conversions.get(key, compute)
        layer.output = output
        layer.action = "cached" if from_cache or shared else "converted"
        ctx.events.publish(
            LayerConverted(
                image=layer.image.name,
                layer=layer.source.digest,
                source_size=layer.source.size,
                digest=output.digest,
                size=output.size,
                toc_digest=output.toc_digest,
                cached=from_cache or shared,
                seconds=time.monotonic() - started,
            )
        )

    async def _upload_worker(
        self,
        ctx: RunContext,
        receive: ObjectReceiveStream[LayerJob],
        send: ObjectSendStream[ManifestJob],
    ) -> None:
        async with receive, send:
            async for layer in receive:
                output = layer.output
                assert output is not None
                key = (layer.image.settings.target, output.digest)

                async def upload(layer: LayerJob = layer) -> PushOutcome:
                    return await self.stages.upload(layer, ctx)

                outcome, shared = await self._guard(
                    "upload",
                    layer.image.name,
                    layer.source.digest,
                    self._uploads.get(key, upload),
                )
                layer.uploaded = True
                ctx.events.publish(
                    LayerUploaded(
                        image=layer.image.name,
                        layer=output.digest,
                        size=output.size,
                        outcome="exists" if shared else outcome,
                    )
                )
                manifest = layer.manifest
                manifest._uploaded += 1
                if manifest._uploaded == len(manifest.layers):
                    await send.send(manifest)

    async def _finalize_worker(
        self, ctx: RunContext, receive: ObjectReceiveStream[ManifestJob]
    ) -> None:
        async with receive:
            async for manifest in receive:
                image = manifest.image
                manifest.pushed = await self._guard(
                    "finalize",
                    image.name,
                    None,
                    self.stages.finalize_manifest(manifest, ctx),
                )
                ctx.events.publish(
                    ImagePushed(
                        image=image.name,
                        target=image.settings.target,
                        digest=manifest.pushed.digest,
                        media_type=manifest.pushed.media_type,
                        platform=manifest.platform,
                    )
                )
                image._finalized += 1
                if image._finalized < len(image.manifests):
                    continue
                image.pushed = await self._guard(
                    "finalize",
                    image.name,
                    None,
                    self.stages.finalize_image(image, ctx),
                )
                layers = [layer for m in image.manifests for layer in m.layers]
                ctx.events.publish(
                    ImageDone(
                        image=image.name,
                        target=image.settings.target,
                        digest=image.pushed.digest,
                        layers_converted=sum(1 for job in layers if job.action == "converted"),
                        layers_reused=sum(1 for job in layers if job.action == "reused"),
                        layers_cached=sum(1 for job in layers if job.action == "cached"),
                    )
                )

    # ------------------------------------------------------------------ results

    def _result(self, seconds: float) -> PipelineResult:
        images = []
        for image in self._images:
            assert image.pushed is not None
            manifests = []
            for manifest in image.manifests:
                assert manifest.pushed is not None
                layers = tuple(
                    LayerSummary(
                        source_digest=layer.source.digest,
                        digest=layer.output.digest,
                        size=layer.output.size,
                        action=layer.action or "converted",
                        toc_digest=layer.output.toc_digest,
                    )
                    for layer in manifest.layers
                    if layer.output is not None
                )
                execution = manifest.execution if image.settings.needs_workload else "not profiled"
                manifests.append(
                    ManifestResult(
                        platform=manifest.platform,
                        digest=manifest.pushed.digest,
                        media_type=manifest.pushed.media_type,
                        layers=layers,
                        execution=execution,
                        emulator=manifest.emulator if execution == "emulated" else None,
                    )
                )
            images.append(
                ImageResult(
                    source=image.settings.source,
                    target=image.settings.target,
                    digest=image.pushed.digest,
                    media_type=image.pushed.media_type,
                    manifests=tuple(manifests),
                )
            )
        return PipelineResult(
            images=tuple(images),
            seconds=seconds,
            layers_fetched=self._fetches.computed,
            layers_converted=self._conversions.computed,
        )


def _next_to_profile(image: ImageJob) -> ManifestJob | None:
    """A gathered manifest of ``image`` whose turn it is in profile-map, or None.

    Manifests that share a layer digest go through profile-map in ``profile_rank``
    order, so that the shared layer's files are chosen once, by the first of them;
    the others do not wait for each other.
    """
    for manifest in sorted(image._profile_waiting, key=lambda job: job.profile_rank):
        digests = {layer.source.digest for layer in manifest.layers}
        if all(
            other._profile_done
            for other in image.manifests
            if other.profile_rank < manifest.profile_rank
            and other is not manifest
            and digests.intersection(layer.source.digest for layer in other.layers)
        ):
            return manifest
    return None
