"""Profile-map stage: prioritized files per layer of a complete manifest.

* ``record_in`` (a record file): the same paths for every layer, missing ones ignored,
  as ``ctr-remote image convert --estargz-record-in`` does;
* ``prefetch_list``: the listed paths and globs, each given to the topmost layer that
  holds it (deleted or shadowed paths dropped), for the host-platform manifest only, as
  ``ctr-remote image optimize --prefetch-list`` does; an empty list is a warning;
* otherwise no prioritized files.

Running the workload (``optimize`` without ``--no-optimize``) needs the profiling
runtime, which is not wired in yet: :func:`profiler_unavailable_reason` says so before a
run starts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import anyio.to_thread

from esgz.errors import ConfigError
from esgz.pipeline.config import ResolvedImage
from esgz.pipeline.events import WarningEvent
from esgz.pipeline.jobs import ManifestJob
from esgz.pipeline.runner import RunContext
from esgz.runtime.layermap import prioritized_by_layer
from esgz.runtime.record import (
    expand_prefetch_list,
    read_prefetch_list,
    read_record_file,
    record_paths,
)
from esgz.stages.layerindex import index_layer_file

__all__ = ["PROFILER_AVAILABLE", "profile_manifest", "profiler_unavailable_reason"]

#: Whether the workload profiler is wired into the pipeline.
PROFILER_AVAILABLE = False


def profiler_unavailable_reason(image: ResolvedImage) -> str | None:
    """Why ``image`` cannot be processed with the stages available, or None."""
    if PROFILER_AVAILABLE:
        return None
    if image.needs_workload:
        return (
            "the workload profiler is not available yet; pass --no-optimize"
            " (no_optimize: true) to convert without running the workload"
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
        return await _from_prefetch_list(manifest, settings.prefetch_list, ctx)
    return {}


async def _from_prefetch_list(
    manifest: ManifestJob, list_file: Path, ctx: RunContext
) -> Mapping[int, Sequence[str]]:
    if not manifest.profile:
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
        assert layer.fetched_path is not None
        indexes.append(await anyio.to_thread.run_sync(index_layer_file, layer.fetched_path))
    names = set().union(*(index.entries for index in indexes))
    paths = expand_prefetch_list(lines, names)
    return dict(enumerate(prioritized_by_layer(paths, indexes)))
