"""Progress events of real runs: every layer's phases in order, byte counts that add up.

The built-in stages run against real sources and targets (OCI layouts, Debian's
docker-registry); a subscriber reads the events while the pipeline runs, as the CLI does.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from pathlib import Path

import anyio
import pytest

from esgz.pipeline.api import Pipeline
from esgz.pipeline.config import config_from_data
from esgz.pipeline.events import (
    BytesConverted,
    BytesFetched,
    BytesUploaded,
    Event,
    LayerConverted,
    LayerFetched,
    LayerPhase,
    LayerUploaded,
    ProgressEvent,
)
from esgz.pipeline.results import PipelineResult
from tests.fixtures.images import SampleImage
from tests.fixtures.registry import RegistryServer

pytestmark = pytest.mark.anyio


async def run_with_events(data: dict[str, object]) -> tuple[PipelineResult, list[Event]]:
    pipeline = Pipeline(config_from_data(data))
    subscription = pipeline.events()
    events: list[Event] = []
    results: list[PipelineResult] = []

    async def run() -> None:
        results.append(await pipeline.run())

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        async for event in subscription:
            events.append(event)
    return results[0], events


def config(source: str, target: str, cache: Path) -> dict[str, object]:
    return {
        "defaults": {"no_optimize": True, "oci": True},
        "cache": {"dir": str(cache)},
        "registries": {source.split("/")[2]: {"plain_http": True}}
        if source.startswith("http://")
        else {},
        "images": [{"source": source, "target": target}],
    }


def check_layers(image: SampleImage, events: list[Event]) -> None:
    """Per layer: fetch → wait → convert → upload, each phase's bytes ending at its total."""
    phases: dict[str, list[str]] = defaultdict(list)
    last: dict[tuple[type, str], ProgressEvent] = {}
    converted: dict[str, LayerConverted] = {}
    position: dict[tuple[str, str], int] = {}
    for index, event in enumerate(events):
        if isinstance(event, LayerPhase):
            phases[event.layer].append(event.phase)
            position[(event.phase, event.layer)] = index
        elif isinstance(event, ProgressEvent):
            if isinstance(event, BytesConverted):
                assert position[("convert", event.layer)] < index  # announced first
            previous = last.get((type(event), event.layer))
            assert previous is None or previous.done <= event.done  # cumulative
            last[(type(event), event.layer)] = event
        elif isinstance(event, LayerConverted):
            converted[event.layer] = event
        elif isinstance(event, LayerFetched):
            assert position[("wait", event.layer)] < index
        elif isinstance(event, LayerUploaded):
            assert event.outcome == "uploaded"
    for layer in image.layers:
        digest = layer.digest
        assert phases[digest] == ["fetch", "wait", "convert", "upload"]
        fetched = last[(BytesFetched, digest)]
        assert fetched.done == fetched.total == layer.size
        read = last[(BytesConverted, digest)]
        assert isinstance(read, BytesConverted)
        output = converted[digest]
        assert read.done == read.total == layer.size
        assert read.written == output.size
        uploaded = last[(BytesUploaded, output.digest)]
        assert uploaded.done == uploaded.total == output.size
    phase_totals = {
        (event.phase, event.layer): event.total for event in events if isinstance(event, LayerPhase)
    }
    for layer in image.layers:
        assert phase_totals[("fetch", layer.digest)] == layer.size
        assert phase_totals[("convert", layer.digest)] == layer.size
        assert phase_totals[("upload", layer.digest)] == converted[layer.digest].size


async def test_layout_to_layout(python_image: SampleImage, tmp_path: Path) -> None:
    _, events = await run_with_events(
        config(python_image.reference, f"local://{tmp_path}/out:p", tmp_path / "cache")
    )
    check_layers(python_image, events)


async def test_registry_to_registry_progress_is_throttled(
    plain_registry: RegistryServer, python_image: SampleImage, tmp_path: Path
) -> None:
    plain_registry.skopeo_push_layout(python_image.layout, "src/python:1", tag="latest")
    host = plain_registry.host
    target = f"http://{host}/out/python-{uuid.uuid4().hex[:8]}:p"  # nothing there yet
    _, events = await run_with_events(
        config(f"http://{host}/src/python:1", target, tmp_path / "cache")
    )
    check_layers(python_image, events)
    # the client reports every chunk; at most ~10 events a second reach the bus per layer
    per_layer: dict[tuple[type, str], int] = defaultdict(int)
    for event in events:
        if isinstance(event, BytesFetched | BytesUploaded):
            per_layer[(type(event), event.layer)] += 1
    assert per_layer
    assert max(per_layer.values()) <= 50
