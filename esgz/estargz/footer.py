"""Encode and decode the footers that point a reader at the TOC.

gzip eStargz ends with a 51-byte empty gzip member whose extra field carries the TOC
offset; the legacy stargz format used a 47-byte variant. zstd:chunked ends with a
skippable frame whose 40 payload bytes locate the compressed TOC.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from esgz.errors import FormatError
from esgz.estargz.constants import (
    GZIP_FOOTER_SIZE,
    LEGACY_FOOTER_SIZE,
    ZSTD_CHUNKED_MAGIC,
    ZSTD_CHUNKED_MANIFEST_TYPE,
    ZSTD_FOOTER_SIZE,
    ZSTD_SKIPPABLE_MAGIC,
)

_GZIP_HEADER = b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff"
_EMPTY_FINAL_BLOCK_AND_TRAILER = b"\x01\x00\x00\xff\xff" + b"\x00" * 8


def gzip_footer(toc_offset: int) -> bytes:
    """The 51-byte eStargz footer pointing at the TOC member at ``toc_offset``."""
    if not 0 <= toc_offset < 1 << 63:
        raise FormatError(f"TOC offset {toc_offset} does not fit the footer")
    subfield = b"%016xSTARGZ" % toc_offset
    extra = b"SG" + struct.pack("<H", len(subfield)) + subfield
    footer = _GZIP_HEADER + struct.pack("<H", len(extra)) + extra + _EMPTY_FINAL_BLOCK_AND_TRAILER
    assert len(footer) == GZIP_FOOTER_SIZE
    return footer


def parse_gzip_footer(footer: bytes) -> int:
    """The TOC offset from a 51-byte eStargz footer; FormatError if it is not one."""
    if len(footer) != GZIP_FOOTER_SIZE:
        raise FormatError(f"eStargz footer must be {GZIP_FOOTER_SIZE} bytes, got {len(footer)}")
    if footer[:10] != _GZIP_HEADER or footer[10:12] != b"\x1a\x00":
        raise FormatError("no eStargz footer: the last 51 bytes are not a gzip header with extra")
    if footer[12:16] != b"SG\x16\x00" or footer[32:38] != b"STARGZ":
        raise FormatError("no eStargz footer: the gzip extra field is not a STARGZ subfield")
    return _parse_hex_offset(footer[16:32])


def parse_legacy_footer(footer: bytes) -> int:
    """The TOC offset from a 47-byte legacy stargz footer; FormatError if it is not one."""
    if len(footer) != LEGACY_FOOTER_SIZE:
        raise FormatError(f"stargz footer must be {LEGACY_FOOTER_SIZE} bytes, got {len(footer)}")
    if footer[:10] != _GZIP_HEADER or footer[10:12] != b"\x16\x00" or footer[28:34] != b"STARGZ":
        raise FormatError("no legacy stargz footer in the last 47 bytes")
    return _parse_hex_offset(footer[12:28])


def _parse_hex_offset(field: bytes) -> int:
    try:
        offset = int(field.decode("ascii"), 16)
    except (UnicodeDecodeError, ValueError):
        raise FormatError(f"footer TOC offset {field!r} is not hexadecimal") from None
    if offset >= 1 << 63:
        raise FormatError(f"footer TOC offset {offset} is out of range")
    return offset


@dataclass(frozen=True)
class ZstdChunkedFooter:
    """Where the compressed TOC of a zstd:chunked blob is, and its sizes."""

    toc_offset: int
    compressed_size: int
    uncompressed_size: int


def zstd_chunked_footer(footer: ZstdChunkedFooter) -> bytes:
    """The trailing skippable frame (8-byte frame header + 40 bytes) of a zstd:chunked blob."""
    payload = struct.pack(
        "<QQQQ",
        footer.toc_offset,
        footer.compressed_size,
        footer.uncompressed_size,
        ZSTD_CHUNKED_MANIFEST_TYPE,
    )
    payload += ZSTD_CHUNKED_MAGIC
    return ZSTD_SKIPPABLE_MAGIC + struct.pack("<I", len(payload)) + payload


def parse_zstd_chunked_footer(last40: bytes) -> ZstdChunkedFooter:
    """Decode the last 40 bytes of a zstd:chunked blob; FormatError if they are not a footer."""
    if len(last40) != ZSTD_FOOTER_SIZE or last40[32:] != ZSTD_CHUNKED_MAGIC:
        raise FormatError("no zstd:chunked footer: the last 40 bytes lack the GnUlInUx magic")
    offset, compressed, uncompressed, manifest_type = struct.unpack("<QQQQ", last40[:32])
    if manifest_type != ZSTD_CHUNKED_MANIFEST_TYPE:
        raise FormatError(f"zstd:chunked footer has unknown manifest type {manifest_type}")
    return ZstdChunkedFooter(offset, compressed, uncompressed)
