"""What a pipeline run returns: per image, per manifest, per layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["ImageResult", "LayerAction", "LayerSummary", "ManifestResult", "PipelineResult"]

#: What happened to a layer: converted now, taken from the cache, or passed through.
LayerAction = Literal["converted", "cached", "reused"]


@dataclass(frozen=True, slots=True)
class LayerSummary:
    """What happened to one layer: ``converted``, ``cached`` or ``reused``."""

    source_digest: str
    digest: str
    size: int
    action: LayerAction
    toc_digest: str | None


@dataclass(frozen=True, slots=True)
class ManifestResult:
    """One written platform manifest.

    ``execution``: how its workload ran — ``native``, ``emulated`` (by ``emulator``, a
    binfmt_misc handler) — or ``not profiled`` (also when no workload runs).
    """

    platform: str | None
    digest: str
    media_type: str
    layers: tuple[LayerSummary, ...]
    execution: Literal["native", "emulated", "not profiled"] = "not profiled"
    emulator: str | None = None


@dataclass(frozen=True, slots=True)
class ImageResult:
    """One finished image."""

    source: str
    target: str
    digest: str
    media_type: str
    manifests: tuple[ManifestResult, ...]


@dataclass(frozen=True, slots=True)
class PipelineResult:
    """The outcome of a whole run."""

    images: tuple[ImageResult, ...]
    seconds: float
    layers_fetched: int
    layers_converted: int
