"""The work items that flow through the pipeline.

An :class:`ImageJob` is one configured image. Resolving it yields one
:class:`ManifestJob` per selected platform, each holding a :class:`LayerJob` per layer.
Layer jobs travel through the stages one by one; the runner fills in what each stage
found (fetched path, reuse decision, prioritized files, output) and joins them again per
manifest before finalize.

``source_*`` slots typed ``object`` hold the image model of the image-I/O layer (manifest,
config, index); only the stages look inside them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from esgz.pipeline.config import ResolvedImage

__all__ = [
    "ImageJob",
    "LayerAction",
    "LayerJob",
    "LayerOutput",
    "LayerSource",
    "ManifestJob",
    "PushedManifest",
    "ReuseDecision",
    "UploadOutcome",
]

#: What happened to a layer: converted now, taken from the cache, or passed through.
LayerAction = Literal["converted", "cached", "reused"]

#: How a blob got to the target: already there, mounted from another repository, sent.
UploadOutcome = Literal["exists", "mounted", "uploaded"]


@dataclass(frozen=True, slots=True)
class LayerSource:
    """The source layer's descriptor."""

    digest: str
    size: int
    media_type: str
    annotations: Mapping[str, str] = field(default_factory=dict)
    diff_id: str | None = None


@dataclass(frozen=True, slots=True)
class LayerOutput:
    """An output layer blob on local disk and the facts its descriptor needs."""

    path: Path
    digest: str
    size: int
    diff_id: str
    format: str
    annotations: Mapping[str, str] = field(default_factory=dict)
    toc_digest: str | None = None
    uncompressed_size: int | None = None


@dataclass(frozen=True, slots=True)
class ReuseDecision:
    """Whether a layer may pass through unchanged; ``output`` describes it if so."""

    reusable: bool
    reason: str
    output: LayerOutput | None = None


@dataclass(frozen=True, slots=True)
class PushedManifest:
    """A manifest or index written to the target (``content``: its bytes, if kept)."""

    digest: str
    size: int
    media_type: str
    content: bytes = b""


@dataclass(eq=False)
class LayerJob:
    """One layer of one manifest on its way through the stages."""

    manifest: ManifestJob
    index: int
    source: LayerSource
    fetched_path: Path | None = None
    reuse: ReuseDecision | None = None
    prioritized: tuple[str, ...] = ()
    output: LayerOutput | None = None
    action: LayerAction | None = None
    uploaded: bool = False

    @property
    def image(self) -> ImageJob:
        """The image this layer belongs to."""
        return self.manifest.image


@dataclass(eq=False)
class ManifestJob:
    """One platform manifest of an image; finalized once all its layers are uploaded."""

    image: ImageJob
    index: int
    platform: str | None
    source_digest: str | None = None
    source_manifest: object = None
    source_config: object = None
    layers: list[LayerJob] = field(default_factory=list)
    profile: bool = False
    pushed: PushedManifest | None = None
    _gathered: int = 0
    _uploaded: int = 0

    def add_layer(self, source: LayerSource) -> LayerJob:
        """Append a layer job for ``source``."""
        job = LayerJob(manifest=self, index=len(self.layers), source=source)
        self.layers.append(job)
        return job


@dataclass(eq=False)
class ImageJob:
    """One configured image: its settings, its manifests and, at the end, its result."""

    settings: ResolvedImage
    manifests: list[ManifestJob] = field(default_factory=list)
    source_index: object = None
    is_index: bool = False
    pushed: PushedManifest | None = None
    _finalized: int = 0

    @property
    def name(self) -> str:
        """The source reference as configured (used in events and errors)."""
        return self.settings.source

    def add_manifest(self, platform: str | None) -> ManifestJob:
        """Append a manifest job for ``platform``."""
        job = ManifestJob(image=self, index=len(self.manifests), platform=platform)
        self.manifests.append(job)
        return job
