"""The embedding API: run pipelines from Python, under asyncio or trio.

Import it from :mod:`esgz` (``esgz.convert``, ``esgz.Pipeline``, …)::

    import esgz

    result = await esgz.convert("registry.example/app:1", "registry.example/app:1-esgz",
                                oci=True)
    print(result.images[0].digest)

    pipeline = esgz.Pipeline("pipeline.yaml")
    events = pipeline.events()                   # the next run's events
    async with anyio.create_task_group() as tg:
        tg.start_soon(show_progress, events)     # async for event in events: ...
        result = await pipeline.run()

Every function raises :class:`~esgz.errors.EsgzError` subclasses on expected failures
(:class:`~esgz.errors.ConfigError` for bad options, :class:`~esgz.errors.PipelineError`
when a stage fails).
"""

from __future__ import annotations

import importlib
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from esgz.errors import ConfigError, EsgzError, PipelineError, StorageError
from esgz.fsutil import storage_error, storage_problem
from esgz.oci.reference import LayoutReference
from esgz.pipeline.config import (
    PipelineConfig,
    config_from_data,
    load_config_file,
)
from esgz.pipeline.events import EventBus, PipelineDone, Subscription
from esgz.pipeline.results import PipelineResult
from esgz.pipeline.runner import Runner
from esgz.runtime.workload import WorkloadOptions
from esgz.spelling import IMAGE_KEYWORDS

__all__ = ["Pipeline", "convert", "optimize", "run_pipeline"]

#: What :class:`Pipeline` and :func:`run_pipeline` accept as a config: the model, the same
#: data as a mapping (the YAML file's structure), or the path of a YAML file.
ConfigSource = PipelineConfig | Mapping[str, Any] | str | Path


def _validated(config: PipelineConfig | Mapping[str, Any]) -> PipelineConfig:
    if isinstance(config, PipelineConfig):
        return config
    if isinstance(config, Mapping):
        return config_from_data(dict(config), source="config")
    raise ConfigError(
        "config must be a PipelineConfig, a mapping or the path of a YAML file,"
        f" not {type(config).__name__}"
    )


class Pipeline:
    """A pipeline config to run, once or again, with an event stream per run.

    ``config`` is a :class:`PipelineConfig`, the same data as a mapping (validated here:
    a bad one raises :class:`~esgz.errors.ConfigError` at once), or the path of a YAML
    file (read by the first :meth:`run`, then kept).

    Each :meth:`run` publishes to its own events: :meth:`events` subscribes to the run in
    progress, or else to the next one, and the subscription ends with that run (its last
    event is :class:`PipelineDone`). Running the same pipeline again is fine; running it
    twice at once raises :class:`~esgz.errors.PipelineError`.
    """

    def __init__(self, config: ConfigSource) -> None:
        self._path: Path | None = None
        self._config: PipelineConfig | None = None
        if isinstance(config, str | Path):
            self._path = Path(config)
        else:
            self._config = _validated(config)
        self._next_events = EventBus()
        self._running: EventBus | None = None

    @property
    def config(self) -> PipelineConfig | None:
        """The validated config; None while a config file has not been read yet."""
        return self._config

    @property
    def running(self) -> bool:
        """Whether :meth:`run` is in progress."""
        return self._running is not None

    def events(self, max_buffer: int = 256) -> Subscription:
        """An async iterator over the events of the run in progress, or else the next run.

        It ends when that run ends. ``max_buffer`` bounds the unread events kept for this
        subscriber (byte-progress events are merged or dropped beyond it, the others are
        always kept).
        """
        bus = self._running if self._running is not None else self._next_events
        return bus.subscribe(max_buffer)

    async def run(self) -> PipelineResult:
        """Run every image of the config; the first failure raises PipelineError.

        A config file that cannot be read or is invalid raises
        :class:`~esgz.errors.ConfigError`.
        """
        if self._running is not None:
            raise PipelineError(
                "this Pipeline is already running; await its run() before running it again,"
                " or create another Pipeline"
            )
        bus, self._next_events = self._next_events, EventBus()
        return await self._run_on(bus)

    async def _run_on(self, bus: EventBus) -> PipelineResult:
        """Run, publishing to ``bus``, and close it at the end whatever happens."""
        self._running = bus
        started = time.monotonic()
        runner_started = False
        try:
            if self._config is None:
                assert self._path is not None
                self._config = await load_config_file(self._path)
            if self._config.executor.broker is not None:
                # Celery is imported on first use, in a thread: importing reads files.
                executor = await anyio.to_thread.run_sync(
                    importlib.import_module, "esgz.distributed.executor"
                )
                runner_started = True  # it reports its own end, as the runner does
                result: PipelineResult = await executor.run_on_workers(self._config, bus)
                return result
            from esgz.stages.default import open_default_stages

            async with open_default_stages(self._config) as stages:
                shared = None
                if self._config.cache.registry is not None:
                    from esgz.distributed.regcache import (
                        RegistryConversionCache,
                        cache_repository,
                    )

                    shared = RegistryConversionCache(
                        stages.endpoints.client, cache_repository(self._config.cache.registry)
                    )
                runner_started = True
                return await Runner(self._config, stages, bus, shared_cache=shared).run()
        except BaseException as exc:
            if not runner_started:
                # The runner reports its own end; a run that fails before it starts
                # still ends with PipelineDone, so that subscribers learn why.
                seconds = time.monotonic() - started
                bus.publish(
                    PipelineDone(image="", images_done=0, seconds=seconds, error=_one_line(exc))
                )
            problem = storage_problem(exc)
            if problem is None:
                raise
            context = exc if isinstance(exc, EsgzError) else None
            config = self._config

            def describe() -> StorageError:  # looks at the file systems: blocking
                written = _written_dirs(config) if config is not None else []
                return storage_error(problem, written, context=context)

            raise await anyio.to_thread.run_sync(describe) from exc
        finally:
            self._running = None
            bus.close()


def _written_dirs(config: PipelineConfig) -> list[Path]:
    """Where a run writes: the cache (or temp) dir and the OCI layouts it outputs to."""
    dirs = [config.cache_dir() if config.cache.enabled else Path(tempfile.gettempdir())]
    try:
        images = config.resolved_images()
    except EsgzError:
        return dirs
    dirs += [
        image.target_ref.path for image in images if isinstance(image.target_ref, LayoutReference)
    ]
    return dirs


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, EsgzError):
        return str(exc)
    if isinstance(exc, Exception):
        return f"{type(exc).__name__}: {exc}"
    return "cancelled"


async def run_pipeline(config: ConfigSource, *, events: EventBus | None = None) -> PipelineResult:
    """Run a pipeline (a config object, a mapping, or a YAML file path) once.

    ``events`` receives the run's events and is closed at the end, so it serves one run:
    a closed :class:`EventBus` raises :class:`~esgz.errors.ConfigError`.
    """
    if events is not None and events.closed:
        raise ConfigError(
            "events: this EventBus is closed (an EventBus serves one run); pass a new EventBus"
        )
    return await Pipeline(config)._run_on(events if events is not None else EventBus())


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
    return config_from_data(data, source="options", vocabulary=IMAGE_KEYWORDS)


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
    workload: WorkloadOptions | Mapping[str, Any] | None = None,
    no_optimize: bool = False,
    no_emulation: bool = False,
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

    ``workload`` takes the keys of the workload flags (see :class:`WorkloadOptions`).
    With ``all_platforms`` or ``platforms``, every selected platform that can run here is
    profiled, natively or under a binfmt_misc emulator (``no_emulation``: the host's only).
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
    if no_emulation:
        image["no_emulation"] = True
    image["accept_failed_workload"] = accept_failed_workload
    if workload is not None:
        image["workload"] = (
            workload.model_dump(exclude_unset=True)
            if isinstance(workload, WorkloadOptions)
            else dict(workload)
        )
    if record_out is not None:
        image["record_out"] = str(record_out)
    if prefetch_list is not None:
        image["prefetch_list"] = str(prefetch_list)
    config = _one_image(source, target, image, cache_dir, cache)
    return await run_pipeline(config, events=events)
