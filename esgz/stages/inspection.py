"""Look into an image: its layers' formats, TOC digests, prioritized files; verify them.

Used by ``esgz inspect`` and ``esgz verify``. Layer blobs are fetched into the blob cache
(verified against their digests) and read with :mod:`esgz.estargz.reader`; the reports
are plain data for the caller to render.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread

from esgz.errors import EsgzError, FormatError, ImageError
from esgz.estargz.constants import TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION
from esgz.estargz.reader import open_layer, sniff_layer_format
from esgz.oci import mediatypes
from esgz.oci.manifest import Descriptor, ImageConfig, Index, Manifest, parse_manifest_or_index
from esgz.oci.platform import (
    ALL_PLATFORMS,
    OrderedMatcher,
    PlatformMatcher,
    parse_platforms,
    select_manifests,
)
from esgz.oci.reference import LayoutReference, RegistryReference
from esgz.pipeline.cache import LocalStore, open_local_store
from esgz.registry.options import RegistryOptions
from esgz.stages.endpoints import Source, open_endpoints
from esgz.stages.fetch import pull_into_store
from esgz.stages.resolve import is_attestation

__all__ = ["ImageReport", "LayerReport", "ManifestReport", "inspect_image"]


@dataclass
class LayerReport:
    """One layer as found (``problems`` empty when it verified, or was not verified)."""

    index: int
    digest: str
    media_type: str
    size: int
    diff_id: str | None
    format: str
    toc_digest: str | None = None
    annotated_toc_digest: str | None = None
    uncompressed_size: int | None = None
    landmark: str | None = None
    prioritized: list[str] = field(default_factory=list)
    entries: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class ManifestReport:
    """One platform manifest and its layers."""

    platform: str | None
    digest: str
    media_type: str
    layers: list[LayerReport]


@dataclass
class ImageReport:
    """An image (index or single manifest)."""

    reference: str
    digest: str
    media_type: str
    manifests: list[ManifestReport]

    @property
    def problems(self) -> list[str]:
        """Every problem, prefixed with where it was found."""
        return [
            f"{manifest.platform or 'manifest'} layer {layer.index} ({layer.digest}): {problem}"
            for manifest in self.manifests
            for layer in manifest.layers
            for problem in layer.problems
        ]


def _compressed_format(media_type: str) -> str:
    try:
        return mediatypes.layer_compression(media_type)
    except ImageError:
        return "unknown"


def _examine(path: Path, layer: LayerReport, verify: bool) -> None:
    """Fill ``layer`` from the blob at ``path`` (blocking)."""
    sniffed = sniff_layer_format(path)
    if sniffed is None:
        layer.format = _compressed_format(layer.media_type)
        if verify:
            layer.problems.append(f"not an eStargz or zstd:chunked layer ({layer.format})")
        return
    layer.format = str(sniffed)
    try:
        with open_layer(path) as reader:
            layer.toc_digest = reader.toc_digest
            layer.entries = len(reader.entries())
            landmark = reader.prefetch_landmark()
            layer.landmark = landmark.name if landmark is not None else None
            layer.prioritized = reader.prioritized_names()
            if verify:
                if layer.annotated_toc_digest is None:
                    layer.problems.append(
                        f"no {TOC_DIGEST_ANNOTATION} annotation (the snapshotter needs it)"
                    )
                reader.verify(layer.annotated_toc_digest, check_data=True)
                diff_id, size = reader.uncompressed_digest()
                if layer.diff_id is not None and diff_id != layer.diff_id:
                    layer.problems.append(
                        f"uncompressed digest {diff_id} does not match the config's diff_id"
                        f" {layer.diff_id}"
                    )
                if layer.uncompressed_size is not None and size != layer.uncompressed_size:
                    layer.problems.append(
                        f"uncompressed size {size} does not match the annotation"
                        f" {layer.uncompressed_size}"
                    )
    except FormatError as exc:
        if not verify:
            raise
        layer.problems.append(exc.message)


async def _manifest_report(
    source: Source,
    descriptor: Descriptor,
    manifest: Manifest,
    platform: str | None,
    store: LocalStore,
    verify: bool,
) -> ManifestReport:
    config = ImageConfig.parse(await source.read_config(manifest.config.digest))
    diff_ids = config.diff_ids
    layers = []
    for index, layer in enumerate(manifest.layers):
        size_text = layer.annotations.get(UNCOMPRESSED_SIZE_ANNOTATION)
        report = LayerReport(
            index=index,
            digest=layer.digest,
            media_type=layer.media_type,
            size=layer.size,
            diff_id=diff_ids[index] if index < len(diff_ids) else None,
            format="",
            annotated_toc_digest=layer.annotations.get(TOC_DIGEST_ANNOTATION),
            uncompressed_size=int(size_text) if size_text and size_text.isdigit() else None,
        )
        path, _ = await pull_into_store(store, source, layer.digest, layer.size)
        await anyio.to_thread.run_sync(_examine, path, report, verify)
        layers.append(report)
    if len(diff_ids) != len(manifest.layers):
        raise ImageError(
            f"manifest {descriptor.digest} has {len(manifest.layers)} layers but its config"
            f" lists {len(diff_ids)} diff_ids"
        )
    return ManifestReport(platform, descriptor.digest, descriptor.media_type, layers)


async def _manifest_reports(
    source: Source,
    matcher: PlatformMatcher,
    store: LocalStore,
    verify: bool,
) -> tuple[Descriptor, list[ManifestReport]]:
    """The image's descriptor and a report per selected manifest."""
    descriptor, content = await source.read_root()
    document = parse_manifest_or_index(content, descriptor.media_type)
    if not isinstance(document, Index):
        report = await _manifest_report(source, descriptor, document, None, store, verify)
        return descriptor, [report]
    manifests: list[ManifestReport] = []
    for entry in select_manifests(document, matcher):
        if not mediatypes.is_manifest(entry.media_type) or is_attestation(entry):
            continue
        body = await source.read_manifest(entry)
        manifest = parse_manifest_or_index(body, entry.media_type)
        if not isinstance(manifest, Manifest):
            raise ImageError(f"index entry {entry.digest} is not an image manifest")
        platform = str(entry.platform) if entry.platform else None
        manifests.append(await _manifest_report(source, entry, manifest, platform, store, verify))
    return descriptor, manifests


async def inspect_image(
    reference: RegistryReference | LayoutReference,
    *,
    platforms: Sequence[str] = (),
    verify: bool = False,
    cache_dir: Path | None = None,
    registries: dict[str, RegistryOptions] | None = None,
) -> ImageReport:
    """Report on every layer of ``reference`` (all platforms unless ``platforms``).

    With ``verify`` each eStargz / zstd:chunked layer is fully checked (TOC digest
    against the annotation, every chunk, diff_id against the config) and anything else
    is reported as a problem instead of raised.
    """
    matcher: PlatformMatcher = (
        OrderedMatcher(parse_platforms(platforms)) if platforms else ALL_PLATFORMS
    )
    async with open_local_store(cache_dir) as store:
        try:
            async with open_endpoints(registries or {}) as endpoints:
                descriptor, manifests = await _manifest_reports(
                    endpoints.source(reference), matcher, store, verify
                )
        except EsgzError as exc:
            if exc.image is None:
                exc.image = str(reference)
            raise
    return ImageReport(str(reference), descriptor.digest, descriptor.media_type, manifests)
