"""Rendering of pipeline events: text lines, JSON lines, the terminal display.

The terminal display is checked on a recorded event sequence: its state at chosen
moments (:class:`ProgressBoard`), and what the renderer draws while the events arrive.
"""

from __future__ import annotations

import io
import json

import anyio
import pytest
from rich.console import Console

from esgz.cli.render import (
    JsonRenderer,
    ProgressBoard,
    ProgressRenderer,
    Row,
    TextRenderer,
    describe,
    event_to_json,
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
    WarningEvent,
)

pytestmark = pytest.mark.anyio

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
RUN: list[Event] = [
    ImageResolved(
        image="src", target="dst", platforms=("linux/amd64",), layers=2, total_size=3 << 20
    ),
    BytesFetched(image="src", layer=D1, done=1 << 20, total=2 << 20),
    LayerFetched(image="src", layer=D1, size=2 << 20, cached=False),
    LayerReused(image="src", layer=D2, size=1 << 20, reason="already estargz"),
    LayerConverted(
        image="src",
        layer=D1,
        source_size=2 << 20,
        digest=D2,
        size=1 << 20,
        toc_digest=D1,
        cached=False,
        seconds=0.25,
    ),
    BytesUploaded(image="src", layer=D2, done=10, total=20),
    LayerUploaded(image="src", layer=D2, size=1 << 20, outcome="uploaded"),
    WarningEvent(image="src", message="careful", layer=D1),
    ImagePushed(image="src", target="dst", digest=D1, media_type="m", platform="linux/amd64"),
    ImageDone(
        image="src", target="dst", digest=D1, layers_converted=1, layers_reused=1, layers_cached=0
    ),
    PipelineDone(image="", images_done=1, seconds=1.5),
]


async def render(renderer: TextRenderer | JsonRenderer | ProgressRenderer) -> None:
    bus = EventBus()
    subscription = bus.subscribe(max_buffer=100)
    for event in RUN:
        bus.publish(event)
    bus.close()
    await renderer.consume(subscription)


def test_descriptions() -> None:
    lines = {type(event).__name__: describe(event) for event in RUN}
    assert lines["BytesFetched"] is None
    assert lines["LayerReused"] == f'reusing "{D2}" without conversion (already estargz)'
    assert lines["LayerConverted"] == (
        "converted in 0.2s: sha256:111111111111 → sha256:222222222222 (2.0 MiB → 1.0 MiB)"
    )
    assert lines["WarningEvent"] == "warning: src (sha256:111111111111): careful"
    assert lines["PipelineDone"] == "1 image(s) done in 1.5s"
    assert describe(PipelineDone(image="", images_done=0, seconds=1, error="boom")) is None


def test_descriptions_of_platform_execution() -> None:
    native = PlatformExecution(image="src", platform="linux/amd64", execution="native")
    emulated = PlatformExecution(
        image="src", platform="linux/arm64", execution="emulated", emulator="qemu-aarch64"
    )
    skipped = PlatformExecution(
        image="src",
        platform="linux/s390x",
        execution="not profiled",
        emulator="qemu-s390x",
        reason="no binfmt_misc handler for s390x is registered",
    )
    assert describe(native) == "platform linux/amd64 of src: native"
    assert describe(emulated) == "platform linux/arm64 of src: emulated by qemu-aarch64"
    assert describe(skipped) == (
        "platform linux/s390x of src: not profiled: no binfmt_misc handler for s390x is registered"
    )
    profiled = ImageProfiled(
        image="src",
        platform="linux/arm64",
        exit_status=0,
        stopped=None,
        accessed=3,
        prioritized=(1, 0, 2),
        seconds=3.25,
        execution="emulated",
        emulator="qemu-aarch64",
        shared_from=((2, "linux/amd64"),),
    )
    assert describe(profiled) == (
        "profiled src (linux/arm64, emulated by qemu-aarch64) in 3.2s: workload exited with"
        " code 0; 3 files accessed, prioritized per layer: [1, 0, 2]; layer 2 keeps the"
        " files of linux/amd64"
    )
    data = json.loads(event_to_json(skipped))
    assert data["event"] == "platform_execution"
    assert data["execution"] == "not profiled"
    assert data["emulator"] == "qemu-s390x"


def test_json_lines() -> None:
    data = json.loads(event_to_json(RUN[0]))
    assert data["event"] == "image_resolved"
    assert data["platforms"] == ["linux/amd64"]
    assert data["total_size"] == 3 << 20
    assert json.loads(event_to_json(RUN[-1]))["event"] == "pipeline_done"


async def test_text_and_json_renderers() -> None:
    text = io.StringIO()
    await render(TextRenderer(text))
    lines = text.getvalue().splitlines()
    assert len(lines) == sum(1 for event in RUN if describe(event) is not None)
    assert all(line.startswith("esgz: ") for line in lines)
    out = io.StringIO()
    await render(JsonRenderer(out))
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == [
        event_to_json(event).split('"', 4)[3] for event in RUN
    ]


async def test_progress_renderer_on_a_terminal() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120, color_system=None)
    await render(ProgressRenderer(console))
    output = screen.getvalue()
    assert "careful" in output
    assert "done: dst@" in output
    assert output.rstrip().endswith("1 image(s) done in 1.5s")


# A recorded optimize run of a 2-layer image, with the second each event arrived at: the
# big layer is fetched, both wait for the workload, then they are converted and uploaded.
MIB = 1 << 20
BIG, SMALL = "sha256:" + "a" * 64, "sha256:" + "b" * 64
BIG_OUT, SMALL_OUT = "sha256:" + "c" * 64, "sha256:" + "d" * 64
BIG_SIZE, SMALL_SIZE = 214 * MIB, 2 * MIB


def convert_bytes(layer: str, done: int, total: int, written: int) -> BytesConverted:
    return BytesConverted(image="src", layer=layer, done=done, total=total, written=written)


def converted(layer: str, source: int, digest: str, size: int) -> LayerConverted:
    return LayerConverted(
        image="src",
        layer=layer,
        source_size=source,
        digest=digest,
        size=size,
        toc_digest=None,
        cached=False,
        seconds=13.0,
    )


RECORDED: list[tuple[float, Event]] = [
    (
        0.0,
        ImageResolved(image="src", target="dst", platforms=("",), layers=2, total_size=216 * MIB),
    ),
    (0.0, LayerPhase(image="src", layer=BIG, phase="fetch", total=BIG_SIZE)),
    (0.0, LayerPhase(image="src", layer=SMALL, phase="fetch", total=SMALL_SIZE)),
    (0.0, BytesFetched(image="src", layer=BIG, done=0, total=BIG_SIZE)),
    (0.1, BytesFetched(image="src", layer=SMALL, done=SMALL_SIZE, total=SMALL_SIZE)),
    (0.1, LayerPhase(image="src", layer=SMALL, phase="wait")),
    (0.1, LayerFetched(image="src", layer=SMALL, size=SMALL_SIZE, cached=False)),
    (1.0, BytesFetched(image="src", layer=BIG, done=31 * MIB + MIB // 2, total=BIG_SIZE)),
    # -- 1.0 s: "mid-fetch"
    (4.0, BytesFetched(image="src", layer=BIG, done=BIG_SIZE, total=BIG_SIZE)),
    (4.0, LayerPhase(image="src", layer=BIG, phase="wait")),
    (4.0, LayerFetched(image="src", layer=BIG, size=BIG_SIZE, cached=False)),
    (4.0, ProfileProgress(image="src", platform="linux/amd64", elapsed=0.0, period=10.0)),
    (10.5, ProfileProgress(image="src", platform="linux/amd64", elapsed=6.5, period=10.0)),
    # -- 10.5 s: "profiling"
    (14.5, ProfileProgress(image="src", platform="linux/amd64", elapsed=10.5, period=10.0)),
    (
        14.5,
        ImageProfiled(
            image="src",
            platform="linux/amd64",
            exit_status=137,
            stopped="period",
            accessed=42,
            prioritized=(40, 2),
            seconds=10.5,
        ),
    ),
    (14.5, LayerPhase(image="src", layer=BIG, phase="convert", total=BIG_SIZE)),
    (14.5, LayerPhase(image="src", layer=SMALL, phase="convert", total=SMALL_SIZE)),
    (14.6, convert_bytes(SMALL, SMALL_SIZE, SMALL_SIZE, SMALL_SIZE + 4096)),
    (14.6, converted(SMALL, SMALL_SIZE, SMALL_OUT, SMALL_SIZE + 4096)),
    (14.6, LayerPhase(image="src", layer=SMALL, phase="upload", total=SMALL_SIZE + 4096)),
    (14.7, BytesUploaded(image="src", layer=SMALL_OUT, done=MIB, total=SMALL_SIZE + 4096)),
    (15.5, convert_bytes(BIG, 10 * MIB, BIG_SIZE, 0)),
    (16.5, convert_bytes(BIG, 40 * MIB, BIG_SIZE, 0)),
    # -- 16.5 s: "converting" (input read at 30 MiB/s; nothing written yet)
    (18.0, convert_bytes(BIG, BIG_SIZE, BIG_SIZE, 10 * MIB)),
    (20.0, convert_bytes(BIG, BIG_SIZE, BIG_SIZE, 50 * MIB)),
    # -- 20.0 s: "compressing" (all read; 20 MiB/s written)
    (27.5, convert_bytes(BIG, BIG_SIZE, BIG_SIZE, 200 * MIB)),
    (27.5, converted(BIG, BIG_SIZE, BIG_OUT, 200 * MIB)),
    (27.6, LayerUploaded(image="src", layer=SMALL_OUT, size=SMALL_SIZE + 4096, outcome="uploaded")),
    (27.6, LayerPhase(image="src", layer=BIG, phase="upload", total=200 * MIB)),
    (27.6, BytesUploaded(image="src", layer=BIG_OUT, done=0, total=200 * MIB)),
    (28.6, BytesUploaded(image="src", layer=BIG_OUT, done=100 * MIB, total=200 * MIB)),
    # -- 28.6 s: "uploading"
    (29.6, BytesUploaded(image="src", layer=BIG_OUT, done=200 * MIB, total=200 * MIB)),
    (29.6, LayerUploaded(image="src", layer=BIG_OUT, size=200 * MIB, outcome="uploaded")),
    (29.7, ImagePushed(image="src", target="dst", digest=D1, media_type="m", platform=None)),
    (
        29.7,
        ImageDone(
            image="src",
            target="dst",
            digest=D1,
            layers_converted=2,
            layers_reused=0,
            layers_cached=0,
        ),
    ),
    (29.8, PipelineDone(image="", images_done=1, seconds=29.8)),
]


def board_at(moment: float) -> list[Row]:
    board = ProgressBoard()
    for at, event in RECORDED:
        if at <= moment:
            board.apply(event, at)
    return board.lines(moment)


def rows(moment: float) -> dict[str, tuple[str, str, str]]:
    return {row.label.strip(): (row.phase, row.amount, row.rate) for row in board_at(moment)}


SHORT_BIG, SHORT_SMALL = "sha256:aaaaaaaaaaaa", "sha256:bbbbbbbbbbbb"


def test_board_while_fetching() -> None:
    lines = rows(1.0)
    assert lines["src → dst"] == (
        "fetching",
        "0/2 layers done (1/2 fetched, 0/2 converted)",
        "0:01",
    )
    assert lines[SHORT_BIG] == ("fetch", "31.5/214.0 MiB", "31.5 MiB/s")
    assert lines[SHORT_SMALL] == ("waiting", "fetched 2.0 MiB", "")
    big = next(row for row in board_at(1.0) if row.label.strip() == SHORT_BIG)
    assert big.fraction == pytest.approx(31.5 / 214)


def test_board_while_profiling() -> None:
    lines = rows(10.5)
    assert lines["src → dst"][0] == "profiling"
    assert lines["profile linux/amd64"] == ("workload running", "6.5s / 10s period", "")
    assert lines[SHORT_BIG] == ("wait for profile", "fetched 214.0 MiB", "")
    assert lines[SHORT_SMALL] == ("wait for profile", "fetched 2.0 MiB", "")


def test_board_while_converting_uploading_and_compressing() -> None:
    lines = rows(16.5)
    assert lines["src → dst"] == (
        "converting",
        "0/2 layers done (2/2 fetched, 1/2 converted)",
        "0:16",
    )
    assert lines["profile linux/amd64"] == ("done", "ran 10.5s, 42 files accessed", "")
    assert lines[SHORT_BIG] == ("convert", "40.0/214.0 MiB", "30.0 MiB/s")
    assert lines[SHORT_SMALL] == ("upload", "1.0/2.0 MiB", "")  # one sample: no rate yet
    # prioritized files: the input is read first, then compressed: the output moves
    assert rows(20.0)[SHORT_BIG] == ("compress", "214.0 MiB read, 50.0 MiB written", "20.0 MiB/s")


def test_board_while_uploading_and_when_done() -> None:
    lines = rows(28.6)
    assert lines[SHORT_SMALL] == ("done", "uploaded (2.0 MiB)", "")
    assert lines[SHORT_BIG] == ("upload", "100.0/200.0 MiB", "100.0 MiB/s")
    assert lines["src → dst"][1] == "1/2 layers done (2/2 fetched, 2/2 converted)"
    assert [tuple(row) for row in board_at(29.8)] == [
        ("src → dst", "done", 1.0, "2/2 layers", "0:29")
    ]


async def test_progress_renderer_draws_layer_rows_while_events_arrive() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=150, color_system=None)
    bus = EventBus()
    subscription = bus.subscribe(max_buffer=1000)

    async def replay() -> None:
        previous = 0.0
        for at, event in RECORDED:
            if at > previous:
                # each step of the recording is read (the renderer then waits for more),
                # then drawn (its 10 ms timer fires before this 30 ms one) before the next
                await anyio.wait_all_tasks_blocked()
                assert subscription.pending() == 0
                await anyio.sleep(0.03)
                previous = at
            bus.publish(event)
        bus.close()

    async with anyio.create_task_group() as tg:
        tg.start_soon(replay)
        await ProgressRenderer(console, refresh=0.01).consume(subscription)
    output = screen.getvalue()
    for text in (
        "sha256:aaaaaaaaaaaa",
        "31.5/214.0 MiB",
        "wait for profile",
        "6.5s / 10s period",
        "40.0/214.0 MiB",
        "100.0/200.0 MiB",
    ):
        assert text in output, text
    assert "profiled src (linux/amd64) in 10.5s" in output  # printed above the display
    assert output.rstrip().endswith("1 image(s) done in 29.8s")


async def test_log_lines_name_phases_not_bytes() -> None:
    bus = EventBus()
    subscription = bus.subscribe(max_buffer=1000)
    for _, event in RECORDED:
        bus.publish(event)
    bus.close()
    text = io.StringIO()
    await TextRenderer(text).consume(subscription)
    lines = [line.removeprefix("esgz: ") for line in text.getvalue().splitlines()]
    assert "fetching sha256:aaaaaaaaaaaa (214.0 MiB)" in lines
    assert "converting sha256:bbbbbbbbbbbb (2.0 MiB)" in lines
    assert "uploading sha256:aaaaaaaaaaaa (200.0 MiB)" in lines
    profiling = [line for line in lines if line.startswith("profiling ")]
    assert profiling == ["profiling src (linux/amd64): running the workload for up to 10s"]
    assert not any("/s" in line or "/214.0" in line for line in lines)  # no byte counts
