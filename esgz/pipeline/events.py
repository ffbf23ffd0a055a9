"""Typed progress events and the bus that fans them out to subscribers.

The pipeline publishes events without ever waiting on a subscriber: each subscriber has
its own bounded buffer. Byte-progress events (:class:`ProgressEvent`) carry cumulative
counts, so a newer one replaces the pending (unread) one for the same
(kind, image, layer), keeping its place in the queue, and, when the buffer is full, a
new one without a pending slot is dropped — the next one carries the total anyway.
Every other event (resolved, profiled, workload output, reused, converted, pushed, done,
warnings) is delivered,
even past the bound: there are only a few per layer.

Subscribers iterate a :class:`Subscription` (``async for event in sub``); iteration ends
once the bus is closed and the buffer drained.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from esgz.registry.client import PushOutcome

__all__ = [
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
    "LayerReused",
    "LayerUploaded",
    "PipelineDone",
    "ProgressEvent",
    "Subscription",
    "WarningEvent",
    "WorkloadOutput",
]


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
class BytesFetched(ProgressEvent):
    """Bytes of a source layer fetched so far."""


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
class ImageProfiled(Event):
    """The workload ran on one manifest (platform) of the image.

    ``exit_status`` is None if it never started (128+N: killed by signal N); ``stopped``
    says why it was stopped — ``"period"`` (the period ended), ``"line"``
    (``wait_on_line`` matched), ``"signal"`` (``wait_on_signal``) — or is None if it
    exited by itself; ``accessed``: files of the rootfs it read; ``prioritized``: per
    layer, how many of them that layer serves.
    """

    platform: str | None
    exit_status: int | None
    stopped: str | None
    accessed: int
    prioritized: tuple[int, ...]
    seconds: float


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


def _progress_key(event: ProgressEvent) -> _ProgressKey:
    return (type(event), event.image, event.layer)


@dataclass(eq=False)
class Subscription:
    """One subscriber's bounded view of the events (an async iterator)."""

    max_buffer: int
    _queue: deque[Event | _ProgressKey] = field(default_factory=deque)
    _progress: dict[_ProgressKey, ProgressEvent] = field(default_factory=dict)
    _wakeup: anyio.Event | None = None
    _closed: bool = False
    _bus: EventBus | None = None
    dropped: int = 0

    def _offer(self, event: Event) -> None:
        if isinstance(event, ProgressEvent):
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
