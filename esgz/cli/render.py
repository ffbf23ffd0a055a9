"""Render pipeline events: progress bars, log lines, or JSON lines.

* ``text`` on a terminal: a live display on stderr, as ``docker pull`` draws one: a row
  per image, a row for a running workload (seconds elapsed of the period) and a row per
  layer with its phase (fetch, wait for profile, convert, upload, done), bytes done/total
  and rate; notable events are printed above it;
* ``text`` otherwise: one plain log line per notable event on stderr — a layer's phase
  changes and results, the start of a workload — never one per byte count;
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
from collections import deque
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, NamedTuple, Protocol

import anyio
import asyncclick as click

from esgz.pipeline.events import (
    BytesConverted,
    BytesFetched,
    BytesUploaded,
    Event,
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
    Subscription,
    WarningEvent,
    WorkloadOutput,
)

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live
    from rich.table import Table

__all__ = [
    "EventRenderer",
    "ImageState",
    "JsonRenderer",
    "LayerState",
    "NullRenderer",
    "ProgressBoard",
    "ProgressRenderer",
    "Row",
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


_PHASE_VERB = {"fetch": "fetching", "convert": "converting", "upload": "uploading"}

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
    if isinstance(event, LayerPhase):
        verb = _PHASE_VERB.get(event.phase)
        if verb is None:  # "wait": the fetch's own line follows
            return None
        size = f" ({_size(event.total)})" if event.total is not None else ""
        return f"{verb} {_short(event.layer)}{size}"
    if isinstance(event, ProfileProgress):
        on = f" ({event.platform})" if event.platform else ""
        return f"profiling {event.image}{on}: running the workload for up to {event.period:g}s"
    if isinstance(event, WorkloadOutput):
        return f"workload {event.stream}: {event.line}"
    if isinstance(event, PlatformExecution):
        on = f" {event.platform}" if event.platform else ""
        mode: str = event.execution
        if event.execution == "emulated":
            mode += f" by {event.emulator}"
        elif event.execution == "not profiled" and event.reason:
            mode += f": {event.reason}"
        return f"platform{on} of {event.image}: {mode}"
    if isinstance(event, ImageProfiled):
        parts = [part for part in (event.platform, _execution(event)) if part]
        on = f" ({', '.join(parts)})" if parts else ""
        if event.exit_status is None:
            ended = "did not start"
        elif event.stopped is not None:
            ended = _STOPPED.get(event.stopped, "stopped")
        else:
            ended = f"exited with code {event.exit_status}"
        counts = ", ".join(str(count) for count in event.prioritized)
        shared = "".join(
            f"; layer {index} keeps the files of {platform}"
            for index, platform in event.shared_from
        )
        return (
            f"profiled {event.image}{on} in {event.seconds:.1f}s: workload {ended};"
            f" {event.accessed} files accessed, prioritized per layer: [{counts}]{shared}"
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


def _execution(event: ImageProfiled) -> str:
    if event.execution == "emulated":
        return f"emulated by {event.emulator}" if event.emulator else "emulated"
    return ""


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
    """Plain log lines on stderr: one per notable event, none per byte count.

    A running workload gets a line when it starts (its first :class:`ProfileProgress`);
    its ticks are not logged.
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream

    async def consume(self, events: Subscription) -> None:
        """Print one line per notable event."""
        profiles: set[tuple[str, str | None]] = set()
        async for event in events:
            if isinstance(event, ProfileProgress):
                key = (event.image, event.platform)
                if key in profiles:
                    continue
                profiles.add(key)
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


_PHASE_LABEL = {
    "queued": "queued",
    "fetch": "fetch",
    "wait": "waiting",
    "convert": "convert",
    "converted": "converted",
    "upload": "upload",
    "done": "done",
}


class Row(NamedTuple):
    """One row of the terminal display; ``fraction`` (0..1) draws a bar, None none."""

    label: str
    phase: str
    fraction: float | None
    amount: str
    rate: str


class _Rate:
    """Bytes per second over the last few seconds of samples."""

    WINDOW = 3.0

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()

    def reset(self) -> None:
        """Forget the samples (a new phase, or a new quantity, starts)."""
        self._samples.clear()

    def add(self, now: float, count: int) -> None:
        """Record the cumulative ``count`` at time ``now``."""
        self._samples.append((now, count))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.WINDOW:
            self._samples.popleft()

    def per_second(self) -> float | None:
        """The rate over the window, or None before there are 0.2 s of samples."""
        if len(self._samples) < 2:
            return None
        (first_time, first), (last_time, last) = self._samples[0], self._samples[-1]
        if last_time - first_time < 0.2:
            return None
        return max(0, last - first) / (last_time - first_time)


@dataclass
class LayerState:
    """What one layer of one image is doing, as the events told."""

    layer: str
    phase: str = "queued"
    done: int = 0
    total: int | None = None
    written: int = 0
    note: str = ""
    rate: _Rate = dataclasses.field(default_factory=_Rate)

    def enter(self, phase: str, total: int | None = None, note: str = "") -> None:
        """Switch to ``phase`` (its byte counts start from zero)."""
        self.phase = phase
        self.done = 0
        self.written = 0
        self.total = total
        self.note = note
        self.rate.reset()

    def row(self, profiling: bool) -> Row:
        """This layer's row of the display."""
        label = f"  {_short(self.layer)}"
        phase = _PHASE_LABEL.get(self.phase, self.phase)
        if self.phase == "wait" and profiling:
            phase = "wait for profile"
        if self.phase not in ("fetch", "convert", "upload"):
            return Row(label, phase, 1.0 if self.phase == "done" else None, self.note, "")
        rate = self.rate.per_second()
        rate_text = f"{_size(round(rate))}/s" if rate is not None else ""
        fraction = None
        if self.total:
            fraction = min(1.0, self.done / self.total)
        if self.phase == "convert" and self.total is not None and self.done >= self.total:
            # the whole input is read (with prioritized files, before anything is
            # compressed): what moves now is the output
            amount = f"{_size(self.done)} read, {_size(self.written)} written"
            return Row(label, "compress", None, amount, rate_text)
        amount = _ratio(self.done, self.total)
        if self.phase == "convert" and self.written:
            amount += f" read, {_size(self.written)} written"
        return Row(label, phase, fraction, amount, rate_text)


@dataclass
class ImageState:
    """One image of the run: its layers, its profile, how far it is."""

    image: str
    target: str = ""
    layer_count: int | None = None
    total_size: int = 0
    started: float = 0.0
    layers: dict[str, LayerState] = dataclasses.field(default_factory=dict)
    outputs: dict[str, str] = dataclasses.field(default_factory=dict)
    profile: dict[str | None, tuple[float, float]] = dataclasses.field(default_factory=dict)
    profiled: dict[str | None, str] = dataclasses.field(default_factory=dict)
    done: str | None = None

    def layer(self, digest: str) -> LayerState:
        """The state of source layer ``digest`` (made on first sight)."""
        state = self.layers.get(digest)
        if state is None:
            state = self.layers[digest] = LayerState(digest)
        return state

    @property
    def profiling(self) -> bool:
        """Whether a workload of this image is running now."""
        return any(key not in self.profiled for key in self.profile)

    @property
    def finished_layers(self) -> int:
        """Layers that are at the target."""
        return self.count("done")

    def count(self, step: str) -> int:
        """Layers past ``step``: ``fetched``, ``converted`` or ``done``."""
        past = {
            "fetched": ("wait", "convert", "converted", "upload", "done"),
            "converted": ("converted", "upload", "done"),
            "done": ("done",),
        }[step]
        return sum(1 for state in self.layers.values() if state.phase in past)


class ProgressBoard:
    """The state a terminal display is drawn from, fed one event at a time.

    Kept apart from drawing so that it can be checked on a recorded event sequence:
    :meth:`apply` takes an event and the time it arrived, :meth:`lines` gives the rows
    (label, phase, bytes, rate) of the display at a given time.
    """

    def __init__(self) -> None:
        self.images: dict[str, ImageState] = {}

    def _image(self, name: str, now: float) -> ImageState:
        state = self.images.get(name)
        if state is None:
            state = self.images[name] = ImageState(name, started=now)
        return state

    def apply(self, event: Event, now: float) -> None:
        """Update the state with ``event``, received at ``now`` (monotonic seconds)."""
        if isinstance(event, PipelineDone) or not event.image:
            return
        image = self._image(event.image, now)
        if isinstance(event, ImageResolved):
            image.target = event.target
            image.layer_count = event.layers
            image.total_size = event.total_size
        elif isinstance(event, LayerPhase):
            image.layer(event.layer).enter(event.phase, event.total)
        elif isinstance(event, BytesFetched | BytesConverted):
            layer = image.layer(event.layer)
            phase = "fetch" if isinstance(event, BytesFetched) else "convert"
            if layer.phase != phase:
                layer.enter(phase, event.total)
            was_read = layer.total is not None and layer.done >= layer.total
            layer.done, layer.total = event.done, event.total
            if isinstance(event, BytesConverted):
                input_read = event.total is not None and event.done >= event.total
                if input_read and not was_read:
                    layer.rate.reset()  # from now on the rate is of the output written
                layer.written = event.written
                layer.rate.add(now, event.written if input_read else event.done)
            else:
                layer.rate.add(now, event.done)
        elif isinstance(event, BytesUploaded):
            layer = image.layer(image.outputs.get(event.layer, event.layer))
            if layer.phase != "upload":
                layer.enter("upload", event.total)
            layer.done, layer.total = event.done, event.total
            layer.rate.add(now, event.done)
        elif isinstance(event, LayerFetched):
            layer = image.layer(event.layer)
            if layer.phase in ("queued", "fetch"):
                how = "cached" if event.cached else "fetched"
                layer.enter("wait", note=f"{how} {_size(event.size)}")
            else:
                layer.note = f"fetched {_size(event.size)}"
        elif isinstance(event, LayerConverted):
            image.outputs[event.digest] = event.layer
            how = "cached" if event.cached else f"converted in {event.seconds:.1f}s"
            image.layer(event.layer).enter(
                "converted", note=f"{how}: {_size(event.source_size)} → {_size(event.size)}"
            )
        elif isinstance(event, LayerReused):
            image.outputs[event.layer] = event.layer
            image.layer(event.layer).enter("converted", note=f"reused ({event.reason})")
        elif isinstance(event, LayerUploaded):
            layer = image.layer(image.outputs.get(event.layer, event.layer))
            how = {"exists": "already at the target", "mounted": "mounted"}.get(
                event.outcome, "uploaded"
            )
            layer.enter("done", note=f"{how} ({_size(event.size)})")
        elif isinstance(event, ProfileProgress):
            image.profile[event.platform] = (event.elapsed, event.period)
        elif isinstance(event, ImageProfiled):
            how = f" ({_execution(event)})" if event.execution == "emulated" else ""
            image.profiled[event.platform] = (
                f"ran {event.seconds:.1f}s{how}, {event.accessed} files accessed"
            )
            image.profile.setdefault(event.platform, (event.seconds, event.seconds))
        elif isinstance(event, ImageDone):
            image.done = event.digest

    def lines(self, now: float) -> list[Row]:
        """The rows of the display at time ``now``.

        An image's row comes first (phase, layers fetched / converted / at the target,
        elapsed time), then its workload's row (seconds elapsed of the period) and its
        layers' rows, indented; a finished image keeps only its own row.
        """
        rows: list[Row] = []
        for image in self.images.values():
            target = f" → {_tail(image.target, 24)}" if image.target else ""
            label = f"{_tail(image.image, 24)}{target}"
            count = image.layer_count if image.layer_count is not None else len(image.layers)
            elapsed = _clock(now - image.started)
            if image.done is not None:
                rows.append(Row(label, "done", 1.0, f"{count}/{count} layers", elapsed))
                continue
            finished = image.finished_layers
            rows.append(
                Row(
                    label,
                    _image_phase(image),
                    finished / count if count else None,
                    f"{finished}/{count} layers done ({image.count('fetched')}/{count}"
                    f" fetched, {image.count('converted')}/{count} converted)",
                    elapsed,
                )
            )
            for platform, (seconds, period) in image.profile.items():
                profile_label = f"  profile {platform}" if platform else "  profile"
                ended = image.profiled.get(platform)
                if ended is not None:
                    rows.append(Row(profile_label, "done", 1.0, ended, ""))
                else:
                    fraction = min(1.0, seconds / period) if period > 0 else None
                    clock = f"{seconds:.1f}s / {period:g}s period"
                    rows.append(Row(profile_label, "workload running", fraction, clock, ""))
            for layer in image.layers.values():
                rows.append(layer.row(image.profiling))
        return rows


def _image_phase(image: ImageState) -> str:
    if image.profiling:
        return "profiling"
    phases = {layer.phase for layer in image.layers.values()}
    for phase in ("convert", "upload", "fetch"):
        if phase in phases:
            return {"convert": "converting", "upload": "uploading", "fetch": "fetching"}[phase]
    if image.layers and phases <= {"done"}:
        return "writing manifest"
    return "waiting" if image.layers else "resolving"


def _ratio(done: int, total: int | None) -> str:
    """``45.2/214.0 MiB``: both counts in the unit of the total."""
    if total is None:
        return _size(done)
    value, unit = _scaled(total)
    scale = total / value if value else 1.0
    if unit == "B":
        return f"{done}/{total} B"
    return f"{done / scale:.1f}/{value:.1f} {unit}"


def _scaled(size: int) -> tuple[float, str]:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return value, unit
        value /= 1024
    raise AssertionError("unreachable")


def _tail(text: str, width: int) -> str:
    """``text``, or its last ``width`` characters after an ellipsis."""
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


class ProgressRenderer:
    """A live display on a terminal, like ``docker pull``'s.

    One row per image (phase, layers done, elapsed time), under it one row for a
    running workload (seconds elapsed of the period) and one per layer: its phase
    (fetch, waiting / wait for profile, convert, converted, upload, done) with bytes
    done/total and rate. Notable events (warnings, workload output, profile summaries,
    images done) are printed above the display; the display is redrawn a few times a
    second (every ``refresh`` seconds at least) and removed at the end.

    (rich is imported only when this renderer is made: the other outputs do not need it.)
    """

    BAR = 16

    def __init__(self, console: Console | None = None, refresh: float = 0.25) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.refresh = refresh
        self.board = ProgressBoard()
        self._summary: list[str] = []

    def _table(self) -> Table:
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        width = self.console.width
        bars = width >= 110  # on a narrow terminal the numbers matter more than bars
        table = Table.grid(padding=(0, 2))
        # the label column fits at least a layer's "  sha256:<12 hex>"
        least = len("  sha256:") + 12
        table.add_column(
            no_wrap=True,
            overflow="ellipsis",
            min_width=least,
            max_width=max(least, min(52, width // 3)),
        )
        table.add_column(no_wrap=True, min_width=len("wait for profile"))
        if bars:
            table.add_column(no_wrap=True, width=self.BAR)
        table.add_column(no_wrap=True, overflow="ellipsis")
        table.add_column(no_wrap=True, justify="right", min_width=10)
        for row in self.board.lines(time.monotonic()):
            cells: list[RenderableType] = [row.label, row.phase]
            if bars:
                bar = ProgressBar(total=1.0, completed=row.fraction or 0.0, width=self.BAR)
                cells.append("" if row.fraction is None else bar)
            cells += [row.amount, row.rate]
            table.add_row(*cells)
        return table

    async def consume(self, events: Subscription) -> None:
        """Drive the display until the run ends."""
        from rich.live import Live

        with Live(self._table(), console=self.console, auto_refresh=False, transient=True) as live:
            last_draw = 0.0
            while True:
                event: Event | None = None
                with anyio.move_on_after(self.refresh):
                    try:
                        event = await events.receive()
                    except anyio.EndOfStream:
                        break
                if event is not None:
                    self._note(live, event)
                now = time.monotonic()
                if event is None or now - last_draw >= self.refresh / 2:
                    live.update(self._table(), refresh=True)
                    last_draw = now
        for line in self._summary:
            self.console.print(line, highlight=False)

    def _note(self, live: Live, event: Event) -> None:
        self.board.apply(event, time.monotonic())
        line = describe(event)
        notable = (
            WarningEvent
            | ImageDone
            | LayerReused
            | WorkloadOutput
            | ImageProfiled
            | PlatformExecution
        )
        if isinstance(event, notable) and line is not None:
            live.update(self._table())  # redrawn below the line with this event applied
            live.console.print(line, highlight=False)
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
