"""esgz: make container images lazy-pullable.

esgz converts OCI/Docker images into eStargz (and zstd:chunked) layers and can optimize
them against a workload so that the files it reads are prefetched at container start.

This module is the friendly API for applications (asyncio or trio):

* :func:`convert`, :func:`optimize` and :func:`run_pipeline` run whole conversions
  (``events=`` takes an :class:`EventBus` to follow one); :class:`Pipeline` does the same
  for one config, run as often as you like, with an event stream per run.
* The config model (:class:`PipelineConfig` and its parts) is the one the YAML files and
  the CLI use; :func:`load_config_file` and :func:`parse_config_text` read YAML.
* Every error esgz raises on purpose is an :class:`EsgzError` (see :mod:`esgz.errors`).

Everything these signatures name is exported here: this module is the one import path
for applications.

The building blocks are usable alone too: :mod:`esgz.estargz` (layer writer, reader,
verifier), :mod:`esgz.oci` (references, manifests, platforms, OCI layouts),
:mod:`esgz.registry` (the registry client) and :mod:`esgz.runtime` (the profiling sandbox).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from esgz import errors as _errors
from esgz.errors import (
    AuthError,
    ConfigError,
    EsgzError,
    FormatError,
    ImageError,
    ImageReferenceError,
    LayoutError,
    NotFoundError,
    PipelineError,
    PlatformError,
    RegistryError,
    SandboxError,
    StorageError,
    VerificationError,
    WorkloadError,
)

if TYPE_CHECKING:
    from esgz.pipeline import (
        BytesConverted,
        BytesFetched,
        BytesUploaded,
        CacheConfig,
        ConcurrencyConfig,
        DefaultsConfig,
        Event,
        EventBus,
        ExecutorConfig,
        HostEntry,
        ImageDone,
        ImageProfiled,
        ImagePushed,
        ImageResolved,
        ImageResult,
        ImageSpec,
        LayerConverted,
        LayerFetched,
        LayerPhase,
        LayerReused,
        LayerSummary,
        LayerUploaded,
        ManifestResult,
        MountSpec,
        Pipeline,
        PipelineConfig,
        PipelineDone,
        PipelineResult,
        PlatformExecution,
        ProfileProgress,
        ProgressEvent,
        RegistryHostConfig,
        Subscription,
        WarningEvent,
        WorkloadOptions,
        WorkloadOutput,
        convert,
        load_config_file,
        optimize,
        parse_config_text,
        run_pipeline,
    )


__version__ = "0.1.0.dev0"

__all__ = [
    "AuthError",
    "BytesConverted",
    "BytesFetched",
    "BytesUploaded",
    "CacheConfig",
    "ConcurrencyConfig",
    "ConfigError",
    "DefaultsConfig",
    "EsgzError",
    "Event",
    "EventBus",
    "ExecutorConfig",
    "FormatError",
    "HostEntry",
    "ImageDone",
    "ImageError",
    "ImageProfiled",
    "ImagePushed",
    "ImageReferenceError",
    "ImageResolved",
    "ImageResult",
    "ImageSpec",
    "LayerConverted",
    "LayerFetched",
    "LayerPhase",
    "LayerReused",
    "LayerSummary",
    "LayerUploaded",
    "LayoutError",
    "ManifestResult",
    "MountSpec",
    "NotFoundError",
    "Pipeline",
    "PipelineConfig",
    "PipelineDone",
    "PipelineError",
    "PipelineResult",
    "PlatformError",
    "PlatformExecution",
    "ProfileProgress",
    "ProgressEvent",
    "RegistryError",
    "RegistryHostConfig",
    "SandboxError",
    "StorageError",
    "Subscription",
    "VerificationError",
    "WarningEvent",
    "WorkloadError",
    "WorkloadOptions",
    "WorkloadOutput",
    "__version__",
    "convert",
    "load_config_file",
    "optimize",
    "parse_config_text",
    "run_pipeline",
]

# Everything else in __all__ comes from the pipeline (and pydantic behind it); it is
# imported on first use, so that using only the building blocks (e.g. ``esgz.estargz``)
# does not pay for it.
_PIPELINE_NAMES = frozenset(__all__) - frozenset(_errors.__all__) - {"__version__"}


def __getattr__(name: str) -> Any:
    """Import the pipeline API on first access (PEP 562)."""
    if name in _PIPELINE_NAMES:
        value = getattr(importlib.import_module("esgz.pipeline"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'esgz' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
