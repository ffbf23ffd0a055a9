"""Termination signals handled like Ctrl-C, and signal handlers that survive nesting.

:func:`cancel_on_signals` turns SIGTERM (what ``timeout``, systemd and Kubernetes send)
and SIGHUP (the terminal went away) into the cancellation of a cancel scope — the same
path as Ctrl-C, so every mount, container, network namespace and temp dir is torn down
by its owner — and remembers which signal it was. Further signals while cleaning up are
ignored (SIGKILL still works; the next run sweeps what a killed run left).

:func:`preserving_signal_handlers` restores the handlers that were installed before a
block that replaces them (``anyio.open_signal_receiver`` resets a signal to its default
action when it closes, which would drop the handlers above).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

import anyio
import sniffio

__all__ = ["TERMINATING_SIGNALS", "Termination", "cancel_on_signals", "preserving_signal_handlers"]

#: The signals :func:`cancel_on_signals` handles by default.
TERMINATING_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGHUP)

_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


@dataclass
class Termination:
    """Which signal, if any, cancelled the scope of :func:`cancel_on_signals`."""

    signum: int | None = None

    @property
    def name(self) -> str:
        """``SIGTERM``, ``SIGHUP``, ... (empty if no signal arrived)."""
        return signal.Signals(self.signum).name if self.signum is not None else ""

    @property
    def exit_code(self) -> int:
        """The shell convention for a process ended by the signal: 128 + its number."""
        return 128 + (self.signum or 0)


def _scheduler() -> Callable[[Callable[[], object]], object]:
    """A function that runs a callback soon in the current event loop, from a handler."""
    if sniffio.current_async_library() == "trio":
        import trio

        token = trio.lowlevel.current_trio_token()
        return token.run_sync_soon
    import asyncio

    loop = asyncio.get_running_loop()
    return lambda callback: loop.call_soon_threadsafe(callback)


@contextmanager
def cancel_on_signals(
    scope: anyio.CancelScope, signals: Sequence[signal.Signals] = TERMINATING_SIGNALS
) -> Iterator[Termination]:
    """Cancel ``scope`` on the first of ``signals``; yield what arrived.

    Call it in the event loop's thread; outside the main thread (where Python cannot
    handle signals) it does nothing. The previous handlers come back on exit.
    """
    termination = Termination()
    if threading.current_thread() is not threading.main_thread():
        yield termination
        return
    schedule = _scheduler()

    def handle(signum: int, _frame: FrameType | None) -> None:
        if termination.signum is None:
            termination.signum = signum
            schedule(scope.cancel)

    with preserving_signal_handlers(*signals):
        for signum in signals:
            signal.signal(signum, handle)
        yield termination


@contextmanager
def preserving_signal_handlers(*signals: signal.Signals) -> Iterator[None]:
    """Put the current handlers of ``signals`` back when the block ends (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved: dict[signal.Signals, _Handler] = {s: signal.getsignal(s) for s in signals}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            if handler is not None:
                signal.signal(signum, handler)
