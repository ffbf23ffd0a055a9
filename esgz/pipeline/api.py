"""The embedding API: run pipelines from Python, under asyncio or trio.

::

    import esgz

    result = await esgz.convert("registry.example/app:1", "registry.example/app:1-esgz",
                                oci=True)
    print(result.images[0].digest)

    pipeline = esgz.Pipeline(await esgz.load_config_file("pipeline.yaml"))
    async with anyio.create_task_group() as tg:
        events = pipeline.events()
        tg.start_soon(show_progress, events)     # async for event in events: ...
        result = await pipeline.run()

Every function raises :class:`~esgz.errors.EsgzError` subclasses on expected failures
(:class:`~esgz.errors.ConfigError` for bad options, :class:`~esgz.errors.PipelineError`
when a stage fails).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from esgz.pipeline.config import (
    PipelineConfig,
    WorkloadConfig,
    config_from_data,
    load_config_file,
)
from esgz.pipeline.events import EventBus, Subscription
from esgz.pipeline.results import PipelineResult
from esgz.pipeline.runner import Runner, Stages

__all__ = ["Pipeline", "convert", "optimize", "run_pipeline"]

ConfigSource = PipelineConfig | Mapping[str, Any] | str | Path


async def _as_config(config: ConfigSource) -> PipelineConfig:
    if isinstance(config, PipelineConfig):
        return config
    if isinstance(config, str | Path):
        return await load_config_file(config)
    return config_from_data(dict(config), source="config")


class Pipeline:
    """One run of a pipeline config, with an event stream to subscribe to.

    ``stages`` replaces the built-in stages (tests, custom sources/targets).
    """

    def __init__(self, config: PipelineConfig, *, stages: Stages | None = None) -> None:
        self.config = config
        self.stages = stages
        self.bus = EventBus()

    def events(self, max_buffer: int = 256) -> Subscription:
        """An async iterator over this run's events; subscribe before :meth:`run`."""
        return self.bus.subscribe(max_buffer)

    async def run(self) -> PipelineResult:
        """Run every image of the config; the first failure raises PipelineError."""
        if self.stages is not None:
            return await Runner(self.config, self.stages, self.bus).run()
        from esgz.stages.default import open_default_stages

        try:
            async with open_default_stages(self.config) as stages:
                return await Runner(self.config, stages, self.bus).run()
        finally:
            self.bus.close()


async def run_pipeline(
    config: ConfigSource,
    *,
    events: EventBus | None = None,
    stages: Stages | None = None,
) -> PipelineResult:
    """Run a pipeline (a config object, a mapping, or a YAML file path).

    ``events`` receives the run's events (it is closed at the end).
    """
    pipeline = Pipeline(await _as_config(config), stages=stages)
    if events is not None:
        pipeline.bus = events
    return await pipeline.run()


def _image_settings(
    *,
    format: str,
    oci: bool,
    compression_level: int | None,
    chunk_size: int,
    platforms: Sequence[str],
    all_platforms: bool,
    reuse: bool,
    plain_http: bool,
) -> dict[str, Any]:
    return {
        "format": format,
        "oci": oci,
        "compression_level": compression_level,
        "chunk_size": chunk_size,
        "platforms": list(platforms),
        "all_platforms": all_platforms,
        "reuse": reuse,
        "plain_http": plain_http,
    }


def _one_image(
    source: str, target: str, image: dict[str, Any], cache_dir: Path | None, cache: bool
) -> PipelineConfig:
    data: dict[str, Any] = {
        "images": [{"source": source, "target": target, **image}],
        "cache": {"enabled": cache},
    }
    if cache_dir is not None:
        data["cache"]["dir"] = str(cache_dir)
    return config_from_data(data, source="options")


async def convert(
    source: str,
    target: str,
    *,
    format: str = "estargz",
    oci: bool = False,
    compression_level: int | None = None,
    chunk_size: int = 0,
    platforms: Sequence[str] = (),
    all_platforms: bool = False,
    reuse: bool = False,
    plain_http: bool = False,
    record_in: Path | None = None,
    prefetch_list: Path | None = None,
    cache_dir: Path | None = None,
    cache: bool = True,
    events: EventBus | None = None,
) -> PipelineResult:
    """Convert one image to eStargz / zstd:chunked without running it (``esgz convert``).

    ``record_in`` (a record file) prioritizes the same paths in every layer;
    ``prefetch_list`` maps listed paths to the layers that hold them.
    """
    image = _image_settings(
        format=format,
        oci=oci,
        compression_level=compression_level,
        chunk_size=chunk_size,
        platforms=platforms,
        all_platforms=all_platforms,
        reuse=reuse,
        plain_http=plain_http,
    )
    has_list = record_in is not None or prefetch_list is not None
    image["no_optimize"] = not has_list
    if record_in is not None:
        image["record_in"] = str(record_in)
    if prefetch_list is not None:
        image["prefetch_list"] = str(prefetch_list)
    config = _one_image(source, target, image, cache_dir, cache)
    return await run_pipeline(config, events=events)


async def optimize(
    source: str,
    target: str,
    *,
    workload: WorkloadConfig | Mapping[str, Any] | None = None,
    no_optimize: bool = False,
    record_out: Path | None = None,
    prefetch_list: Path | None = None,
    accept_failed_workload: bool = False,
    format: str = "estargz",
    oci: bool = False,
    compression_level: int | None = None,
    chunk_size: int = 0,
    platforms: Sequence[str] = (),
    all_platforms: bool = False,
    reuse: bool = False,
    plain_http: bool = False,
    cache_dir: Path | None = None,
    cache: bool = True,
    events: EventBus | None = None,
) -> PipelineResult:
    """Convert one image, optimized for ``workload`` (``esgz optimize``).

    ``workload`` takes the keys of the workload flags (see :class:`WorkloadConfig`).
    """
    image = _image_settings(
        format=format,
        oci=oci,
        compression_level=compression_level,
        chunk_size=chunk_size,
        platforms=platforms,
        all_platforms=all_platforms,
        reuse=reuse,
        plain_http=plain_http,
    )
    image["no_optimize"] = no_optimize
    image["accept_failed_workload"] = accept_failed_workload
    if workload is not None:
        image["workload"] = (
            workload.model_dump(exclude_unset=True)
            if isinstance(workload, WorkloadConfig)
            else dict(workload)
        )
    if record_out is not None:
        image["record_out"] = str(record_out)
    if prefetch_list is not None:
        image["prefetch_list"] = str(prefetch_list)
    config = _one_image(source, target, image, cache_dir, cache)
    return await run_pipeline(config, events=events)
