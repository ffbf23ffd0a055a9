"""The event bus: fan-out, bounded buffers, merging progress, never dropping the rest."""

from __future__ import annotations

import anyio
import pytest

from esgz.pipeline.events import (
    BytesFetched,
    BytesUploaded,
    EventBus,
    ImageDone,
    LayerConverted,
    PipelineDone,
    WarningEvent,
)

pytestmark = pytest.mark.anyio


def done(image: str) -> ImageDone:
    return ImageDone(
        image=image,
        target="t",
        digest="sha256:" + "0" * 64,
        layers_converted=1,
        layers_reused=0,
        layers_cached=0,
    )


async def test_every_subscriber_gets_every_event_in_order() -> None:
    bus = EventBus()
    first, second = bus.subscribe(), bus.subscribe()
    events = [WarningEvent(image="a", message="m"), done("a"), done("b")]
    for event in events:
        bus.publish(event)
    bus.close()
    assert [e async for e in first] == events
    assert [e async for e in second] == events


async def test_progress_is_merged_per_layer_and_dropped_when_full() -> None:
    bus = EventBus()
    slow = bus.subscribe(max_buffer=3)
    for done_bytes in range(100):
        bus.publish(BytesFetched(image="a", layer="l1", done=done_bytes, total=99))
        bus.publish(BytesUploaded(image="a", layer="l1", done=done_bytes, total=99))
    assert slow.pending() == 2
    bus.publish(BytesFetched(image="a", layer="l2", done=1, total=2))
    bus.publish(BytesFetched(image="a", layer="l3", done=1, total=2))  # full: dropped
    for index in range(10):
        bus.publish(done(f"img{index}"))  # terminal events go past the bound
    bus.publish(PipelineDone(image="", images_done=10, seconds=1.0))
    bus.close()
    received = [e async for e in slow]
    progress = [e for e in received if isinstance(e, BytesFetched | BytesUploaded)]
    assert [(type(e), e.layer, e.done) for e in progress] == [
        (BytesFetched, "l1", 99),
        (BytesUploaded, "l1", 99),
        (BytesFetched, "l2", 1),
    ]
    assert [e.image for e in received if isinstance(e, ImageDone)] == [f"img{i}" for i in range(10)]
    assert isinstance(received[-1], PipelineDone)
    assert slow.dropped == 2 * 99 + 1


async def test_publishing_never_waits_for_a_reader() -> None:
    bus = EventBus()
    unread = bus.subscribe(max_buffer=1)
    for index in range(10_000):
        # publish is a plain function: it cannot wait; the progress stays one slot
        assert bus.publish(BytesFetched(image="a", layer="l", done=index, total=None)) is None
    assert unread.pending() == 1
    for index in range(100):
        bus.publish(
            LayerConverted(
                image="a",
                layer=f"l{index}",
                source_size=1,
                digest="d",
                size=1,
                toc_digest=None,
                cached=False,
                seconds=0.0,
            )
        )
    assert unread.pending() == 101


async def test_reader_wakes_up_for_new_events_and_ends_on_close() -> None:
    bus = EventBus()
    subscription = bus.subscribe()
    received: list[object] = []

    async def read() -> None:
        async for event in subscription:
            received.append(event)

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        await anyio.sleep(0.01)
        bus.publish(done("a"))
        await anyio.sleep(0.01)
        assert received == [done("a")]
        bus.close()
    assert received == [done("a")]


async def test_unsubscribed_and_late_subscribers() -> None:
    bus = EventBus()
    async with bus.subscribe() as gone:
        pass
    bus.publish(done("a"))
    assert gone.pending() == 0
    bus.close()
    late = bus.subscribe()
    assert [e async for e in late] == []
