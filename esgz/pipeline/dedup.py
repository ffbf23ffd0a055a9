"""Run an async computation once per key; concurrent callers share its result.

The runner keys fetches by source digest, conversions by
:class:`~esgz.pipeline.cache.ConversionKey` and uploads by (target, digest), so work on a
layer shared by several images happens once per run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio

__all__ = ["OnceMap"]

K = TypeVar("K")
V = TypeVar("V")


@dataclass
class _Entry(Generic[V]):
    done: anyio.Event = field(default_factory=anyio.Event)
    value: V | None = None
    failed: bool = False


class OnceMap(Generic[K, V]):
    """Run an async computation once per key; concurrent callers share the result.

    A failed computation fails the whole run, so callers waiting on it just wait
    until they are cancelled.
    """

    def __init__(self) -> None:
        self._entries: dict[K, _Entry[V]] = {}
        self.computed = 0
        self.shared = 0

    async def get(self, key: K, compute: Callable[[], Awaitable[V]]) -> tuple[V, bool]:
        """The value for ``key`` and whether it came from another caller."""
        entry = self._entries.get(key)
        if entry is not None:
            self.shared += 1
            await entry.done.wait()
            if entry.failed:
                await anyio.sleep_forever()
            assert entry.value is not None
            return entry.value, True
        entry = _Entry()
        self._entries[key] = entry
        try:
            entry.value = await compute()
        except BaseException:
            entry.failed = True
            raise
        finally:
            entry.done.set()
        self.computed += 1
        return entry.value, False
