"""Blob byte streams: re-sendable upload bodies, a verifying writer for downloads.

:class:`FileSliceStream` is an httpx request body reading ``length`` bytes of a file from
``offset``, :class:`BytesStream` one from memory; both can be iterated again, so a request
can be repeated (after a ``401`` or a transient failure) without buffering the body.
:class:`VerifyingBlobWriter` writes a download to a temp file next to its destination while
hashing and counting it, and only renames it into place once digest and size match: a blob
is never left half-written under its final name.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO

import anyio
import httpx
from anyio.streams.memory import MemoryObjectReceiveStream

from esgz.errors import VerificationError
from esgz.oci.digest import DigestingWriter

__all__ = ["READ_SIZE", "BytesStream", "FileSliceStream", "VerifyingBlobWriter"]

#: Bytes read from a file (or gathered from the network) per worker-thread call.
READ_SIZE = 1 << 20


class FileSliceStream(httpx.AsyncByteStream):
    """``length`` bytes of ``path`` from ``offset``, as a repeatable httpx request body.

    Each iteration starts again at ``offset``. No file stays open between chunks (each
    read opens, seeks and reads in a worker thread), so an iteration abandoned half-way
    by a dropped connection leaves nothing to clean up.
    """

    def __init__(
        self,
        path: Path,
        offset: int,
        length: int,
        *,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        self.path = path
        self.offset = offset
        self.length = length
        self._on_bytes = on_bytes

    def __aiter__(self) -> _FileSliceIterator:
        return _FileSliceIterator(self)


class _FileSliceIterator:
    """One pass over a :class:`FileSliceStream`."""

    def __init__(self, stream: FileSliceStream) -> None:
        self._stream = stream
        self._position = stream.offset
        self._end = stream.offset + stream.length

    def __aiter__(self) -> _FileSliceIterator:
        return self

    async def __anext__(self) -> bytes:
        remaining = self._end - self._position
        if remaining <= 0:
            raise StopAsyncIteration
        chunk = await anyio.to_thread.run_sync(
            _read_at_sync, self._stream.path, self._position, min(READ_SIZE, remaining)
        )
        if not chunk:
            raise VerificationError(
                f"{self._stream.path} ended {remaining} bytes before the expected size"
            )
        self._position += len(chunk)
        if self._stream._on_bytes is not None:
            self._stream._on_bytes(len(chunk))
        return chunk


class BytesStream(httpx.AsyncByteStream):
    """A small in-memory request body (a manifest, a config) that can be sent more than once."""

    def __init__(self, content: bytes) -> None:
        self._content = content

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._content


def _read_at_sync(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as stream:
        stream.seek(offset)
        return stream.read(size)


class VerifyingBlobWriter:
    """Download sink: temp file + on-the-fly digest/size check + rename on success.

    Use as an async context manager; the temp file is removed on exit unless
    :meth:`commit` moved it into place. Bytes are gathered into ``READ_SIZE`` buffers and
    written and hashed in a worker thread, overlapping with the network (:meth:`receive`).
    """

    def __init__(self, destination: Path, digest: str, size: int | None) -> None:
        self.destination = destination
        self.digest = digest
        self.size = size
        self._temp = destination.with_name(f".{destination.name}.{secrets.token_hex(4)}.partial")
        self._file: BinaryIO | None = None
        self._checker = DigestingWriter(expected_digest=digest)

    @property
    def written(self) -> int:
        """Bytes in the file so far (where a resumed download starts)."""
        return self._checker.size

    async def __aenter__(self) -> VerifyingBlobWriter:
        def open_temp_sync() -> BinaryIO:
            self.destination.parent.mkdir(parents=True, exist_ok=True)
            return self._temp.open("wb")

        self._file = await anyio.to_thread.run_sync(open_temp_sync)
        self._checker = DigestingWriter(self._file, expected_digest=self.digest)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._close_and_remove_sync)

    def _close_and_remove_sync(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        with contextlib.suppress(FileNotFoundError):
            self._temp.unlink()

    async def receive(
        self,
        chunks: AsyncIterable[bytes],
        on_received: Callable[[int], None] | None = None,
    ) -> None:
        """Take ``chunks`` to their end, appending them to what was written so far.

        The network side gathers ``READ_SIZE`` buffers while a worker thread writes and
        hashes the previous one. ``on_received(total_bytes)`` is called per chunk. More
        bytes than the expected size raise :class:`VerificationError` once the stream
        has been read to its end (abandoning httpx's iterators half-way would leave
        async generators for the garbage collector). If the stream fails, :attr:`written`
        tells how much reached the file, which is where a resumed download starts.
        """
        send, receive = anyio.create_memory_object_stream[bytes](1)
        received = self.written
        overflow = False
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._write_all, receive)
                async with send:
                    buffer = bytearray()
                    async for chunk in chunks:
                        if overflow or (
                            self.size is not None and received + len(chunk) > self.size
                        ):
                            overflow = True
                            continue
                        received += len(chunk)
                        buffer += chunk
                        if on_received is not None:
                            on_received(received)
                        if len(buffer) >= READ_SIZE:
                            await send.send(bytes(buffer))
                            buffer.clear()
                    if buffer:
                        await send.send(bytes(buffer))
        except BaseExceptionGroup as group_error:
            raise group_error.exceptions[0] from None
        if overflow:
            raise VerificationError(
                f"blob is larger than the expected {self.size} bytes", layer=self.digest
            )

    async def _write_all(self, buffers: MemoryObjectReceiveStream[bytes]) -> None:
        async with buffers:
            async for data in buffers:
                await anyio.to_thread.run_sync(self._write_and_hash_sync, data)

    def _write_and_hash_sync(self, data: bytes) -> None:
        self._checker.write(data)

    async def restart(self) -> None:
        """Drop everything written (the server ignored a Range request)."""

        def truncate_sync() -> None:
            assert self._file is not None
            self._file.seek(0)
            self._file.truncate()

        await anyio.to_thread.run_sync(truncate_sync)
        self._checker = DigestingWriter(self._file, expected_digest=self.digest)

    async def commit(self) -> Path:
        """Check digest and size, then move the file to its destination."""
        self._checker.verify(self.digest, self.size)

        def finish_sync() -> None:
            assert self._file is not None
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            os.replace(self._temp, self.destination)

        await anyio.to_thread.run_sync(finish_sync)
        return self.destination
