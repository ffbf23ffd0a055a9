"""Small real stages for runner tests: layers are files, conversion is gzip.

Images live in a dict (``catalog``): source name → platform → list of layer contents.
fetch writes the layer bytes into the run's store, convert gzips them in a worker thread,
upload copies the blob into a target directory, finalize writes a JSON manifest there
(and an index once every manifest of the image is written). Hooks let tests slow a
stage down, make it fail on a given layer, and observe concurrency.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread

from esgz.errors import FormatError
from esgz.oci.manifest import Descriptor, ImageConfig, Index, Manifest
from esgz.pipeline.jobs import (
    FetchedBlob,
    ImageJob,
    LayerInput,
    LayerJob,
    LayerOutput,
    ManifestJob,
    PushedManifest,
    ReuseCheck,
    SourceManifest,
)
from esgz.pipeline.runner import RunContext
from esgz.registry.client import PushOutcome


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def toy_source(platform: str, layers: Sequence[bytes]) -> SourceManifest:
    """A source manifest record for toy layers (the toy stages never read it back)."""
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": []}}).encode()
    descriptors = tuple(Descriptor("tar", digest_of(data), len(data)) for data in layers)
    manifest = Manifest("toy-manifest", Descriptor("toy-config", digest_of(config), 0), descriptors)
    own = Descriptor("toy-manifest", digest_of(platform.encode()), 0)
    return SourceManifest(own, manifest, ImageConfig.parse(config))


@dataclass
class Tracker:
    """Counts calls and the most calls of a stage running at once."""

    active: Counter[str] = field(default_factory=Counter)
    peak: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    order: list[tuple[str, str]] = field(default_factory=list)

    def enter(self, stage: str, what: str) -> None:
        self.active[stage] += 1
        self.calls[stage] += 1
        self.peak[stage] = max(self.peak[stage], self.active[stage])
        self.order.append((stage, what))

    def leave(self, stage: str) -> None:
        self.active[stage] -= 1


@dataclass
class ToyStages:
    """A complete Stages implementation over in-memory images and a target directory."""

    catalog: Mapping[str, Mapping[str, Sequence[bytes]]]
    target_root: Path
    delays: Mapping[str, float] = field(default_factory=dict)
    fail_at: tuple[str, str] | None = None  # (stage, layer digest)
    error: type[Exception] = FormatError  # what fail_at raises
    prioritized: Mapping[int, Sequence[str]] | None = None  # what profile returns
    tracker: Tracker = field(default_factory=Tracker)
    block: anyio.Event | None = None  # convert waits on this when set
    converting: anyio.Event = field(default_factory=anyio.Event)

    async def _step(self, stage: str, what: str) -> None:
        self.tracker.enter(stage, what)
        try:
            await anyio.sleep(self.delays.get(stage, 0))
            if self.fail_at == (stage, what):
                raise self.error(f"broken layer in {stage}")
        finally:
            self.tracker.leave(stage)

    async def resolve(self, image: ImageJob, ctx: RunContext) -> None:
        await self._step("resolve", image.name)
        platforms = self.catalog[image.name]
        if len(platforms) > 1:
            image.source_index = Index("toy-index", ())
        for platform, layers in platforms.items():
            manifest = image.add_manifest(platform, toy_source(platform, layers))
            for data in layers:
                manifest.add_layer(LayerInput(digest_of(data), len(data), "tar"))

    async def fetch(self, layer: LayerJob, ctx: RunContext) -> FetchedBlob:
        self.tracker.enter("fetch", layer.source.digest)
        try:
            await anyio.sleep(self.delays.get("fetch", 0))
            if self.fail_at == ("fetch", layer.source.digest):
                raise self.error("broken layer in fetch")
            data = next(
                d
                for platforms in self.catalog.values()
                for layers in platforms.values()
                for d in layers
                if digest_of(d) == layer.source.digest
            )
            async with ctx.store.blobs.ingest(layer.source.digest, len(data)) as blob:
                await blob.write(data)
            ctx.store.mark_used(layer.source.digest)
            return FetchedBlob(ctx.store.blob_path(layer.source.digest), cached=False)
        finally:
            self.tracker.leave("fetch")

    async def reuse(self, layer: LayerJob, ctx: RunContext) -> ReuseCheck:
        await self._step("reuse", layer.source.digest)
        head = await anyio.Path(layer.fetched_path).read_bytes()
        if head[:2] == b"\x1f\x8b":
            output = LayerOutput(
                path=layer.fetched_path,
                digest=layer.source.digest,
                size=layer.source.size,
                diff_id=layer.source.digest,
                format="estargz",
            )
            return ReuseCheck("already gzip", output)
        return ReuseCheck("not gzip")

    async def profile(self, manifest: ManifestJob, ctx: RunContext) -> Mapping[int, Sequence[str]]:
        await self._step("profile", manifest.image.name)
        assert all(layer.fetched is not None for layer in manifest.layers)
        return self.prioritized if self.prioritized is not None else {}

    async def convert(self, layer: LayerJob, ctx: RunContext) -> LayerOutput:
        self.tracker.enter("convert", layer.source.digest)
        try:
            self.converting.set()
            if self.block is not None:
                await self.block.wait()
            await anyio.sleep(self.delays.get("convert", 0))
            if self.fail_at == ("convert", layer.source.digest):
                raise self.error("broken layer in convert")
            source = layer.fetched_path
            temp = ctx.store.temp_path("convert")

            def compress() -> str:
                data = source.read_bytes()
                packed = gzip.compress(data, mtime=0)
                temp.write_bytes(packed)
                return digest_of(packed)

            digest = await anyio.to_thread.run_sync(compress)
            path = await ctx.store.move_in(temp, digest)
            size = (await anyio.Path(path).stat()).st_size
            return LayerOutput(
                path=path,
                digest=digest,
                size=size,
                diff_id=layer.source.digest,
                format="estargz",
            )
        finally:
            self.tracker.leave("convert")

    def _target_dir(self, image: ImageJob) -> Path:
        return self.target_root / image.settings.target.removeprefix("local://").strip("/")

    async def upload(self, layer: LayerJob, ctx: RunContext) -> PushOutcome:
        await self._step("upload", layer.source.digest)
        assert layer.output is not None
        blobs = self._target_dir(layer.image) / "blobs"
        await anyio.Path(blobs).mkdir(parents=True, exist_ok=True)
        target = blobs / layer.output.digest.replace(":", "-")
        if await anyio.Path(target).exists():
            return "exists"
        await anyio.to_thread.run_sync(shutil.copyfile, layer.output.path, target)
        return "uploaded"

    async def finalize_manifest(self, manifest: ManifestJob, ctx: RunContext) -> PushedManifest:
        await self._step("finalize", manifest.platform or "")
        for layer in manifest.layers:
            assert layer.uploaded, "finalize before all layers were uploaded"
        body = json.dumps(
            {
                "platform": manifest.platform,
                "layers": [layer.output.digest for layer in manifest.layers if layer.output],
            }
        ).encode()
        digest = digest_of(body)
        directory = self._target_dir(manifest.image)
        await anyio.Path(directory).mkdir(parents=True, exist_ok=True)
        await anyio.Path(directory / f"manifest-{manifest.index}.json").write_bytes(body)
        return PushedManifest(digest, len(body), "toy-manifest")

    async def finalize_image(self, image: ImageJob, ctx: RunContext) -> PushedManifest:
        for manifest in image.manifests:
            assert manifest.pushed is not None
        body = json.dumps([m.pushed.digest for m in image.manifests if m.pushed]).encode()
        await anyio.Path(self._target_dir(image) / "index.json").write_bytes(body)
        return PushedManifest(digest_of(body), len(body), "toy-index")
