"""Profile-map stage: prioritized files per layer of a complete manifest.

Today this stage applies saved profiles only: ``record_in`` (a record file) prioritizes
the same paths in every layer, as ``ctr-remote image convert --estargz-record-in`` does;
otherwise layers get no prioritized files. Running the workload (``optimize`` without
``--no-optimize``) and ``--prefetch-list`` need the profiling runtime, which is not wired
in yet: :func:`profiler_unavailable_reason` says so before a run starts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import anyio.to_thread

from esgz.pipeline.config import ResolvedImage
from esgz.pipeline.jobs import ManifestJob
from esgz.pipeline.runner import RunContext
from esgz.runtime.record import read_record_file, record_paths

__all__ = ["PROFILER_AVAILABLE", "profile_manifest", "profiler_unavailable_reason"]

#: Whether the workload profiler is wired into the pipeline.
PROFILER_AVAILABLE = False


def profiler_unavailable_reason(image: ResolvedImage) -> str | None:
    """Why ``image`` cannot be processed with the stages available, or None."""
    if PROFILER_AVAILABLE:
        return None
    if image.prefetch_list is not None:
        return (
            "--prefetch-list (prefetch_list) is not available yet: it needs the workload"
            " profiler's layer index; use convert --record-in, or --no-optimize"
        )
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
        entries = await anyio.to_thread.run_sync(read_record_file, settings.record_in)
        paths = record_paths(entries)
        return {layer.index: paths for layer in manifest.layers}
    return {}
