"""Blocking work in a worker thread that a cancelled caller can stop."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

__all__ = ["run_stoppable"]

T = TypeVar("T")


class _NotStarted(Exception):
    """The caller was cancelled before the worker thread began (never seen by callers)."""


async def run_stoppable(work: Callable[[threading.Event], T]) -> T:
    """Run ``work(stop)`` in a worker thread; cancelling the caller sets ``stop``.

    ``work`` must check ``stop`` regularly and end soon after it is set (usually by
    raising). If the thread had begun, the cancellation waits, shielded, until it has
    ended, so nothing it writes outlives the caller; if it had not begun, it never will.
    """
    stop = threading.Event()
    finished = threading.Event()
    # Whether the thread began: a cancellation that arrives while the call still waits
    # for a thread must not wait for work that never starts.
    state = threading.Lock()
    started = False

    def run() -> T:
        nonlocal started
        with state:
            if stop.is_set():
                raise _NotStarted
            started = True
        try:
            return work(stop)
        finally:
            finished.set()

    try:
        return await anyio.to_thread.run_sync(run, abandon_on_cancel=True)
    except anyio.get_cancelled_exc_class():
        with state:
            stop.set()
            must_wait = started
        if must_wait:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(finished.wait)
        raise
