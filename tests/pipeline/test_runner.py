"""The runner with small real stages (files + gzip): flow, limits, failures, dedup, cache."""

from __future__ import annotations

import gzip
import json
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from esgz.errors import FormatError, PipelineError
from esgz.pipeline.config import PipelineConfig, config_from_data
from esgz.pipeline.events import (
    Event,
    EventBus,
    ImageDone,
    ImageResolved,
    LayerConverted,
    LayerReused,
    PipelineDone,
)
from esgz.pipeline.jobs import FetchedBlob, ImageJob, LayerJob, ManifestJob
from esgz.pipeline.runner import RunContext, Runner
from tests.pipeline.toystages import ToyStages, digest_of

pytestmark = pytest.mark.anyio

BASE = b"base layer " * 1000
APP_A = b"app a " * 500
APP_B = b"app b " * 500


def make_config(
    tmp_path: Path, images: list[str], concurrency: dict[str, int] | None = None, **image_opts: Any
) -> PipelineConfig:
    return config_from_data(
        {
            "cache": {"dir": str(tmp_path / "cache")},
            "concurrency": concurrency or {},
            "images": [
                {"source": f"local:///src/{name}", "target": f"local:///out/{name}", **image_opts}
                for name in images
            ],
        }
    )


def toy(tmp_path: Path, catalog: dict[str, dict[str, list[bytes]]], **kwargs: Any) -> ToyStages:
    full = {f"local:///src/{name}": platforms for name, platforms in catalog.items()}
    return ToyStages(catalog=full, target_root=tmp_path / "targets", **kwargs)


def scratch_entries(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "cache" / "tmp").iterdir())


async def collect(bus: EventBus, into: list[Event]) -> None:
    async for event in bus.subscribe(max_buffer=10_000):
        into.append(event)


async def run_collecting(config: PipelineConfig, stages: ToyStages) -> tuple[Any, list[Event]]:
    bus = EventBus()
    events: list[Event] = []
    subscription = bus.subscribe(max_buffer=10_000)

    async def drain() -> None:
        async for event in subscription:
            events.append(event)

    async with anyio.create_task_group() as tg:
        tg.start_soon(drain)
        result = await Runner(config, stages, bus).run()
    return result, events


async def test_images_flow_through_every_stage(tmp_path: Path) -> None:
    stages = toy(
        tmp_path,
        {"a": {"linux/amd64": [BASE, APP_A], "linux/arm64": [BASE, APP_B]}, "b": {"x": [APP_B]}},
    )
    result, events = await run_collecting(make_config(tmp_path, ["a", "b"]), stages)

    assert [image.source for image in result.images] == ["local:///src/a", "local:///src/b"]
    image_a = result.images[0]
    assert [m.platform for m in image_a.manifests] == ["linux/amd64", "linux/arm64"]
    out_a = tmp_path / "targets" / "out" / "a"
    index = json.loads((out_a / "index.json").read_text())
    assert index == [m.digest for m in image_a.manifests]
    for manifest in image_a.manifests:
        for layer in manifest.layers:
            blob = (out_a / "blobs" / layer.digest.replace(":", "-")).read_bytes()
            assert digest_of(gzip.decompress(blob)) == layer.source_digest
    kinds = [type(event) for event in events]
    assert kinds.count(ImageResolved) == 2
    assert kinds.count(ImageDone) == 2
    assert kinds[-1] is PipelineDone
    done = events[-1]
    assert isinstance(done, PipelineDone)
    assert done.error is None
    assert done.images_done == 2
    assert scratch_entries(tmp_path) == []


async def test_stage_worker_counts_are_respected(tmp_path: Path) -> None:
    layers = [f"layer {i}".encode() * 100 for i in range(12)]
    stages = toy(
        tmp_path,
        {f"img{i}": {"p": layers[i * 2 : i * 2 + 2]} for i in range(6)},
        delays={"fetch": 0.01, "convert": 0.02, "upload": 0.01},
    )
    config = make_config(
        tmp_path, [f"img{i}" for i in range(6)], {"fetch": 3, "convert": 2, "upload": 1}
    )
    await Runner(config, stages).run()
    assert stages.tracker.peak["fetch"] == 3
    assert stages.tracker.peak["convert"] == 2
    assert stages.tracker.peak["upload"] == 1
    assert stages.tracker.calls["convert"] == 12


async def test_slow_convert_holds_back_fetching(tmp_path: Path) -> None:
    names = [f"img{i}" for i in range(10)]
    stages = toy(
        tmp_path, {name: {"p": [name.encode() * 100]} for name in names}, block=anyio.Event()
    )
    config = make_config(
        tmp_path,
        names,
        {"resolve": 1, "fetch": 1, "reuse": 1, "profile": 1, "convert": 1, "buffer": 0},
    )
    assert stages.block is not None
    async with anyio.create_task_group() as tg:
        tg.start_soon(Runner(config, stages).run)
        await stages.converting.wait()
        await anyio.sleep(0.2)
        # one layer in convert, at most one held by each earlier stage (buffers are 0)
        fetched_while_blocked = stages.tracker.calls["fetch"]
        stages.block.set()
    assert fetched_while_blocked <= 4
    assert stages.tracker.calls["fetch"] == 10


@pytest.mark.parametrize("stage", ["fetch", "convert", "upload"])
async def test_first_failure_cancels_the_run_with_one_error(tmp_path: Path, stage: str) -> None:
    bad = APP_A
    stages = toy(
        tmp_path,
        {"a": {"p": [BASE, bad]}, "b": {"p": [APP_B]}},
        fail_at=(stage, digest_of(bad)),
        delays={"finalize": 0.05},
    )
    bus = EventBus()
    subscription = bus.subscribe(max_buffer=10_000)
    with pytest.raises(PipelineError) as caught:
        await Runner(make_config(tmp_path, ["a", "b"]), stages, bus).run()
    error = caught.value
    assert error.stage == stage
    assert error.image == "local:///src/a"
    assert error.layer == digest_of(bad)
    assert isinstance(error.__cause__, FormatError)
    assert f"stage {stage}" in str(error)
    assert digest_of(bad) in str(error)
    assert not (tmp_path / "targets" / "out" / "a" / "index.json").exists()
    assert scratch_entries(tmp_path) == []
    events = [event async for event in subscription]
    assert isinstance(events[-1], PipelineDone)
    assert events[-1].error == str(error)


async def test_a_bug_keeps_its_type_and_traceback(tmp_path: Path) -> None:
    """Only expected failures (EsgzError) become a one-line PipelineError."""
    stages = toy(
        tmp_path,
        {"a": {"p": [BASE, APP_A]}},
        fail_at=("convert", digest_of(APP_A)),
        error=OverflowError,
    )
    bus = EventBus()
    subscription = bus.subscribe(max_buffer=10_000)
    with pytest.raises(OverflowError) as caught:
        await Runner(make_config(tmp_path, ["a"]), stages, bus).run()
    error = caught.value
    assert str(error) == "broken layer in convert"
    assert "toystages.py" in "".join(traceback.format_exception(error))
    assert error.__notes__ == [
        f"esgz: in image local:///src/a, layer {digest_of(APP_A)}, stage convert"
    ]
    assert scratch_entries(tmp_path) == []
    events = [event async for event in subscription]
    assert isinstance(events[-1], PipelineDone)
    assert events[-1].error == "OverflowError: broken layer in convert"


async def test_cancellation_removes_scratch_space_and_pushes_nothing(tmp_path: Path) -> None:
    stages = toy(tmp_path, {"a": {"p": [BASE, APP_A]}}, block=anyio.Event())
    async with anyio.create_task_group() as tg:
        tg.start_soon(Runner(make_config(tmp_path, ["a"]), stages).run)
        await stages.converting.wait()
        assert scratch_entries(tmp_path) != []
        tg.cancel_scope.cancel()
    assert scratch_entries(tmp_path) == []
    assert not (tmp_path / "targets" / "out" / "a").exists()


async def test_cache_disabled_leaves_no_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "sys-tmp"))
    (tmp_path / "sys-tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    stages = toy(tmp_path, {"a": {"p": [BASE]}})
    config = config_from_data(
        {
            "cache": {"enabled": False},
            "images": [{"source": "local:///src/a", "target": "local:///out/a"}],
        }
    )
    await Runner(config, stages).run()
    assert list((tmp_path / "sys-tmp").iterdir()) == []


async def test_shared_layers_are_fetched_and_converted_once(tmp_path: Path) -> None:
    stages = toy(
        tmp_path,
        {"a": {"p": [BASE, APP_A]}, "b": {"p": [BASE, APP_B]}, "c": {"p": [BASE]}},
        delays={"convert": 0.01},
    )
    result, events = await run_collecting(make_config(tmp_path, ["a", "b", "c"]), stages)
    fetched = [what for stage, what in stages.tracker.order if stage == "fetch"]
    converted = [what for stage, what in stages.tracker.order if stage == "convert"]
    assert fetched.count(digest_of(BASE)) == 1
    assert converted.count(digest_of(BASE)) == 1
    assert result.layers_converted == 3
    base_actions = [
        layer.action
        for image in result.images
        for layer in image.manifests[0].layers
        if layer.source_digest == digest_of(BASE)
    ]
    assert sorted(base_actions) == ["cached", "cached", "converted"]
    base_outputs = {
        layer.digest
        for image in result.images
        for layer in image.manifests[0].layers
        if layer.source_digest == digest_of(BASE)
    }
    assert len(base_outputs) == 1
    converted_events = [e for e in events if isinstance(e, LayerConverted)]
    assert len(converted_events) == 5


async def test_rerun_takes_conversions_from_the_cache(tmp_path: Path) -> None:
    catalog = {"a": {"p": [BASE, APP_A]}}
    first = await Runner(make_config(tmp_path, ["a"]), toy(tmp_path, catalog)).run()
    again = toy(tmp_path, catalog)
    second = await Runner(make_config(tmp_path, ["a"]), again).run()
    assert again.tracker.calls["convert"] == 0
    assert [layer.action for layer in second.images[0].manifests[0].layers] == ["cached"] * 2
    assert second.images[0].digest == first.images[0].digest


async def test_changed_options_miss_the_cache(tmp_path: Path) -> None:
    catalog = {"a": {"p": [BASE]}}
    await Runner(make_config(tmp_path, ["a"]), toy(tmp_path, catalog)).run()
    again = toy(tmp_path, catalog)
    await Runner(make_config(tmp_path, ["a"], compression_level=5), again).run()
    assert again.tracker.calls["convert"] == 1


async def test_reusable_layers_pass_through(tmp_path: Path) -> None:
    already = gzip.compress(b"already compressed", mtime=0)
    stages = toy(tmp_path, {"a": {"p": [already, APP_A]}})
    result, events = await run_collecting(make_config(tmp_path, ["a"], reuse=True), stages)
    actions = [layer.action for layer in result.images[0].manifests[0].layers]
    assert actions == ["reused", "converted"]
    assert result.images[0].manifests[0].layers[0].digest == digest_of(already)
    assert [e.layer for e in events if isinstance(e, LayerReused)] == [digest_of(already)]


async def test_reuse_is_decided_once_with_the_profile(tmp_path: Path) -> None:
    """A valid layer with prioritized files is rebuilt; one without passes through."""
    first = gzip.compress(b"first", mtime=0)
    second = gzip.compress(b"second", mtime=0)
    stages = toy(tmp_path, {"a": {"p": [first, second]}}, prioritized={0: ["etc/passwd"], 1: []})
    result, events = await run_collecting(make_config(tmp_path, ["a"], reuse=True), stages)
    actions = [layer.action for layer in result.images[0].manifests[0].layers]
    assert actions == ["converted", "reused"]
    (reused,) = [e for e in events if isinstance(e, LayerReused)]
    assert reused.layer == digest_of(second)
    assert reused.reason == "no access occur; copying without conversion; already gzip"


async def test_finalize_waits_for_every_layer_of_the_image(tmp_path: Path) -> None:
    stages = toy(
        tmp_path,
        {"a": {"p1": [BASE, APP_A], "p2": [APP_B]}},
        delays={"upload": 0.02},
    )
    await Runner(make_config(tmp_path, ["a"], reuse=False), stages).run()
    order = stages.tracker.order
    for platform, digests in {"p1": [BASE, APP_A], "p2": [APP_B]}.items():
        finalize_at = order.index(("finalize", platform))
        for data in digests:
            assert order.index(("upload", digest_of(data))) < finalize_at


async def test_manifest_without_layers_is_finalized(tmp_path: Path) -> None:
    stages = toy(tmp_path, {"empty": {"p": []}})
    result = await Runner(make_config(tmp_path, ["empty"]), stages).run()
    assert result.images[0].manifests[0].layers == ()
    assert (tmp_path / "targets" / "out" / "empty" / "index.json").exists()


async def test_cache_is_bounded_but_keeps_what_the_run_used(tmp_path: Path) -> None:
    catalog = {"a": {"p": [APP_A]}, "b": {"p": [APP_B]}}
    first = await Runner(make_config(tmp_path, ["a"]), toy(tmp_path, catalog)).run()
    small = make_config(tmp_path, ["b"]).model_copy(
        update={"cache": make_config(tmp_path, ["b"]).cache.model_copy(update={"max_size": 1})}
    )
    second = await Runner(small, toy(tmp_path, catalog)).run()
    blobs = tmp_path / "cache" / "blobs" / "sha256"
    remaining = {f"sha256:{path.name}" for path in blobs.iterdir()}
    used_by_b = {digest_of(APP_B), second.images[0].manifests[0].layers[0].digest}
    assert remaining == used_by_b
    assert first.images[0].manifests[0].layers[0].digest not in remaining


async def test_stale_scratch_of_killed_runs_is_removed(tmp_path: Path) -> None:
    import os
    import time

    from esgz.pipeline.cache import STALE_SCRATCH_SECONDS

    scratch = tmp_path / "cache" / "tmp"
    stale, fresh = scratch / "run-killedlongago", scratch / "run-stillrunning"
    for directory in (stale, fresh):
        (directory / "sub").mkdir(parents=True)
        (directory / "sub" / "partial").write_bytes(b"x")
    old = time.time() - STALE_SCRATCH_SECONDS - 60
    os.utime(stale, (old, old))
    await Runner(make_config(tmp_path, ["a"]), toy(tmp_path, {"a": {"p": [BASE]}})).run()
    assert sorted(p.name for p in scratch.iterdir()) == ["run-stillrunning"]


APP_C = b"app c " * 500


class RankedStages(ToyStages):
    """Toy stages whose ``linux/amd64`` manifest is profiled first (as the native one)."""

    profiled: list[str]

    async def resolve(self, image: ImageJob, ctx: RunContext) -> None:
        await super().resolve(image, ctx)
        for manifest in image.manifests:
            native = manifest.platform == "linux/amd64"
            manifest.profile_rank = 0 if native else 1 + manifest.index

    async def fetch(self, layer: LayerJob, ctx: RunContext) -> FetchedBlob:
        if layer.source.digest == digest_of(APP_B):  # the native manifest gathers last
            await anyio.sleep(0.2)
        return await super().fetch(layer, ctx)

    async def profile(self, manifest: ManifestJob, ctx: RunContext) -> Mapping[int, Sequence[str]]:
        self.profiled.append(manifest.platform or "")
        return await super().profile(manifest, ctx)


async def test_manifests_sharing_a_layer_are_profiled_in_rank_order(tmp_path: Path) -> None:
    catalog = {
        "a": {
            "linux/arm64": [BASE, APP_A],
            "linux/amd64": [BASE, APP_B],
            "linux/s390x": [APP_C],
        }
    }
    full = {f"local:///src/{name}": platforms for name, platforms in catalog.items()}
    stages = RankedStages(catalog=full, target_root=tmp_path / "targets")
    stages.profiled = []
    config = make_config(tmp_path, ["a"], concurrency={"profile": 2})
    result, _ = await run_collecting(config, stages)
    # arm64 gathered before amd64 but shares BASE with it, so it waits for its turn;
    # s390x shares nothing and does not wait
    assert stages.profiled.index("linux/amd64") < stages.profiled.index("linux/arm64")
    assert stages.profiled[0] == "linux/s390x"
    assert len(result.images[0].manifests) == 3
