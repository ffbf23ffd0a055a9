"""The event bus: fan-out, bounded buffers, merging progress, never dropping the rest;
the helpers that keep progress cheap: the throttle and the sampler of threaded work."""

from __future__ import annotations

import threading
import time

import anyio
import anyio.to_thread
import pytest

from esgz.pipeline.events import (
    BytesConverted,
    BytesFetched,
    BytesUploaded,
    Event,
    EventBus,
    ImageDone,
    LayerConverted,
    PipelineDone,
    ProfileProgress,
    ProgressThrottle,
    WarningEvent,
    publish_progress_while,
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


def fetched(done: int, total: int | None) -> BytesFetched:
    return BytesFetched(image="a", layer="l", done=done, total=total)


class RecordingBus(EventBus):
    """A bus that also keeps everything published (subscribers see progress merged)."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[Event] = []

    def publish(self, event: Event) -> None:
        self.published.append(event)
        super().publish(event)


async def test_profile_ticks_are_merged_per_manifest() -> None:
    bus = EventBus()
    slow = bus.subscribe(max_buffer=2)
    for tick in range(20):
        for platform in ("linux/amd64", "linux/arm64"):
            bus.publish(
                ProfileProgress(image="a", platform=platform, elapsed=tick / 2, period=10.0)
            )
    bus.close()
    received = [e async for e in slow]
    assert [(e.platform, e.elapsed) for e in received if isinstance(e, ProfileProgress)] == [
        ("linux/amd64", 9.5),
        ("linux/arm64", 9.5),
    ]


async def test_throttle_publishes_the_first_the_final_and_a_few_between() -> None:
    bus = RecordingBus()
    throttle = ProgressThrottle(bus, fetched, interval=0.05)
    total = 3_000
    started = time.monotonic()
    for done_bytes in range(1, total + 1):
        throttle(done_bytes, total)
        if done_bytes % 100 == 0:
            await anyio.sleep(0.002)  # a transfer's chunks arrive over time
    seconds = time.monotonic() - started
    throttle(total, total)  # a repeated final count is not published twice
    counts = [e.done for e in bus.published if isinstance(e, BytesFetched)]
    assert counts[0] == 1
    assert counts[-1] == total
    assert counts == sorted(set(counts))
    # at most one per interval, plus the first and the final
    assert len(counts) <= seconds / 0.05 + 2
    assert len(counts) >= 2


async def test_throttle_flush_publishes_a_held_back_count() -> None:
    bus = RecordingBus()
    throttle = ProgressThrottle(bus, fetched, interval=60)
    throttle(1, None)
    throttle(5, None)  # too soon: held back
    throttle.flush()
    throttle.flush()  # nothing held any more
    assert [e.done for e in bus.published if isinstance(e, BytesFetched)] == [1, 5]


async def test_progress_of_threaded_work_is_sampled_while_it_runs() -> None:
    bus = RecordingBus()
    counts = [0]
    calls = [0]

    def work_in_thread() -> str:
        for _ in range(30):
            counts[0] += 10
            time.sleep(0.01)
        return "result"

    def sample() -> Event:
        calls[0] += 1
        return BytesConverted(image="a", layer="l", done=counts[0], total=300, written=0)

    result = await publish_progress_while(
        bus, lambda: anyio.to_thread.run_sync(work_in_thread), sample, interval=0.05
    )
    assert result == "result"
    calls_at_end = calls[0]
    await anyio.sleep(0.15)
    assert calls[0] == calls_at_end  # the ticking stopped with the work
    counts_seen = [e.done for e in bus.published if isinstance(e, BytesConverted)]
    assert counts_seen[-1] == 300  # the final count is published once the work is done
    assert 2 <= len(counts_seen) <= 30
    assert counts_seen == sorted(set(counts_seen))  # unchanged samples are not repeated


async def test_failing_or_cancelled_work_passes_through_unchanged() -> None:
    bus = EventBus()
    subscription = bus.subscribe()

    def sample() -> Event:
        return fetched(1, 2)

    async def fail() -> None:
        await anyio.sleep(0.02)
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):  # not wrapped in an exception group
        await publish_progress_while(bus, fail, sample, interval=0.005)

    stop = threading.Event()
    with anyio.move_on_after(0.05) as scope:
        await publish_progress_while(
            bus, lambda: anyio.to_thread.run_sync(stop.wait, abandon_on_cancel=True), sample
        )
    stop.set()
    assert scope.cancelled_caught
    bus.close()
    assert all(isinstance(e, BytesFetched) for e in [e async for e in subscription])
