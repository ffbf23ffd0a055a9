"""The embedding API through the real stages: configs in every form, re-runs, refusals.

Written the way an application uses it: everything comes from ``esgz`` (imported at the
top, so that the pipeline module is not first imported inside the event loop).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from esgz import (
    ConfigError,
    Event,
    EventBus,
    ImageDone,
    ImageResolved,
    LayerConverted,
    Pipeline,
    PipelineConfig,
    PipelineDone,
    PipelineError,
    PipelineResult,
    Subscription,
    convert,
    parse_config_text,
    run_pipeline,
)
from tests.cli.outputcheck import check_converted, manifests_of
from tests.fixtures.images import SampleImage

pytestmark = pytest.mark.anyio


def config_data(source: str, target: str, cache: Path) -> dict[str, Any]:
    return {
        "defaults": {"no_optimize": True, "oci": True, "compression_level": 1},
        "cache": {"dir": str(cache)},
        "images": [{"source": source, "target": target}],
    }


async def collect(events: Subscription) -> list[Event]:
    return [event async for event in events]


def converted(events: list[Event]) -> list[LayerConverted]:
    return [event for event in events if isinstance(event, LayerConverted)]


async def test_pipeline_takes_every_config_run_pipeline_takes(
    busybox_image: SampleImage, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"

    def data(tag: str) -> dict[str, Any]:
        return config_data(busybox_image.reference, f"local://{tmp_path}/out:{tag}", cache)

    yaml_file = tmp_path / "pipeline.yaml"
    yaml_file.write_text(yaml.safe_dump(data("file")))
    expected = (await run_pipeline(data("reference"))).images[0].digest
    sources: dict[str, PipelineConfig | dict[str, Any] | str | Path] = {
        "mapping": data("mapping"),
        "model": parse_config_text(yaml.safe_dump(data("model"))),
        "file": yaml_file,
        "str": str(yaml_file),
    }
    for tag, source in sources.items():
        result = await Pipeline(source).run()
        assert result.images[0].digest == expected, tag
    _, (output,) = manifests_of(tmp_path / "out", "file")
    assert output.digest == expected
    check_converted(tmp_path / "out", output)


async def test_a_config_file_is_read_by_the_first_run(
    busybox_image: SampleImage, tmp_path: Path
) -> None:
    yaml_file = tmp_path / "pipeline.yaml"
    data = config_data(busybox_image.reference, f"local://{tmp_path}/out:x", tmp_path / "c")
    yaml_file.write_text(yaml.safe_dump(data))
    pipeline = Pipeline(yaml_file)
    assert pipeline.config is None
    await pipeline.run()
    assert isinstance(pipeline.config, PipelineConfig)
    assert pipeline.config.images[0].source == busybox_image.reference


async def test_a_pipeline_runs_again_with_fresh_events(
    busybox_image: SampleImage, tmp_path: Path
) -> None:
    pipeline = Pipeline(
        config_data(busybox_image.reference, f"local://{tmp_path}/out:x", tmp_path / "cache")
    )
    first = pipeline.events(max_buffer=4096)
    await pipeline.run()
    second = pipeline.events(max_buffer=4096)  # taken between runs: the next run's
    result = await pipeline.run()

    first_events = await collect(first)
    second_events = await collect(second)
    for events in (first_events, second_events):
        assert isinstance(events[-1], PipelineDone)
        assert events[-1].error is None
        assert sum(isinstance(event, PipelineDone) for event in events) == 1
    layers = len(busybox_image.layers)
    assert [event.cached for event in converted(first_events)] == [False] * layers
    assert [event.cached for event in converted(second_events)] == [True] * layers
    (done,) = [event for event in second_events if isinstance(event, ImageDone)]
    assert done.digest == result.images[0].digest
    assert await collect(first) == []  # the first run's subscription stays ended


async def test_a_subscription_taken_during_a_run_follows_that_run(
    busybox_image: SampleImage, tmp_path: Path
) -> None:
    pipeline = Pipeline(
        config_data(busybox_image.reference, f"local://{tmp_path}/out:x", tmp_path / "cache")
    )
    watcher = pipeline.events()
    late: list[Event] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(pipeline.run)
        async for event in watcher:
            if isinstance(event, ImageResolved):
                assert pipeline.running
                late = await collect(pipeline.events(max_buffer=4096))
                break
    assert not pipeline.running
    assert isinstance(late[-1], PipelineDone)
    assert late[-1].error is None
    assert not any(isinstance(event, ImageResolved) for event in late)
    assert len(converted(late)) == len(busybox_image.layers)


async def test_running_the_same_pipeline_twice_at_once_is_refused(
    busybox_image: SampleImage, tmp_path: Path
) -> None:
    pipeline = Pipeline(
        config_data(busybox_image.reference, f"local://{tmp_path}/out:x", tmp_path / "cache")
    )
    events = pipeline.events()
    results: list[PipelineResult] = []

    async def run() -> None:
        results.append(await pipeline.run())

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        async for event in events:
            if isinstance(event, ImageResolved):
                with pytest.raises(PipelineError, match="already running"):
                    await pipeline.run()
    (result,) = results
    assert result.images[0].target == f"local://{tmp_path}/out:x"


async def test_a_config_that_is_not_one_is_refused_in_api_words() -> None:
    expected = "config must be a PipelineConfig, a mapping or the path of a YAML file"
    with pytest.raises(ConfigError, match=f"^{expected}, not int$"):
        Pipeline(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=f"^{expected}, not list$"):
        await run_pipeline([])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="images"):
        Pipeline({"images": []})


async def test_keyword_errors_name_the_keyword_arguments() -> None:
    with pytest.raises(ConfigError) as caught:
        await convert("local:///a", "local:///b", format="zstdchunked")
    assert str(caught.value) == "options: format: the zstd:chunked format requires oci=True"
    with pytest.raises(ConfigError) as caught:
        await convert("local:///a", "local:///b", oci=True, compression_level=12)
    assert str(caught.value) == (
        "options: compression_level: 12 is out of range for estargz (-2..9)"
    )


async def test_a_run_that_fails_before_starting_still_ends_its_events(tmp_path: Path) -> None:
    pipeline = Pipeline(tmp_path / "missing.yaml")
    events = pipeline.events()
    with pytest.raises(ConfigError) as caught:
        await pipeline.run()
    (done,) = await collect(events)
    assert isinstance(done, PipelineDone)
    assert done.error == str(caught.value)
    assert done.images_done == 0
    assert not pipeline.running


async def test_convert_reports_to_an_event_bus_once(
    busybox_image: SampleImage, tmp_path: Path
) -> None:
    bus = EventBus()
    events = bus.subscribe(max_buffer=4096)
    target = f"local://{tmp_path}/out:e"
    result = await convert(
        busybox_image.reference, target, oci=True, cache_dir=tmp_path / "c", events=bus
    )
    seen = await collect(events)
    (done,) = [event for event in seen if isinstance(event, ImageDone)]
    assert done.digest == result.images[0].digest
    assert bus.closed
    with pytest.raises(ConfigError, match="events: this EventBus is closed"):
        await convert(busybox_image.reference, target, events=bus)
