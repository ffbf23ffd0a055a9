"""What travels between ``esgz run --broker`` and the workers, as JSON.

- A job: the whole pipeline config (only what the user set, so that the defaults merge
  the same way on the worker) and the index of the image to convert.
- Events: every :class:`~esgz.pipeline.events.Event` a worker's run publishes, by class
  name and fields, on the Redis channel of the batch (:func:`event_channel`).
- A job's answer: the :class:`~esgz.pipeline.results.ImageResult`, or the failure as
  one line.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Final

from esgz.pipeline import events as events_module
from esgz.pipeline.config import PipelineConfig, config_from_data
from esgz.pipeline.events import Event
from esgz.pipeline.results import ImageResult, LayerSummary, ManifestResult

__all__ = [
    "TASK_NAME",
    "config_for_job",
    "event_channel",
    "event_from_json",
    "event_to_wire",
    "image_result_from_data",
    "image_result_to_data",
    "job_config_data",
]

#: The Celery task name of one image's conversion.
TASK_NAME: Final = "esgz.convert_image"

_EVENT_TYPES: Final[dict[str, type[Event]]] = {
    name: value
    for name in events_module.__all__
    if isinstance(value := getattr(events_module, name), type) and issubclass(value, Event)
}


def event_channel(batch: str) -> str:
    """The Redis pub/sub channel of the events of batch ``batch``."""
    return f"esgz:events:{batch}"


def event_to_wire(event: Event) -> str:
    """``event`` as one JSON object: ``{"type": "LayerConverted", "fields": {...}}``."""
    fields = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    return json.dumps({"type": type(event).__name__, "fields": fields}, separators=(",", ":"))


def event_from_json(text: str | bytes) -> Event | None:
    """The event :func:`event_to_wire` wrote, or None for anything else."""
    try:
        data = json.loads(text)
        cls = _EVENT_TYPES[data["type"]]
        fields = {key: _tuples(value) for key, value in data["fields"].items()}
        event: Event = cls(**fields)
        return event
    except (ValueError, KeyError, TypeError):
        return None


def _tuples(value: Any) -> Any:
    """JSON arrays back as the tuples the events hold (nested too)."""
    return tuple(_tuples(item) for item in value) if isinstance(value, list) else value


def job_config_data(config: PipelineConfig) -> dict[str, Any]:
    """The config as JSON data, only the keys the user set, without the executor."""
    data = config.model_dump(mode="json", exclude_unset=True)
    data.pop("executor", None)
    return data


def config_for_job(data: dict[str, Any], index: int, cache_dir: str | None) -> PipelineConfig:
    """The one-image config of job ``index`` of a batch config; ``cache_dir`` (the
    worker's) replaces the batch's cache directory."""
    one = dict(data)
    one["images"] = [data["images"][index]]
    one.pop("executor", None)
    if cache_dir is not None:
        one["cache"] = {**data.get("cache", {}), "dir": cache_dir}
    return config_from_data(one, source="job")


def image_result_to_data(result: ImageResult) -> dict[str, Any]:
    """An :class:`ImageResult` as JSON data."""
    return dataclasses.asdict(result)


def image_result_from_data(data: dict[str, Any]) -> ImageResult:
    """The :class:`ImageResult` :func:`image_result_to_data` wrote."""
    manifests = tuple(
        ManifestResult(**{**m, "layers": tuple(LayerSummary(**layer) for layer in m["layers"])})
        for m in data["manifests"]
    )
    return ImageResult(
        source=data["source"],
        target=data["target"],
        digest=data["digest"],
        media_type=data["media_type"],
        manifests=manifests,
    )
