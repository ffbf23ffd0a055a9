"""Compress gzip members: the deflate backend and the member framing.

Backends, best first (:data:`BACKEND` names the one in use):

* ``libdeflate`` (the ``deflate`` package): whole-buffer compression, the fastest and
  smallest at every level we use. Members are compressed whole (a member holds at most one
  chunk, 4 MiB by default, plus headers), so the pool still has enough work to balance.
* ``zlib-ng`` (``zlib_ng.zlib_ng``): streaming. Members larger than :data:`BLOCK_SIZE` are
  deflated in independent, fixed blocks primed with the preceding 32 KiB as dictionary
  and sync-flushed (as pigz does), so a large file keeps every worker busy; block
  boundaries never depend on the worker count.
* ``zlib`` (standard library): the fallback, members compressed whole.

Measured on one core, level 9, 4 MiB pieces (other load on the machine, so compare the
columns, not the absolute numbers) — 52 MB Debian rootfs prefix: libdeflate 1.75 CPU-s →
22.22 MB; zlib-ng 2.94 CPU-s → 22.54 MB; the Go builder needed 7.6 CPU-s → 23.44 MB. A
64 MiB mix of shared libraries: zlib-ng 17.5 MB/s (ratio 0.3677), stdlib zlib 4.9 MB/s
(0.3683). ISA-L (``isal``) has no level above 3 (level 3: 234 MB/s, ratio 0.4107), so it
cannot produce level-9 output; it is used to decompress inputs instead. All three release
the GIL while compressing.

Level -2 (Go's ``HuffmanOnly``) is not offered by libdeflate and always uses zlib-ng/zlib.
Output bytes depend on the backend (and its version), never on timing or worker count.

Member bytes (FORMAT.md §7): header ``1f 8b 08 00 00000000 XFL ff`` with XFL 02 at level 9,
04 at level 1 and 00 otherwise; raw deflate; CRC32 and ISIZE little-endian.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from types import ModuleType
from typing import Final

from esgz.estargz.codec import TOCTail
from esgz.estargz.constants import TOC_TAR_NAME
from esgz.estargz.footer import gzip_footer
from esgz.estargz.tarheader import plain_header

__all__ = [
    "BACKEND",
    "BACKENDS",
    "BLOCK_SIZE",
    "GZIP_LEVELS",
    "EStargzCodec",
    "gzip_member",
    "gzip_member_header",
]

Buffer = bytes | bytearray | memoryview

try:
    import deflate as _libdeflate
except ImportError:  # pragma: no cover - depends on the installation
    _libdeflate = None  # type: ignore[assignment]


def _zlib_module() -> tuple[str, ModuleType]:
    try:
        from zlib_ng import zlib_ng
    except ImportError:  # pragma: no cover - zlib-ng is a declared dependency
        return "zlib", zlib
    return "zlib-ng", zlib_ng


_ZLIB_NAME, _ZLIB = _zlib_module()
BACKENDS: Final[tuple[str, ...]] = (
    (("libdeflate",) if _libdeflate is not None else ())
    + ((_ZLIB_NAME,) if _ZLIB_NAME == "zlib-ng" else ())
    + ("zlib",)
)
"""Available backends, best first."""
BACKEND: Final = BACKENDS[0]
"""The backend used unless a codec is built with another one."""

GZIP_LEVELS: Final = range(-2, 10)
BLOCK_SIZE: Final = 256 * 1024
"""zlib-ng backend: members are deflated in independent blocks of this many input bytes."""
_WINDOW: Final = 32 * 1024
_XFL: Final = {9: b"\x02", 1: b"\x04"}
_HEADERS: Final = {
    level: b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + _XFL.get(level, b"\x00") + b"\xff"
    for level in GZIP_LEVELS
}


def gzip_member_header(level: int) -> bytes:
    """The 10-byte gzip member header Go writes at ``level``."""
    return _HEADERS[level]


def _trailer(crc: int, size: int) -> bytes:
    return struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF)


def _zlib_compressor(module: ModuleType, level: int, dictionary: bytes = b"") -> object:
    strategy = module.Z_HUFFMAN_ONLY if level == -2 else module.Z_DEFAULT_STRATEGY
    effective = 1 if level == -2 else level
    if dictionary:
        return module.compressobj(effective, module.DEFLATED, -15, 8, strategy, dictionary)
    return module.compressobj(effective, module.DEFLATED, -15, 8, strategy)


def _gzip_member_zlib(module: ModuleType, pieces: Sequence[Buffer], level: int) -> bytes:
    compressor = _zlib_compressor(module, level)
    out = [_HEADERS[level]]
    crc = 0
    size = 0
    for piece in pieces:
        out.append(compressor.compress(piece))  # type: ignore[attr-defined]
        crc = module.crc32(piece, crc)
        size += len(piece)
    out.append(compressor.flush())  # type: ignore[attr-defined]
    out.append(_trailer(crc, size))
    return b"".join(out)


def _gzip_member_libdeflate(pieces: Sequence[Buffer], level: int) -> bytes:
    data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
    return _HEADERS[level] + _libdeflate_body(data, level) + _trailer(_ZLIB.crc32(data), len(data))


def _libdeflate_body(data: Buffer, level: int) -> bytes | bytearray:
    assert _libdeflate is not None
    if not level:
        return _stored(data)
    return _libdeflate.deflate_compress(data, level)


def _zlib_body(module: ModuleType, pieces: Sequence[Buffer], level: int) -> bytes:
    compressor = _zlib_compressor(module, level)
    out = [compressor.compress(piece) for piece in pieces]  # type: ignore[attr-defined]
    out.append(compressor.flush())  # type: ignore[attr-defined]
    return b"".join(out)


def _stored(data: Buffer) -> bytes:
    """Level 0: stored blocks (as zlib writes them)."""
    return _zlib_body(_ZLIB, (data,), 0)


def gzip_member(data: Buffer, level: int, backend: str = BACKEND) -> bytes:
    """One complete gzip member holding ``data``."""
    return gzip_member_of((data,), level, backend)


def gzip_member_of(pieces: Sequence[Buffer], level: int, backend: str = BACKEND) -> bytes:
    """One complete gzip member holding the concatenation of ``pieces``."""
    if backend == "libdeflate" and level != -2:
        return _gzip_member_libdeflate(pieces, level)
    return _gzip_member_zlib(_ZLIB if backend == "zlib-ng" else zlib, pieces, level)


def deflate_block(pieces: Sequence[Buffer], dictionary: bytes, final: bool, level: int) -> bytes:
    """zlib-ng raw deflate of ``pieces`` continuing a stream whose last bytes were
    ``dictionary``; non-final blocks end with a sync flush (byte-aligned, no final bit), so
    blocks compressed independently concatenate into one valid deflate stream."""
    compressor = _zlib_compressor(_ZLIB, level, dictionary[-_WINDOW:])
    out = [compressor.compress(piece) for piece in pieces]  # type: ignore[attr-defined]
    flush_mode = _ZLIB.Z_FINISH if final else _ZLIB.Z_SYNC_FLUSH
    out.append(compressor.flush(flush_mode))  # type: ignore[attr-defined]
    return b"".join(out)


def crc32(data: Buffer, value: int = 0) -> int:
    """CRC32 (zlib-ng's SIMD implementation when available)."""
    result: int = _ZLIB.crc32(data, value)
    return result


def crc32_combine(first: int, second: int, second_length: int) -> int:
    """CRC32 of a concatenation from the CRCs of its parts (zlib-ng only)."""
    combined: int = _ZLIB.crc32_combine(first, second, second_length)
    return combined


class EStargzCodec:
    """gzip members, the ``stargz.index.json`` TOC member and the 51-byte footer."""

    uses_crc = True

    def __init__(self, level: int, backend: str = BACKEND) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"deflate backend {backend!r} is not available ({BACKENDS})")
        if backend == "libdeflate" and level == -2:
            backend = _ZLIB_NAME
        self.level = level
        self.backend = backend
        self.block_size = BLOCK_SIZE if backend == "zlib-ng" else 0
        self._head = _HEADERS[level]

    def member_head(self) -> bytes:
        """The 10-byte gzip member header."""
        return self._head

    def compress_block(
        self, pieces: Sequence[Buffer], dictionary: bytes, final: bool
    ) -> bytes | bytearray:
        """Raw deflate of one block (zlib-ng) or of a whole member (libdeflate, zlib)."""
        if self.block_size:
            return deflate_block(pieces, dictionary, final, self.level)
        if self.backend == "libdeflate":
            return _libdeflate_body(pieces[0] if len(pieces) == 1 else b"".join(pieces), self.level)
        return _zlib_body(zlib, pieces, self.level)

    def member_tail(self, crc: int, size: int) -> bytes:
        """CRC32 and ISIZE."""
        return _trailer(crc, size)

    def decompress_member(self, member: bytes, size: int) -> bytes | bytearray:
        """The content of one gzip member written by this codec (10-byte header)."""
        body = memoryview(member)[len(self._head) : len(member) - 8]
        if _libdeflate is not None:
            data: bytes | bytearray = _libdeflate.deflate_decompress(body, size)
        else:
            data = _ZLIB.decompress(body, -15)
        return data

    toc_prefix = 512
    """The TOC tar header goes before the JSON."""

    def tail(self, toc: bytearray, toc_offset: int) -> TOCTail:
        """TOC member (a tar: header, JSON, padding, end-of-archive) and footer."""
        length = len(toc) - self.toc_prefix
        toc[: self.toc_prefix] = plain_header(TOC_TAR_NAME, length)
        toc += bytes(-length % 512 + 1024)
        member = gzip_member_of((toc,), self.level, self.backend)
        return TOCTail(blob_parts=[member, gzip_footer(toc_offset)], stream_parts=[toc])
