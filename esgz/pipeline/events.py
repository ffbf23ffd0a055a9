"""Typed progress events and the bus that fans them out to subscribers.

The pipeline publishes events without ever waiting on a subscriber: each subscriber has
its own bounded buffer. Progress events — byte counts (:class:`ProgressEvent`: fetched,
converted, uploaded) and the workload's clock (:class:`ProfileProgress`) — carry
cumulative values, so a newer one replaces the pending (unread) one for the same
(kind, image, layer or platform), keeping its place in the queue, and, when the buffer is
full, a new one without a pending slot is dropped — the next one carries the total
anyway. Every other event (resolved, layer phases, profiled, workload output, reused,
converted, pushed, done, warnings) is delivered, even past the bound: there are only a
few per layer.

A layer's life is told by :class:`LayerPhase` events (``fetch`` → ``wait`` →
``convert`` → ``upload``), each followed by byte progress of that phase and ended by
the phase's result event (:class:`LayerFetched`, :class:`LayerConverted`,
:class:`LayerUploaded`). Publishers of byte progress throttle it
(:class:`ProgressThrottle`, :func:`publish_progress_while`) to a few events a second
per layer, so progress stays cheap whatever the transfer's chunk size.

Subscribers iterate a :class:`Subscription` (``async for event in sub``); iteration ends
once the bus is closed and the buffer drained.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Literal, TypeVar

import anyio

from esgz.registry.model import PushOutcome  # at run time too: get_type_hints resolves it

__all__ = [
    "PROFILE_TICK",
    "PROGRESS_INTERVAL",
    "BytesConverted",
    "BytesFetched",
    "BytesUploaded",
    "Event",
    "EventBus",
    "ImageDone",
    "ImageProfiled",
    "ImagePushed",
    "ImageResolved",
    "LayerConverted",
    "LayerFetched",
    "LayerPhase",
    "LayerPhaseName",
    "LayerReused",
    "LayerUploaded",
    "PipelineDone",
    "PlatformExecution",
    "ProfileExecution",
    "ProfileProgress",
    "ProgressEvent",
    "ProgressThrottle",
    "Subscription",
    "WarningEvent",
    "WorkloadOutput",
    "publish_progress_while",
]

#: Seconds between two byte-progress events of one layer (at most ~10 a second).
PROGRESS_INTERVAL: Final = 0.1
#: Seconds between two :class:`ProfileProgress` events of a running workload.
PROFILE_TICK: Final = 0.5

#: The phases of a layer, in order: ``fetch`` (the source blob is being pulled), ``wait``
#: (fetched; waiting for the manifest's other layers and, when it runs, the workload),
#: ``convert`` (being rewritten), ``upload`` (being pushed / written to the target).
LayerPhaseName = Literal["fetch", "wait", "convert", "upload"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of all events; ``image`` is the source reference as configured."""

    image: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ProgressEvent(Event):
    """Cumulative byte progress of one layer; may be merged or dropped under pressure."""

    layer: str
    done: int
    total: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageResolved(Event):
    """The source image was resolved to manifests and layers."""

    target: str
    platforms: tuple[str, ...]
    layers: int
    total_size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerPhase(Event):
    """Layer ``layer`` (the source digest) entered ``phase``.

    ``total`` is the number of bytes the phase works through when known (the source size
    for ``fetch`` and ``convert``, the output size for ``upload``), else None. Work shared
    between images (a blob fetched, converted or uploaded once) is announced once, for
    the image that does it.
    """

    layer: str
    phase: LayerPhaseName
    total: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BytesFetched(ProgressEvent):
    """Bytes of a source layer fetched so far."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BytesConverted(ProgressEvent):
    """Bytes of a source layer (as stored: compressed) the conversion has read so far.

    ``written`` is the number of bytes of the output blob written so far: with
    prioritized files the whole input is read first and compressed afterwards, so
    ``written`` is what moves in that second half.
    """

    written: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerFetched(Event):
    """A source layer is available locally (``cached``: it already was)."""

    layer: str
    size: int
    cached: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerReused(Event):
    """A layer is passed through without conversion (already eStargz / zstd:chunked)."""

    layer: str
    size: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkloadOutput(Event):
    """One line the profiled workload wrote on ``stream`` (``stdout`` or ``stderr``)."""

    stream: str
    line: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfileProgress(Event):
    """The workload of one manifest is being profiled: ``elapsed`` of ``period`` seconds.

    Published about every :data:`PROFILE_TICK` seconds from the start of the profile
    step (``elapsed`` counts from there, so it includes unpacking the layers and
    starting the container) until :class:`ImageProfiled`. The workload may end before
    ``period`` (it exits, ``wait_on_line`` matches) or run a little past it while it is
    being stopped.
    """

    platform: str | None
    elapsed: float
    period: float


#: How the workload of a platform runs: on this CPU, under a binfmt_misc emulator, or not
#: at all (the platform's layers get ``.no.prefetch.landmark``).
ProfileExecution = Literal["native", "emulated", "not profiled"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PlatformExecution(Event):
    """How the workload of one selected platform will run, decided at resolve.

    Published for each manifest of an image whose workload runs. ``execution``:
    ``"native"``, ``"emulated"`` (``emulator``: the binfmt_misc handler, e.g.
    ``qemu-aarch64``) or ``"not profiled"`` (``reason`` says why; ``emulator`` names the
    handler that would be needed, if any).
    """

    platform: str | None
    execution: ProfileExecution
    emulator: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageProfiled(Event):
    """The workload ran on one manifest (platform) of the image.

    ``exit_status`` is None if it never started (128+N: killed by signal N); ``stopped``
    says why it was stopped — ``"period"`` (the period ended), ``"line"``
    (``wait_on_line`` matched), ``"signal"`` (``wait_on_signal``) — or is None if it
    exited by itself; ``accessed``: files of the rootfs it read; ``prioritized``: per
    layer, how many of them that layer serves (a layer shared with a platform profiled
    earlier keeps that platform's files: ``shared_from`` maps its index to that
    platform). ``execution`` is ``"native"`` or ``"emulated"`` (by ``emulator``).
    """

    platform: str | None
    exit_status: int | None
    stopped: str | None
    accessed: int
    prioritized: tuple[int, ...]
    seconds: float
    execution: ProfileExecution = "native"
    emulator: str | None = None
    shared_from: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerConverted(Event):
    """A layer was converted (``cached``: the conversion came from the cache)."""

    layer: str
    source_size: int
    digest: str
    size: int
    toc_digest: str | None
    cached: bool
    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class BytesUploaded(ProgressEvent):
    """Bytes of an output layer uploaded so far."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerUploaded(Event):
    """An output layer is at the target: it ``"exists"``, was ``"mounted"`` or ``"uploaded"``."""

    layer: str
    size: int
    outcome: PushOutcome


@dataclass(frozen=True, slots=True, kw_only=True)
class ImagePushed(Event):
    """A manifest (one platform) or the image index was pushed / written."""

    target: str
    digest: str
    media_type: str
    platform: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageDone(Event):
    """An image is complete at its target."""

    target: str
    digest: str
    layers_converted: int
    layers_reused: int
    layers_cached: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WarningEvent(Event):
    """Something the user should know; the run continues."""

    message: str
    layer: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PipelineDone(Event):
    """The run ended; ``error`` is the one-line failure, or None on success."""

    images_done: int
    seconds: float
    error: str | None = None


_ProgressKey = tuple[type, str, str]
_Cumulative = ProgressEvent | ProfileProgress


def _progress_key(event: _Cumulative) -> _ProgressKey:
    if isinstance(event, ProfileProgress):
        return (type(event), event.image, event.platform or "")
    return (type(event), event.image, event.layer)


@dataclass(eq=False)
class Subscription:
    """One subscriber's bounded view of the events (an async iterator)."""

    max_buffer: int
    _queue: deque[Event | _ProgressKey] = field(default_factory=deque)
    _progress: dict[_ProgressKey, _Cumulative] = field(default_factory=dict)
    _wakeup: anyio.Event | None = None
    _closed: bool = False
    _bus: EventBus | None = None
    dropped: int = 0

    def _offer(self, event: Event) -> None:
        if isinstance(event, ProgressEvent | ProfileProgress):
            key = _progress_key(event)
            if key in self._progress:
                # merged: the newest count is delivered at the older event's position
                self._progress[key] = event
                self.dropped += 1
                return
            if len(self._queue) >= self.max_buffer:
                self.dropped += 1
                return
            self._progress[key] = event
            self._queue.append(key)
        else:
            self._queue.append(event)
        if self._wakeup is not None:
            self._wakeup.set()

    def _close(self) -> None:
        self._closed = True
        if self._wakeup is not None:
            self._wakeup.set()

    def pending(self) -> int:
        """Number of events waiting to be read."""
        return len(self._queue)

    async def receive(self) -> Event:
        """The next event; :class:`anyio.EndOfStream` once closed and drained."""
        while not self._queue:
            if self._closed:
                raise anyio.EndOfStream
            self._wakeup = anyio.Event()
            await self._wakeup.wait()
        item = self._queue.popleft()
        if isinstance(item, tuple):
            return self._progress.pop(item)
        return item

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    def unsubscribe(self) -> None:
        """Stop receiving events; pending ones are discarded."""
        if self._bus is not None:
            self._bus._remove(self)
        self._queue.clear()
        self._progress.clear()
        self._close()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.unsubscribe()


class EventBus:
    """Fan events out to subscribers without blocking the publisher."""

    def __init__(self) -> None:
        self._subscribers: list[Subscription] = []
        self._closed = False

    def subscribe(self, max_buffer: int = 256) -> Subscription:
        """A new subscription; it sees every event published from now on."""
        if max_buffer < 1:
            raise ValueError("max_buffer must be at least 1")
        subscription = Subscription(max_buffer=max_buffer, _bus=self)
        if self._closed:
            subscription._close()
        else:
            self._subscribers.append(subscription)
        return subscription

    def publish(self, event: Event) -> None:
        """Deliver ``event`` to every subscriber; never blocks."""
        for subscription in self._subscribers:
            subscription._offer(event)

    def close(self) -> None:
        """No more events: subscribers finish once they have drained their buffers."""
        self._closed = True
        for subscription in self._subscribers:
            subscription._close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def _remove(self, subscription: Subscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)


T = TypeVar("T")


class ProgressThrottle:
    """Publish a transfer's cumulative byte counts at most once per ``interval``.

    Call it with ``(done, total)`` as often as the transfer likes, on the event loop's
    thread (as the registry client's and the endpoints' progress callbacks are): it
    publishes ``make(done, total)`` for the first call, then at most every ``interval``
    seconds, and always for the final count (``done == total``). :meth:`flush`
    publishes a count that was held back.
    """

    def __init__(
        self,
        bus: EventBus,
        make: Callable[[int, int | None], Event],
        interval: float = PROGRESS_INTERVAL,
    ) -> None:
        self._bus = bus
        self._make = make
        self._interval = interval
        self._last_time: float | None = None
        self._last: tuple[int, int | None] | None = None
        self._held: tuple[int, int | None] | None = None

    def __call__(self, done: int, total: int | None) -> None:
        """Take the newest count; publish it unless one was published too recently."""
        now = time.monotonic()
        final = total is not None and done >= total
        recent = self._last_time is not None and now - self._last_time < self._interval
        if (recent and not final) or self._last == (done, total):
            self._held = None if self._last == (done, total) else (done, total)
            return
        self._publish(done, total, now)

    def flush(self) -> None:
        """Publish the newest count if it was held back."""
        if self._held is not None:
            self._publish(*self._held, time.monotonic())

    def _publish(self, done: int, total: int | None, now: float) -> None:
        self._last_time = now
        self._last = (done, total)
        self._held = None
        self._bus.publish(self._make(done, total))


async def publish_progress_while(
    bus: EventBus,
    work: Callable[[], Awaitable[T]],
    sample: Callable[[], Event | None],
    interval: float = PROGRESS_INTERVAL,
) -> T:
    """Await ``work()``; meanwhile publish ``sample()`` every ``interval`` seconds.

    For work whose progress is counted where events cannot be published (a worker
    thread) or that only has a clock (a running workload): ``sample`` reads the current
    state and returns the event to publish, or None for nothing new; an event equal to
    the previous one is not published again. Once ``work`` succeeds, the final sample is
    published (if new). ``work``'s result or exception is passed through unchanged; the
    ticking stops as soon as it ends.
    """
    failure: Exception | None = None
    results: list[T] = []
    previous: list[Event | None] = [None]

    def publish_sample() -> None:
        event = sample()
        if event is not None and event != previous[0]:
            bus.publish(event)
            previous[0] = event

    async def tick() -> None:
        while True:
            await anyio.sleep(interval)
            publish_sample()

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        try:
            results.append(await work())
        except Exception as exc:  # re-raised as is, outside the task group
            failure = exc
        finally:
            tg.cancel_scope.cancel()
    if failure is not None:
        raise failure
    publish_sample()
    return results[0]
