"""Public entry points: convert one layer blob to eStargz or zstd:chunked.

:func:`convert_layer` is blocking and writes ``dst`` sequentially; :func:`convert_layer_file`
is its async, file-to-file form (work in a worker thread, output written to a temporary
file in the destination directory and renamed into place; on error or cancellation the
temporary file is removed and ``dst`` is left untouched).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, cast

import anyio

from esgz.estargz.options import ConvertOptions, LayerResult
from esgz.estargz.writer import PreparedLayer, prepare_layer, write_layer
from esgz.threads import run_stoppable

__all__ = [
    "ConvertProgress",
    "PendingPreparation",
    "convert_layer",
    "convert_layer_file",
    "finish_layer_file",
    "prepare_layer_file",
]

#: ``progress(read, written)``: bytes read from the source file and written to the output
#: so far, never decreasing; called from the conversion's threads (one at a time), so it
#: must be cheap and must not touch the event loop.
ConvertProgress = Callable[[int, int], None]

_DEFAULT_OPTIONS = ConvertOptions()


def convert_layer(
    src: BinaryIO, dst: BinaryIO, options: ConvertOptions = _DEFAULT_OPTIONS
) -> LayerResult:
    """Read a layer (gzip, zstd or plain tar) from ``src``; write the converted blob to ``dst``.

    The input is read once, front to back; ``dst`` is only written (never sought or read).
    Raises :class:`~esgz.errors.FormatError` for input that cannot be converted faithfully
    and :class:`~esgz.errors.ConfigError` (from :class:`ConvertOptions`) for bad options.
    """
    return write_layer(src, dst, options)


class _Counter:
    """Bytes read and written by one conversion, reported in order to a callback.

    The source is read by the decompressing thread and the output written by the
    converting one; the lock keeps the reported pairs from ever going backwards.
    """

    def __init__(self, progress: ConvertProgress) -> None:
        self._progress = progress
        self._lock = threading.Lock()
        self._read = 0
        self._written = 0

    def add(self, read: int, written: int) -> None:
        with self._lock:
            self._read += read
            self._written += written
            self._progress(self._read, self._written)


class _CountedReader:
    def __init__(self, file: BinaryIO, counter: _Counter) -> None:
        self._file = file
        self._counter = counter

    def read(self, size: int = -1, /) -> bytes:
        data = self._file.read(size)
        self._counter.add(len(data), 0)
        return data


class _CountedWriter:
    def __init__(self, file: BinaryIO, counter: _Counter) -> None:
        self._file = file
        self._counter = counter

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        written = self._file.write(data)
        self._counter.add(0, written)
        return written


def _convert_file(
    src: Path,
    dst: Path,
    options: ConvertOptions,
    cancel: threading.Event,
    progress: ConvertProgress | None = None,
) -> LayerResult:
    temp = dst.with_name(f".{dst.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(src, "rb") as source, open(temp, "wb") as target:
            if progress is None:
                result = write_layer(source, target, options, cancel)
            else:
                counter = _Counter(progress)
                # write_layer only calls read() on its source and write() on its target
                reader = cast(BinaryIO, _CountedReader(source, counter))
                writer = cast(BinaryIO, _CountedWriter(target, counter))
                result = write_layer(reader, writer, options, cancel)
            target.flush()
            os.fsync(target.fileno())
        os.replace(temp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    return result


async def convert_layer_file(
    src: Path,
    dst: Path,
    options: ConvertOptions = _DEFAULT_OPTIONS,
    *,
    progress: ConvertProgress | None = None,
) -> LayerResult:
    """Convert the layer file ``src`` into ``dst`` (atomically) without blocking the loop.

    Cancelling the caller stops the conversion at the next entry or compression batch and
    removes the temporary output before the cancellation propagates. ``progress`` is
    called (from worker threads) after every read of ``src`` and write of the output.
    """
    return await run_stoppable(
        lambda cancel: _convert_file(Path(src), Path(dst), options, cancel, progress)
    )


async def prepare_layer_file(src: Path, options: ConvertOptions) -> PreparedLayer:
    """:func:`~esgz.estargz.writer.prepare_layer` of the layer file ``src``, in a worker
    thread (stopped like :func:`convert_layer_file` when the caller is cancelled): the
    members are compressed while the order is not known yet; :func:`finish_layer_file`
    writes the blob."""

    def work(cancel: threading.Event) -> PreparedLayer:
        with open(src, "rb") as source:
            return prepare_layer(source, options, cancel)

    return await run_stoppable(work)


async def finish_layer_file(
    prepared: PreparedLayer,
    dst: Path,
    prioritized: tuple[str, ...],
    *,
    progress: ConvertProgress | None = None,
) -> LayerResult:
    """Write ``prepared`` with ``prioritized`` files first into ``dst`` (atomically, like
    :func:`convert_layer_file`); ``progress`` sees the output bytes written."""

    def work(cancel: threading.Event) -> LayerResult:
        temp = dst.with_name(f".{dst.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with open(temp, "wb") as target:
                writer: BinaryIO = target
                if progress is not None:
                    writer = cast(BinaryIO, _CountedWriter(target, _Counter(progress)))
                result = prepared.finish(writer, prioritized, cancel)
                target.flush()
                os.fsync(target.fileno())
            os.replace(temp, dst)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            raise
        return result

    return await run_stoppable(work)


class PendingPreparation:
    """A layer file being prepared in the background (:func:`prepare_layer_file`), for a
    conversion to pick up once its order is known. Run :meth:`run` in a task group;
    :meth:`take` waits for it."""

    def __init__(self, src: Path, options: ConvertOptions) -> None:
        self.src = src
        self.options = options
        self._done = anyio.Event()
        self._prepared: PreparedLayer | None = None

    async def run(self) -> None:
        """Prepare the layer; a failure only leaves nothing to take (a conversion from
        scratch then reports it)."""
        try:
            self._prepared = await prepare_layer_file(self.src, self.options)
        except Exception as exc:
            logging.getLogger(__name__).debug("preparing %s failed: %s", self.src, exc)
        finally:
            self._done.set()

    async def take(self) -> PreparedLayer | None:
        """The prepared layer once :meth:`run` ended (None if it failed or was taken)."""
        await self._done.wait()
        prepared, self._prepared = self._prepared, None
        return prepared
