"""Resolve stage: a source reference → the manifests to convert and their layers.

Each image is read once: its root document (one request to a registry), each selected
manifest, and each config (parsed once; the parsed config and its bytes are kept on the
:class:`~esgz.pipeline.jobs.ManifestJob` for profile-map and finalize).
"""

from __future__ import annotations

import os

import anyio.to_thread

from esgz.errors import ImageError, PlatformError
from esgz.oci import mediatypes
from esgz.oci.manifest import Descriptor, ImageConfig, Index, Manifest, parse_manifest_or_index
from esgz.oci.platform import (
    ALL_PLATFORMS,
    OrderedMatcher,
    Platform,
    PlatformMatcher,
    default_strict,
    parse_platforms,
    select_manifests,
)
from esgz.pipeline.config import ResolvedImage
from esgz.pipeline.events import PlatformExecution, WarningEvent
from esgz.pipeline.jobs import ImageJob, LayerInput, ManifestJob, SourceManifest
from esgz.pipeline.runner import RunContext
from esgz.runtime.emulation import PlatformSupport, platform_support, read_binfmt
from esgz.stages.endpoints import Source

__all__ = ["is_attestation", "matcher_for", "resolve_image"]

_REFERENCE_TYPE = "vnd.docker.reference.type"


def is_attestation(entry: Descriptor) -> bool:
    """Whether an index entry is a build attestation (BuildKit), not a runnable image."""
    if entry.annotations.get(_REFERENCE_TYPE) == "attestation-manifest":
        return True
    platform = entry.platform
    return platform is not None and platform.os == "unknown" and platform.architecture == "unknown"


def matcher_for(settings: ResolvedImage) -> PlatformMatcher:
    """``--all-platforms`` → all; ``--platform`` → those, in order; else the host only."""
    if settings.all_platforms:
        return ALL_PLATFORMS
    if settings.platforms:
        return OrderedMatcher(parse_platforms(settings.platforms))
    return default_strict()


async def resolve_image(image: ImageJob, ctx: RunContext, source: Source) -> None:
    """Fill ``image.manifests`` with the selected platform manifests and their layers."""
    settings = image.settings
    descriptor, content = await source.read_root()
    document = parse_manifest_or_index(content, descriptor.media_type)
    host = default_strict()
    if isinstance(document, Index):
        image.source_index = document
        matcher = matcher_for(settings)
        selected = []
        for entry in select_manifests(document, matcher):
            if not mediatypes.is_manifest(entry.media_type):
                continue
            if is_attestation(entry):
                ctx.events.publish(
                    WarningEvent(
                        image=image.name,
                        message=f"skipping attestation manifest {entry.digest} (its subject"
                        " is not converted as-is; it is left out of the output index)",
                    )
                )
                continue
            selected.append(entry)
        if not selected:
            wanted = (
                "any platform"
                if settings.all_platforms
                else (", ".join(settings.platforms) or "the host platform")
            )
            available = ", ".join(str(e.platform) for e in document.manifests if e.platform)
            raise PlatformError(
                f"no manifest for {wanted} (the index has: {available or 'none'})",
                image=image.name,
            )
        for entry in selected:
            body = await source.read_manifest(entry)
            manifest = parse_manifest_or_index(body, entry.media_type)
            if not isinstance(manifest, Manifest):
                raise ImageError(
                    f"index entry {entry.digest} is not an image manifest", image=image.name
                )
            platform = str(entry.platform) if entry.platform is not None else None
            job = await _add_manifest(image, source, entry, manifest, platform)
            job.execution = (
                "native"
                if entry.platform is not None and host.match(entry.platform)
                else "not profiled"
            )
        if settings.needs_workload:
            await _plan_execution(image, ctx, [entry.platform for entry in selected])
        return
    if settings.platforms or settings.all_platforms:
        ctx.events.publish(
            WarningEvent(
                image=image.name,
                message="index not found; treating as a thin image with ignoring the"
                " platform option",
            )
        )
    job = await _add_manifest(image, source, descriptor, document, None)
    job.execution = "native"
    if settings.needs_workload:
        await _plan_execution(image, ctx, [job.source.config.platform], thin=True)


async def _plan_execution(
    image: ImageJob, ctx: RunContext, platforms: list[Platform | None], *, thin: bool = False
) -> None:
    """Decide, per manifest, whether its workload runs natively, emulated or not at all.

    A platform other than the host's is profiled under an enabled binfmt_misc handler
    with the ``F`` flag (unless ``no_emulation``); one that cannot run gets a warning
    naming the missing handler. A single-manifest image whose config names another
    architecture is run emulated, or not at all (with ``no_emulation`` it is run
    as it is, as the reference does). The native manifest is profiled first, then the
    others in index order.
    """
    settings = image.settings
    found_all = await anyio.to_thread.run_sync(_detect, platforms, settings.no_emulation)
    for job, platform, (found, paths) in zip(image.manifests, platforms, found_all, strict=True):
        reason: str | None = None
        if platform is None or not platform.architecture:
            if not thin:
                reason = "the index entry names no platform"
        elif found is not None and (job.execution != "native" or thin):
            if found.mode == "emulated":
                job.execution = "emulated"
                job.emulator = found.handler
                job.emulator_paths = paths
            elif found.mode == "unavailable" and not (thin and settings.no_emulation):
                job.execution = "not profiled"
                job.emulator = found.handler
                reason = found.reason
        job.profile_rank = 0 if job.execution == "native" else 1 + job.index
        ctx.events.publish(
            PlatformExecution(
                image=image.name,
                platform=job.platform,
                execution=job.execution,
                emulator=job.emulator,
                reason=reason,
            )
        )
        if job.execution == "not profiled" and not settings.no_emulation and reason:
            ctx.events.publish(
                WarningEvent(
                    image=image.name,
                    message=f"platform {job.platform} is not profiled (its layers get"
                    f" .no.prefetch.landmark): {reason}",
                )
            )


def _detect(
    platforms: list[Platform | None], no_emulation: bool
) -> list[tuple[PlatformSupport | None, tuple[str, ...]]]:
    """How each platform can run here, and its emulator's files. Blocking.

    binfmt_misc is read once.
    """
    binfmt = None if no_emulation else read_binfmt()
    found: list[tuple[PlatformSupport | None, tuple[str, ...]]] = []
    for platform in platforms:
        if platform is None or not platform.architecture:
            found.append((None, ()))
            continue
        check = platform_support(platform, emulation=not no_emulation, binfmt=binfmt)
        found.append((check, _interpreter_paths(check.interpreter)))
    return found


def _interpreter_paths(interpreter: str | None) -> tuple[str, ...]:
    """An emulator's interpreter and the file it links to, as rootfs paths. Blocking."""
    if not interpreter:
        return ()
    paths = {interpreter, os.path.realpath(interpreter)}
    return tuple(sorted(path.lstrip("/") for path in paths))


async def _add_manifest(
    image: ImageJob,
    source: Source,
    descriptor: Descriptor,
    manifest: Manifest,
    platform: str | None,
) -> ManifestJob:
    config_bytes = await source.read_config(manifest.config.digest)
    config = ImageConfig.parse(config_bytes)
    diff_ids = config.diff_ids
    if len(diff_ids) != len(manifest.layers):
        raise ImageError(
            f"manifest {descriptor.digest} has {len(manifest.layers)} layers but its config"
            f" lists {len(diff_ids)} diff_ids",
            image=image.name,
        )
    if platform is None and config.platform.os:
        platform = str(config.platform)
    job = image.add_manifest(platform, SourceManifest(descriptor, manifest, config))
    for layer, diff_id in zip(manifest.layers, diff_ids, strict=True):
        mediatypes.layer_compression(layer.media_type)  # ImageError for unknown types
        job.add_layer(
            LayerInput(
                digest=layer.digest,
                size=layer.size,
                media_type=layer.media_type,
                annotations=dict(layer.annotations),
                diff_id=diff_id,
            )
        )
    return job
