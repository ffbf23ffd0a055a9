"""The work items that flow through the pipeline, and the typed state the stages fill in.

An :class:`ImageJob` is one configured image. Resolving it yields one
:class:`ManifestJob` per selected platform, each holding a :class:`LayerJob` per layer.
Layer jobs travel through the stages one by one; each stage fills in its own slot
(``fetched``, ``reuse_check``, ``prioritized``, ``output`` and ``action``, ``uploaded``)
and the runner joins them again per manifest before finalize.

What resolve read from the source is kept parsed, once: :class:`SourceImage` (the
index, if any) on the image and :class:`SourceManifest` (its descriptor, manifest and
config) on each manifest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from esgz.levels import LayerFormat
from esgz.oci.manifest import Descriptor, ImageConfig, Index, Manifest
from esgz.oci.reference import RegistryReference
from esgz.pipeline.config import ResolvedImage
from esgz.pipeline.results import LayerAction

if TYPE_CHECKING:
    from esgz.estargz.convert import PendingPreparation
    from esgz.pipeline.events import ProfileExecution
    from esgz.runtime.record import RecordEntry

__all__ = [
    "FetchedBlob",
    "ImageJob",
    "LayerInput",
    "LayerJob",
    "LayerOutput",
    "ManifestJob",
    "PushedManifest",
    "ReuseCheck",
    "SourceManifest",
]


@dataclass(frozen=True, slots=True)
class LayerInput:
    """A source layer as its manifest and config describe it (not yet verified).

    ``diff_id`` is the config's claim for the layer's uncompressed digest.
    """

    digest: str
    size: int
    media_type: str
    annotations: Mapping[str, str] = field(default_factory=dict)
    diff_id: str | None = None


@dataclass(frozen=True, slots=True)
class FetchedBlob:
    """A source layer blob in the local store, verified against its digest.

    ``diff_id`` is the digest of its uncompressed stream as hashed (None if the stages
    do not hash it); the runner checks the config's claim against it. ``cached``: the
    blob was in the store already.
    """

    path: Path
    cached: bool
    diff_id: str | None = None


@dataclass(frozen=True, slots=True)
class LayerOutput:
    """An output layer blob in the local store and the facts its descriptor needs."""

    path: Path
    digest: str
    size: int
    diff_id: str
    format: LayerFormat
    annotations: Mapping[str, str] = field(default_factory=dict)
    toc_digest: str | None = None
    uncompressed_size: int | None = None
    #: A registry repository that holds the blob (a registry conversion cache): a target
    #: on the same registry mounts it from there, and ``path`` may then not exist locally.
    mount_from: RegistryReference | None = None


@dataclass(frozen=True, slots=True)
class ReuseCheck:
    """What the reuse-check stage found: ``output`` describes the layer as it is, if valid.

    Only a finding: whether the layer is actually passed through is decided once, by
    the runner, when the prioritized files are known (:meth:`LayerJob.reusable_output`).
    """

    reason: str
    output: LayerOutput | None = None


@dataclass(frozen=True, slots=True)
class PushedManifest:
    """A manifest or index written to the target (``content``: its bytes)."""

    digest: str
    size: int
    media_type: str
    content: bytes = b""


@dataclass(frozen=True, slots=True)
class SourceManifest:
    """One source manifest as resolve read it: index entry (or own descriptor), body, config.

    ``config`` is parsed once and keeps its bytes, which finalize rewrites
    (``rootfs.diff_ids``) in place of the original text.
    """

    descriptor: Descriptor
    manifest: Manifest
    config: ImageConfig


@dataclass(eq=False)
class LayerJob:
    """One layer of one manifest on its way through the stages."""

    manifest: ManifestJob
    index: int
    source: LayerInput
    fetched: FetchedBlob | None = None
    reuse_check: ReuseCheck | None = None
    #: Whether profile-map chose this layer's files (a workload, a list or a record ran).
    profiled: bool = False
    prioritized: tuple[str, ...] = ()
    output: LayerOutput | None = None
    action: LayerAction | None = None
    uploaded: bool = False
    #: Members being compressed while the workload runs (started by profile-map), for
    #: convert to finish in the prioritized order.
    preparation: PendingPreparation | None = None

    @property
    def image(self) -> ImageJob:
        """The image this layer belongs to."""
        return self.manifest.image

    @property
    def fetched_path(self) -> Path:
        """The fetched blob's path; only valid after the fetch stage."""
        assert self.fetched is not None, "layer not fetched yet"
        return self.fetched.path

    @property
    def diff_id(self) -> str | None:
        """The layer's uncompressed digest: as hashed at fetch, else the config's claim."""
        if self.fetched is not None and self.fetched.diff_id is not None:
            return self.fetched.diff_id
        return self.source.diff_id

    def reusable_output(self) -> tuple[LayerOutput, str] | None:
        """The layer as it is and why, if it passes through unchanged; else None.

        A layer passes through iff the image allows reuse, the reuse-check found it a
        valid eStargz / zstd:chunked blob, and it has no prioritized files (a layer the
        workload read is rebuilt with them).
        """
        check = self.reuse_check
        if not self.image.settings.reuse or check is None or check.output is None:
            return None
        if self.prioritized:
            return None
        if self.profiled:
            return check.output, f"{NO_ACCESS_REASON}; {check.reason}"
        return check.output, check.reason


#: The reference's log line for a reusable layer the profile did not touch.
NO_ACCESS_REASON = "no access occur; copying without conversion"


@dataclass(eq=False)
class ManifestJob:
    """One platform manifest of an image; finalized once all its layers are uploaded."""

    image: ImageJob
    index: int
    platform: str | None
    source: SourceManifest
    layers: list[LayerJob] = field(default_factory=list)
    #: How the workload runs on this manifest (set by resolve when the workload runs):
    #: ``native``, ``emulated`` (by the binfmt_misc handler :attr:`emulator`) or
    #: ``not profiled``.
    execution: ProfileExecution = "not profiled"
    #: The binfmt_misc handler that runs the workload (``emulated``), or that would be
    #: needed (``not profiled``); None when native or unknown.
    emulator: str | None = None
    #: The emulator's interpreter (and the file it links to) as rootfs paths
    #: (``emulated``): never recorded as workload accesses.
    emulator_paths: tuple[str, ...] = ()
    #: Profile-map order within the image: the native manifest first, then the others in
    #: index order; a layer shared by several manifests keeps the files of the first.
    profile_rank: int = 0
    pushed: PushedManifest | None = None
    _gathered: int = 0
    _uploaded: int = 0
    _profile_done: bool = False

    @property
    def profile(self) -> bool:
        """Whether the workload runs on this manifest (natively or emulated)."""
        return self.execution != "not profiled"

    @property
    def source_digest(self) -> str:
        """The digest of the source manifest."""
        return self.source.descriptor.digest

    def add_layer(self, source: LayerInput) -> LayerJob:
        """Append a layer job for ``source``."""
        job = LayerJob(manifest=self, index=len(self.layers), source=source)
        self.layers.append(job)
        return job


@dataclass(eq=False)
class ImageJob:
    """One configured image: its settings, its manifests and, at the end, its result.

    ``source_index`` is the source's index, or None for a single-manifest image (whose
    one manifest is then what gets tagged).
    """

    settings: ResolvedImage
    manifests: list[ManifestJob] = field(default_factory=list)
    source_index: Index | None = None
    pushed: PushedManifest | None = None
    #: Layer digest → (manifest index, platform, files) of the manifest whose profile
    #: prioritized that layer first: every manifest sharing the layer uses those files.
    shared_prioritized: dict[str, tuple[int, str | None, tuple[str, ...]]] = field(
        default_factory=dict
    )
    #: The record entries of the manifests profiled so far (``record_out`` gets them all).
    recorded: list[RecordEntry] = field(default_factory=list)
    _finalized: int = 0
    _profile_waiting: list[ManifestJob] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The source reference as configured (used in events and errors)."""
        return self.settings.source

    @property
    def is_index(self) -> bool:
        """Whether the source (and so the output) is an index."""
        return self.source_index is not None

    def add_manifest(self, platform: str | None, source: SourceManifest) -> ManifestJob:
        """Append a manifest job for ``platform`` read from ``source``."""
        job = ManifestJob(image=self, index=len(self.manifests), platform=platform, source=source)
        self.manifests.append(job)
        return job
