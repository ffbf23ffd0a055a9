"""Render pipeline events: progress bars, log lines, or JSON lines.

* ``text`` on a terminal: rich progress bars (one per image, one per layer transfer) on
  stderr, with notable events printed above them;
* ``text`` otherwise: one plain log line per notable event on stderr;
* ``json``: every event as one JSON object per line on stdout (for CI), with an
  ``event`` field naming its type in snake_case;
* ``--quiet``: nothing but errors and the result.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import time
from typing import IO, TYPE_CHECKING, Any, Protocol

import asyncclick as click

from esgz.pipeline.events import (
    BytesFetched,
    BytesUploaded,
    Event,
    ImageDone,
    ImageProfiled,
    ImagePushed,
    ImageResolved,
    LayerConverted,
    LayerFetched,
    LayerReused,
    LayerUploaded,
    PipelineDone,
    Subscription,
    WarningEvent,
    WorkloadOutput,
)

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

__all__ = [
    "EventRenderer",
    "JsonRenderer",
    "NullRenderer",
    "ProgressRenderer",
    "TextRenderer",
    "describe",
    "event_to_json",
    "make_renderer",
]


class EventRenderer(Protocol):
    """Consumes a subscription until the run ends."""

    async def consume(self, events: Subscription) -> None:
        """Render every event of ``events``."""


def _short(digest: str) -> str:
    algorithm, _, hex_part = digest.partition(":")
    return f"{algorithm}:{hex_part[:12]}" if hex_part else digest


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


_STOPPED = {
    "period": "stopped at the end of the period",
    "line": "stopped on the --wait-on-line match",
    "signal": "stopped on a signal (--wait-on-signal)",
}


def describe(event: Event) -> str | None:
    """A one-line, human-readable description of a notable event (None: not notable)."""
    if isinstance(event, ImageResolved):
        platforms = ", ".join(p for p in event.platforms if p) or "single manifest"
        return (
            f"resolved {event.image}: {event.layers} layers, {_size(event.total_size)}"
            f" ({platforms})"
        )
    if isinstance(event, WorkloadOutput):
        return f"workload {event.stream}: {event.line}"
    if isinstance(event, ImageProfiled):
        on = f" ({event.platform})" if event.platform else ""
        if event.exit_status is None:
            ended = "did not start"
        elif event.stopped is not None:
            ended = _STOPPED.get(event.stopped, "stopped")
        else:
            ended = f"exited with code {event.exit_status}"
        counts = ", ".join(str(count) for count in event.prioritized)
        return (
            f"profiled {event.image}{on} in {event.seconds:.1f}s: workload {ended};"
            f" {event.accessed} files accessed, prioritized per layer: [{counts}]"
        )
    if isinstance(event, LayerFetched):
        return f"fetched {_short(event.layer)} ({_size(event.size)})"
    if isinstance(event, LayerReused):
        return f'reusing "{event.layer}" without conversion ({event.reason})'
    if isinstance(event, LayerConverted):
        how = "found in cache" if event.cached else f"converted in {event.seconds:.1f}s"
        return (
            f"{how}: {_short(event.layer)} → {_short(event.digest)}"
            f" ({_size(event.source_size)} → {_size(event.size)})"
        )
    if isinstance(event, LayerUploaded):
        how = {"exists": "already present", "mounted": "mounted"}.get(event.outcome, "uploaded")
        return f"{how}: {_short(event.layer)} ({_size(event.size)})"
    if isinstance(event, ImagePushed):
        what = f"manifest for {event.platform}" if event.platform else "manifest"
        return f"wrote {what} {event.digest} to {event.target}"
    if isinstance(event, ImageDone):
        return (
            f"done: {event.target}@{event.digest} (converted {event.layers_converted},"
            f" cached {event.layers_cached}, reused {event.layers_reused})"
        )
    if isinstance(event, WarningEvent):
        where = f" ({_short(event.layer)})" if event.layer else ""
        return f"warning: {event.image}{where}: {event.message}"
    if isinstance(event, PipelineDone):
        if event.error is not None:
            return None
        return f"{event.images_done} image(s) done in {event.seconds:.1f}s"
    return None


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def event_to_json(event: Event) -> str:
    """The JSON line for ``event``: ``{"event": "layer_converted", "time": …, …fields}``."""
    data: dict[str, Any] = {"event": _snake(type(event).__name__), "time": round(time.time(), 3)}
    for field in dataclasses.fields(event):
        value = getattr(event, field.name)
        data[field.name] = list(value) if isinstance(value, tuple) else value
    return json.dumps(data, separators=(",", ":"))


class NullRenderer:
    """Renders nothing (``--quiet``)."""

    async def consume(self, events: Subscription) -> None:
        """Drain the events."""
        async for _ in events:
            pass


class TextRenderer:
    """Plain log lines on stderr."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream

    async def consume(self, events: Subscription) -> None:
        """Print one line per notable event."""
        async for event in events:
            line = describe(event)
            if line is not None:
                click.echo(f"esgz: {line}", file=self.stream or sys.stderr)


class JsonRenderer:
    """Every event as a JSON line on stdout."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream

    async def consume(self, events: Subscription) -> None:
        """Print one JSON object per event."""
        async for event in events:
            click.echo(event_to_json(event), file=self.stream or sys.stdout)


class ProgressRenderer:
    """rich progress bars on a terminal: one per image (layers done), one per transfer.

    (rich is imported only when this renderer is made: the other outputs do not need it.)
    """

    def __init__(self, console: Console | None = None) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self._images: dict[str, TaskID] = {}
        self._transfers: dict[tuple[str, str, str], TaskID] = {}
        self._summary: list[str] = []

    async def consume(self, events: Subscription) -> None:
        """Drive the progress display until the run ends."""
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        with progress:
            async for event in events:
                self._update(progress, event)
        for event_line in self._summary:
            self.console.print(event_line, highlight=False)

    def _update(self, progress: Progress, event: Event) -> None:
        if isinstance(event, ImageResolved):
            self._images[event.image] = progress.add_task(
                f"{event.image} → {event.target}", total=event.layers
            )
        elif isinstance(event, BytesFetched | BytesUploaded):
            verb = "fetch" if isinstance(event, BytesFetched) else "push"
            key = (verb, event.image, event.layer)
            task = self._transfers.get(key)
            if task is None:
                task = progress.add_task(f"  {verb} {_short(event.layer)}", total=event.total)
                self._transfers[key] = task
            progress.update(task, completed=event.done, total=event.total)
        elif isinstance(event, LayerFetched | LayerUploaded):
            verb = "fetch" if isinstance(event, LayerFetched) else "push"
            task = self._transfers.pop((verb, event.image, event.layer), None)
            if task is not None:
                progress.remove_task(task)
        elif isinstance(event, LayerConverted | LayerReused):
            image_task = self._images.get(event.image)
            if image_task is not None:
                progress.advance(image_task)
        line = describe(event)
        notable = WarningEvent | ImageDone | LayerReused | WorkloadOutput | ImageProfiled
        if isinstance(event, notable) and line is not None:
            progress.console.print(line, highlight=False)
        if isinstance(event, PipelineDone) and line is not None:
            self._summary = [line]


def make_renderer(log_format: str, quiet: bool) -> EventRenderer:
    """The renderer for the output options and the kind of stderr."""
    if log_format == "json":
        return JsonRenderer()
    if quiet:
        return NullRenderer()
    if sys.stderr.isatty():
        return ProgressRenderer()
    return TextRenderer()
