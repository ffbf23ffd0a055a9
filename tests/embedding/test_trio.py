"""esgz inside a trio application, written the way a trio user writes it.

These tests run under pytest-trio (``@pytest.mark.trio``: nurseries, its ``nursery``
fixture, trio channels and cancel scopes), beside the anyio-parametrized suite that runs
the same API under both backends. pytest-trio's ``trio_mode`` stays off, so each plugin
runs only the tests marked for it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import sniffio
import trio
import yaml

from esgz import (
    Event,
    EventBus,
    ImageDone,
    LayerConverted,
    LayerFetched,
    Pipeline,
    PipelineDone,
    Subscription,
    convert,
)
from tests.cli.outputcheck import check_converted, manifests_of
from tests.fixtures.images import SampleImage


def config_data(source: str, target: str, cache: Path) -> dict[str, Any]:
    return {
        "defaults": {"no_optimize": True, "oci": True, "compression_level": 1},
        "cache": {"dir": str(cache)},
        "concurrency": {"convert": 1},
        "images": [{"source": source, "target": target}],
    }


async def forward(events: Subscription, send: trio.MemorySendChannel[Event]) -> None:
    """What a trio app does with progress: hand it to another task over a channel."""
    async with send:
        async for event in events:
            await send.send(event)


def test_pytest_trio_leaves_the_other_tests_to_anyio(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.getini("trio_mode") is False
    assert pytestconfig.pluginmanager.has_plugin("trio")
    assert pytestconfig.pluginmanager.has_plugin("anyio")


@pytest.mark.trio
async def test_convert_reports_progress_to_a_task_in_the_nursery(
    busybox_image: SampleImage, tmp_path: Path, nursery: trio.Nursery
) -> None:
    assert sniffio.current_async_library() == "trio"
    bus = EventBus()
    send, receive = trio.open_memory_channel[Event](math.inf)
    nursery.start_soon(forward, bus.subscribe(), send)

    result = await convert(
        busybox_image.reference,
        f"local://{tmp_path}/out:t",
        oci=True,
        compression_level=1,
        cache_dir=tmp_path / "cache",
        events=bus,
    )

    async with receive:
        events = [event async for event in receive]
    assert isinstance(events[-1], PipelineDone)
    (done,) = [event for event in events if isinstance(event, ImageDone)]
    assert done.digest == result.images[0].digest
    _, (output,) = manifests_of(tmp_path / "out", "t")
    assert output.digest == done.digest
    check_converted(tmp_path / "out", output)


@pytest.mark.trio
async def test_a_pipeline_from_a_file_runs_again_with_fresh_events(
    busybox_image: SampleImage, tmp_path: Path
) -> None:
    path = tmp_path / "pipeline.yaml"
    data = config_data(busybox_image.reference, f"local://{tmp_path}/out:t", tmp_path / "cache")
    path.write_text(yaml.safe_dump(data))
    pipeline = Pipeline(path)

    runs: list[list[Event]] = []
    for _ in range(2):
        send, receive = trio.open_memory_channel[Event](math.inf)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(forward, pipeline.events(), send)
            await pipeline.run()
        async with receive:
            runs.append([event async for event in receive])

    cached = [[e.cached for e in run if isinstance(e, LayerConverted)] for run in runs]
    layers = len(busybox_image.layers)
    assert cached == [[False] * layers, [True] * layers]
    for run in runs:
        assert isinstance(run[-1], PipelineDone)
        assert run[-1].error is None


@pytest.mark.trio
async def test_a_run_cancelled_by_its_nursery_cleans_up_and_can_run_again(
    busybox_image: SampleImage, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    cache = tmp_path / "cache"
    pipeline = Pipeline(config_data(busybox_image.reference, f"local://{out}:t", cache))
    events = pipeline.events()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipeline.run)
        async for event in events:
            if isinstance(event, LayerFetched):
                nursery.cancel_scope.cancel()
                break
    assert not pipeline.running
    assert list((cache / "tmp").iterdir()) == []

    with trio.fail_after(120):
        result = await pipeline.run()
    _, (output,) = manifests_of(out, "t")
    assert output.digest == result.images[0].digest
    check_converted(out, output)
