"""Rendering of pipeline events: text lines, JSON lines, rich progress."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from esgz.cli.render import JsonRenderer, ProgressRenderer, TextRenderer, describe, event_to_json
from esgz.pipeline.events import (
    BytesFetched,
    BytesUploaded,
    Event,
    EventBus,
    ImageDone,
    ImagePushed,
    ImageResolved,
    LayerConverted,
    LayerFetched,
    LayerReused,
    LayerUploaded,
    PipelineDone,
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
