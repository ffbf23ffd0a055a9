"""Profile-map stage: prioritized files per layer of a complete manifest.

* ``record_in`` (a record file): the same paths for every layer, missing ones ignored,
  as ``ctr-remote image convert --estargz-record-in`` does;
* ``prefetch_list``: the listed paths and globs, each given to the topmost layer that
  holds it (deleted or shadowed paths dropped), for the native manifest only, as
  ``ctr-remote image optimize --prefetch-list`` does; an empty list is a warning;
* otherwise, for an image whose workload runs (``optimize`` without ``no_optimize``) and
  a manifest that can run here — natively, or under a binfmt_misc emulator
  (``ManifestJob.execution``, decided by resolve): the workload runs once in a container
  (:func:`esgz.runtime.profile.profile_workload`) and each layer gets the files it
  served, in access order; its output lines are published as
  :class:`~esgz.pipeline.events.WorkloadOutput` events, the summary as
  :class:`~esgz.pipeline.events.ImageProfiled`, and ``record_out`` receives the records
  of every manifest profiled so far. Other manifests get no prioritized files
  (``.no.prefetch.landmark``).

A layer shared by several manifests of the image (same digest) gets one prioritization:
the files of the first manifest that chose some for it, in ``profile_rank`` order (the
native platform first, then index order), see :func:`share_layer_files`.

Every layer of a manifest this stage chose files for is marked ``profiled``; with
``reuse`` the runner passes a valid eStargz / zstd:chunked layer through only if it has
no prioritized files (:meth:`~esgz.pipeline.jobs.LayerJob.reusable_output`).

The workload's layers are unpacked into a cache keyed by their blob digests, which the
fetch stage verified (never by the config's diff_ids, which nothing has checked yet).

:func:`profiler_unavailable_reason` says, before a run starts, why this host cannot run a
workload (not root, no ``runc``).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import anyio.to_thread

from esgz.errors import ConfigError
from esgz.pipeline.config import ResolvedImage
from esgz.pipeline.events import (
    PROFILE_TICK,
    ImageProfiled,
    ProfileProgress,
    WarningEvent,
    WorkloadOutput,
    publish_progress_while,
)
from esgz.pipeline.jobs import ManifestJob
from esgz.pipeline.runner import RunContext
from esgz.runtime.layermap import prioritized_by_layer
from esgz.runtime.profile import CNI_NEEDS_ROOT, ProfileResult, profile_workload
from esgz.runtime.record import (
    expand_prefetch_list,
    read_prefetch_list,
    read_record_file,
    record_paths,
    write_record_file,
)
from esgz.runtime.unpack import LayerFile
from esgz.runtime.userns import choose_mode, rootless_unavailable_reason
from esgz.stages.layerindex import index_layer_file

__all__ = [
    "OCI_RUNTIME",
    "profile_manifest",
    "profiler_unavailable_reason",
    "share_layer_files",
]

#: The OCI runtime binary the workload runs with.
OCI_RUNTIME = "runc"


def profiler_unavailable_reason(image: ResolvedImage) -> str | None:
    """Why the workload of ``image`` cannot run on this host, or None. Blocking."""
    if not image.needs_workload:
        return None
    if choose_mode(True if image.workload.rootless else None) == "rootless":
        reason = rootless_unavailable_reason()
        if reason is not None:
            return f"{reason}; or pass --no-optimize"
        if image.workload.cni and not image.workload.net_host:
            return CNI_NEEDS_ROOT
    if shutil.which(OCI_RUNTIME) is None:
        return (
            f"running the workload needs the OCI runtime {OCI_RUNTIME!r}, which is not in"
            " PATH (apt-get install runc); or pass --no-optimize"
        )
    return None


async def profile_manifest(manifest: ManifestJob, ctx: RunContext) -> Mapping[int, Sequence[str]]:
    """Prioritized paths per layer index (empty: none)."""
    settings = manifest.image.settings
    if settings.record_in is not None:
        try:
            entries = await anyio.to_thread.run_sync(read_record_file, settings.record_in)
        except OSError as exc:
            raise ConfigError(
                f"cannot read record file {settings.record_in}: {exc.strerror}"
            ) from None
        paths = record_paths(entries)
        return {layer.index: paths for layer in manifest.layers}
    if settings.prefetch_list is not None:
        listed = await _from_prefetch_list(manifest, settings.prefetch_list, ctx)
        return share_layer_files(manifest, listed)[0]
    if settings.needs_workload and manifest.profile:
        return await _from_workload(manifest, ctx)
    if settings.needs_workload and not any(job.profile for job in manifest.image.manifests):
        _warn_no_host_manifest(manifest, ctx)
    return share_layer_files(manifest, {})[0]


def share_layer_files(
    manifest: ManifestJob, chosen: Mapping[int, Sequence[str]]
) -> tuple[dict[int, Sequence[str]], tuple[tuple[int, str], ...]]:
    """One prioritization per layer digest across the image's manifests.

    A layer whose digest an earlier manifest of the image (the native platform first,
    then index order: :attr:`~esgz.pipeline.jobs.ManifestJob.profile_rank`) prioritized
    gets that manifest's files; otherwise ``chosen`` stands and is remembered for later
    manifests. Returns the files per layer index and, for each layer that took another
    platform's files, (index, that platform).
    """
    shared = manifest.image.shared_prioritized
    result: dict[int, Sequence[str]] = {}
    taken: list[tuple[int, str]] = []
    for layer in manifest.layers:
        digest = layer.source.digest
        owner = shared.get(digest)
        if owner is not None and owner[0] != manifest.index:
            result[layer.index] = owner[2]
            taken.append((layer.index, owner[1] or "?"))
        elif layer.index in chosen:
            files = tuple(chosen[layer.index])
            result[layer.index] = files
            if owner is None:
                shared[digest] = (manifest.index, manifest.platform, files)
    return result, tuple(taken)


def _warn_no_host_manifest(manifest: ManifestJob, ctx: RunContext) -> None:
    """Once per image (on its first manifest): no manifest the workload could run on."""
    if manifest.index != 0:
        return
    settings = manifest.image.settings
    unwritten = " (record_out not written)" if settings.record_out is not None else ""
    ctx.events.publish(
        WarningEvent(
            image=manifest.image.name,
            message="Platform mismatch or optimization disabled; converting without"
            f" optimization: no manifest for the host platform{unwritten}",
        )
    )


async def _from_prefetch_list(
    manifest: ManifestJob, list_file: Path, ctx: RunContext
) -> Mapping[int, Sequence[str]]:
    if manifest.execution != "native":
        return {}
    try:
        lines = await anyio.to_thread.run_sync(read_prefetch_list, list_file)
    except OSError as exc:
        raise ConfigError(f"cannot read prefetch list {list_file}: {exc.strerror}") from None
    if not lines:
        ctx.events.publish(
            WarningEvent(image=manifest.image.name, message="prefetch list is empty")
        )
        return {}
    indexes = []
    for layer in manifest.layers:
        indexes.append(
            await anyio.to_thread.run_sync(
                index_layer_file, layer.fetched_path, layer.source.digest
            )
        )
    names = set().union(*(index.entries for index in indexes))
    paths = expand_prefetch_list(lines, names)
    return dict(enumerate(prioritized_by_layer(paths, indexes)))


async def _from_workload(manifest: ManifestJob, ctx: RunContext) -> Mapping[int, Sequence[str]]:
    """Run the image's workload once; each layer's files in access order.

    Root and ``runc`` were checked before the run started (``open_default_stages``).
    """
    image = manifest.image
    settings = image.settings
    layers = []
    for job in manifest.layers:
        layers.append(LayerFile(job.source.digest, job.fetched_path))

    def on_output(stream: str, line: str) -> None:
        ctx.events.publish(WorkloadOutput(image=image.name, stream=stream, line=line))

    workload = settings.workload_options()
    started = time.monotonic()

    def clock() -> ProfileProgress:
        elapsed = round(time.monotonic() - started, 1)
        return ProfileProgress(
            image=image.name, platform=manifest.platform, elapsed=elapsed, period=workload.period
        )

    ctx.events.publish(clock())
    result = await publish_progress_while(
        ctx.events,
        lambda: profile_workload(
            layers,
            manifest.source.config.raw,
            workload,
            work_dir=ctx.store.scratch / "profile",
            on_output=on_output,
            runtime=OCI_RUNTIME,
            ignore_paths=manifest.emulator_paths,
        ),
        clock,
        PROFILE_TICK,
    )
    seconds = time.monotonic() - started
    prioritized, shared_from = share_layer_files(manifest, dict(enumerate(result.prioritized)))
    _publish_summary(manifest, result, prioritized, shared_from, seconds, ctx)
    if settings.record_out is not None:
        image.recorded.extend(result.records(manifest.source_digest))
        entries = list(image.recorded)
        await anyio.to_thread.run_sync(write_record_file, settings.record_out, entries)
    return prioritized


def _stopped_by(result: ProfileResult) -> str | None:
    if result.period_expired:
        return "period"
    if result.stopped_on_line:
        return "line"
    if result.stopped_on_signal:
        return "signal"
    return None


def _publish_summary(
    manifest: ManifestJob,
    result: ProfileResult,
    prioritized: Mapping[int, Sequence[str]],
    shared_from: tuple[tuple[int, str], ...],
    seconds: float,
    ctx: RunContext,
) -> None:
    name = manifest.image.name
    if result.overflowed:
        ctx.events.publish(
            WarningEvent(
                image=name,
                message="the fanotify queue overflowed: some file accesses were not recorded",
            )
        )
    ctx.events.publish(
        ImageProfiled(
            image=name,
            platform=manifest.platform,
            exit_status=result.exit_status,
            stopped=_stopped_by(result),
            accessed=len(result.accessed_paths),
            prioritized=tuple(
                len(prioritized.get(index, ())) for index in range(len(manifest.layers))
            ),
            seconds=seconds,
            mode=result.mode,
            execution="emulated" if manifest.execution == "emulated" else "native",
            emulator=manifest.emulator if manifest.execution == "emulated" else None,
            shared_from=shared_from,
        )
    )
