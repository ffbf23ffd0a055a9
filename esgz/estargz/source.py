"""Open a layer blob as a stream of uncompressed tar bytes.

The compression is sniffed from the first bytes, as the Go builder does: ``1f 8b 08`` is
gzip (every member is decompressed, so an existing eStargz, TOC and footer included, reads
as one tar stream), ``28 b5 2f fd`` is zstd (all frames; skippable frames are ignored) and
anything else is read as a plain tar.

Decompression is streamed (1 MiB reads) and happens once. gzip uses ISA-L's igzip reader
(``isal``, in a background thread so that it overlaps with tar parsing), measured
fastest here (≈720 MB/s vs ≈620 MB/s for zlib-ng and ≈340 MB/s for the standard library
on a 146 MiB layer), falling back to zlib-ng and then to the standard
library when a module is missing. Corrupt or truncated compressed input raises
:class:`~esgz.errors.FormatError`.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable
from typing import BinaryIO, Final, Protocol

import zstandard

from esgz.errors import FormatError
from esgz.estargz.constants import GZIP_MAGIC, ZSTD_FRAME_MAGIC

__all__ = ["SourceFormat", "TarStream", "open_tar_stream", "sniff_compression"]

READ_SIZE: Final = 1 << 20
_GZIP_BLOCK: Final = 256 << 10
"""Compressed bytes the background gzip reader decompresses at a time."""
SourceFormat = str  # "gzip" | "zstd" | "tar"


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def _gzip_opener() -> Callable[[BinaryIO], _Readable]:
    try:
        from isal import igzip_threaded

        # Decompresses in a background thread, overlapping with tar parsing.
        return lambda raw: igzip_threaded.open(raw, "rb", threads=1, block_size=_GZIP_BLOCK)  # type: ignore[no-untyped-call]
    except ImportError:  # pragma: no cover - isal is a declared dependency
        pass
    try:
        from zlib_ng import gzip_ng

        return lambda raw: gzip_ng.GzipFile(fileobj=raw, mode="rb")  # type: ignore[no-untyped-call]
    except ImportError:  # pragma: no cover
        return lambda raw: gzip.GzipFile(fileobj=raw, mode="rb")


_open_gzip: Final = _gzip_opener()


class _Replay(io.RawIOBase):
    """A raw reader that first returns already-consumed bytes, then the rest of ``src``."""

    def __init__(self, head: bytes, src: BinaryIO) -> None:
        self._head = head
        self._src = src

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._src.read(len(view))
        if not data:
            return 0
        view[: len(data)] = data
        return len(data)


class _ZstdFrames:
    """Decompress every zstd frame of ``raw`` in turn; a frame cut short is an error.

    (``zstandard``'s stream reader silently stops at a truncated frame, so frames are
    decoded with one decompression object each. Input is fed in small pieces so that a
    highly compressed frame cannot expand into a huge buffer at once.)
    """

    _FEED: Final = 8192

    def __init__(self, raw: _Readable) -> None:
        self._raw = raw
        self._decompressor = zstandard.ZstdDecompressor()
        self._frame = self._decompressor.decompressobj()
        self._in_frame = False
        self._pending = b""
        self._out = bytearray()
        self._eof = False

    def read(self, size: int = -1, /) -> bytes:
        while len(self._out) < size and not self._eof:
            data = self._pending or self._raw.read(self._FEED)
            self._pending = b""
            if not data:
                if self._in_frame:
                    raise FormatError("zstd layer is truncated")
                self._eof = True
                break
            self._in_frame = True
            self._out += self._frame.decompress(data)
            if self._frame.eof:
                self._pending = self._frame.unused_data
                self._frame = self._decompressor.decompressobj()
                self._in_frame = False
        out = bytes(self._out[:size])
        del self._out[:size]
        return out


def sniff_compression(head: bytes) -> SourceFormat:
    """``"gzip"``, ``"zstd"`` or ``"tar"`` from the first (up to 4) bytes of a blob."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_FRAME_MAGIC):
        return "zstd"
    if len(head) == 4 and head[1:] == b"\x2a\x4d\x18" and head[0] & 0xF0 == 0x50:
        return "zstd"  # starts with a skippable frame
    return "tar"


def _read_head(src: BinaryIO) -> bytes:
    head = b""
    while len(head) < 4:
        more = src.read(4 - len(head))
        if not more:
            break
        head += more
    return head


class TarStream:
    """The uncompressed tar bytes of a blob, read in pieces; errors become FormatError."""

    def __init__(self, src: BinaryIO) -> None:
        head = _read_head(src)
        self.compression: SourceFormat = sniff_compression(head)
        raw = io.BufferedReader(_Replay(head, src), READ_SIZE)
        self._reader: _Readable
        if self.compression == "gzip":
            self._reader = _open_gzip(raw)
        elif self.compression == "zstd":
            self._reader = _ZstdFrames(raw)
        else:
            self._reader = raw
        self.compressed_bytes = 0

    def close(self) -> None:
        """Stop decompressing (ends the background thread of the gzip reader)."""
        close = getattr(self._reader, "close", None)
        if close is not None:
            close()

    def read(self, size: int = READ_SIZE) -> bytes:
        """Up to ``size`` uncompressed bytes; ``b""`` at the end of the blob."""
        try:
            return self._reader.read(size)
        except FormatError:
            raise
        except EOFError:
            raise FormatError(f"{self.compression} layer is truncated") from None
        except (OSError, ValueError, zstandard.ZstdError) as err:
            raise FormatError(f"{self.compression} layer is corrupt: {err}") from None
        except Exception as err:  # isal/zlib-ng raise their own error types
            if type(err).__name__ in ("error", "IsalError"):
                raise FormatError(f"{self.compression} layer is corrupt: {err}") from None
            raise


def open_tar_stream(src: BinaryIO) -> TarStream:
    """Sniff ``src`` and return its uncompressed tar stream."""
    return TarStream(src)
