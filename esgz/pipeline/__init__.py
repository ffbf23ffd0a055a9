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
    ImageSpec,
    PipelineConfig,
    RegistryHostConfig,
    WorkloadConfig,
    config_from_data,
    load_config_file,
    parse_config_text,
)
from esgz.pipeline.events import (
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
    LayerReused,
    LayerUploaded,
    PipelineDone,
    ProgressEvent,
    Subscription,
    WarningEvent,
    WorkloadOutput,
)
from esgz.pipeline.results import ImageResult, LayerSummary, ManifestResult, PipelineResult
from esgz.pipeline.runner import RunContext, Runner, Stages

__all__ = [
    "BytesFetched",
    "BytesUploaded",
    "CacheConfig",
    "ConcurrencyConfig",
    "DefaultsConfig",
    "Event",
    "EventBus",
    "ImageDone",
    "ImageProfiled",
    "ImagePushed",
    "ImageResolved",
    "ImageResult",
    "ImageSpec",
    "LayerConverted",
    "LayerFetched",
    "LayerReused",
    "LayerSummary",
    "LayerUploaded",
    "ManifestResult",
    "Pipeline",
    "PipelineConfig",
    "PipelineDone",
    "PipelineResult",
    "ProgressEvent",
    "RegistryHostConfig",
    "RunContext",
    "Runner",
    "Stages",
    "Subscription",
    "WarningEvent",
    "WorkloadConfig",
    "WorkloadOutput",
    "config_from_data",
    "convert",
    "load_config_file",
    "optimize",
    "parse_config_text",
    "run_pipeline",
]
