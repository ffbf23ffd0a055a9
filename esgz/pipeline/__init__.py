"""The pipeline framework: config model, events, job types, the stage runner and the API.

Applications import the embedding API from :mod:`esgz`, which re-exports it. This package
adds the framework layer: :class:`Runner` runs a config through any implementation of
the :class:`Stages` protocol (other sources and targets, tests), with :class:`RunContext`.
"""

from esgz.pipeline.api import Pipeline, convert, optimize, run_pipeline
from esgz.pipeline.config import (
    CacheConfig,
    ConcurrencyConfig,
    DefaultsConfig,
    ExecutorConfig,
    ImageSpec,
    PipelineConfig,
    RegistryHostConfig,
    config_from_data,
    load_config_file,
    parse_config_text,
)
from esgz.pipeline.events import (
    BytesConverted,
    BytesFetched,
    BytesUploaded,
    Event,
    EventBus,
    ImageDone,
    ImageProfiled,
    ImagePushed,
    ImageResolved,
    LayerConverted,
    LayerFetched,
    LayerPhase,
    LayerReused,
    LayerUploaded,
    PipelineDone,
    PlatformExecution,
    ProfileProgress,
    ProgressEvent,
    Subscription,
    WarningEvent,
    WorkloadOutput,
)
from esgz.pipeline.results import ImageResult, LayerSummary, ManifestResult, PipelineResult
from esgz.pipeline.runner import RunContext, Runner, Stages
from esgz.runtime.workload import HostEntry, MountSpec, WorkloadOptions

__all__ = [
    "BytesConverted",
    "BytesFetched",
    "BytesUploaded",
    "CacheConfig",
    "ConcurrencyConfig",
    "DefaultsConfig",
    "Event",
    "EventBus",
    "ExecutorConfig",
    "HostEntry",
    "ImageDone",
    "ImageProfiled",
    "ImagePushed",
    "ImageResolved",
    "ImageResult",
    "ImageSpec",
    "LayerConverted",
    "LayerFetched",
    "LayerPhase",
    "LayerReused",
    "LayerSummary",
    "LayerUploaded",
    "ManifestResult",
    "MountSpec",
    "Pipeline",
    "PipelineConfig",
    "PipelineDone",
    "PipelineResult",
    "PlatformExecution",
    "ProfileProgress",
    "ProgressEvent",
    "RegistryHostConfig",
    "RunContext",
    "Runner",
    "Stages",
    "Subscription",
    "WarningEvent",
    "WorkloadOptions",
    "WorkloadOutput",
    "config_from_data",
    "convert",
    "load_config_file",
    "optimize",
    "parse_config_text",
    "run_pipeline",
]
