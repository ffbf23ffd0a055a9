"""Find and decode the TOC of a layer blob, as the Go reader's ``estargz.Open`` does.

Footers are tried in Go's order: gzip eStargz (51 bytes), legacy stargz (47 bytes), then
zstd:chunked (40 bytes). For gzip, the TOC is a single gzip member holding a tar stream
whose first entry must be named exactly ``stargz.index.json``; for zstd:chunked it is the
zstd-compressed JSON located by the footer. The TOC digest is the sha256 of the JSON bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final, Literal

from esgz.errors import FormatError
from esgz.estargz.blobfile import BlobFile, ByteStream, Compression, decompressed_range
from esgz.estargz.constants import (
    GZIP_FOOTER_SIZE,
    LEGACY_FOOTER_SIZE,
    TOC_TAR_NAME,
    ZSTD_FOOTER_SIZE,
)
from esgz.estargz.footer import (
    parse_gzip_footer,
    parse_legacy_footer,
    parse_zstd_chunked_footer,
)
from esgz.estargz.tarinput import header_checksum_matches
from esgz.estargz.toc import TOC

__all__ = [
    "DEFAULT_MAX_TOC_SIZE",
    "BlobFormat",
    "LoadedTOC",
    "load_toc",
    "sniff_footer",
]

BlobFormat = Literal["estargz", "stargz-legacy", "zstdchunked"]

DEFAULT_MAX_TOC_SIZE: Final = 256 * 1024 * 1024
"""Largest TOC JSON (uncompressed bytes) a reader accepts unless told otherwise."""

_MAX_EXTENSION_HEADER: Final = 1024 * 1024
"""Largest PAX / GNU long-name payload accepted in front of the TOC tar entry."""

_BLOCK: Final = 512


@dataclass(frozen=True, slots=True)
class LoadedTOC:
    """A decoded TOC and where it was found."""

    format: BlobFormat
    compression: Compression
    toc: TOC
    toc_digest: str
    toc_json_size: int
    toc_offset: int
    """gzip: start of the TOC member; zstd:chunked: start of the compressed TOC frame."""
    data_end: int
    """End of the region that may hold file data (where the TOC or its frame header starts)."""
    footer_size: int


@dataclass(frozen=True, slots=True)
class _FooterHit:
    format: BlobFormat
    toc_offset: int
    toc_end: int
    data_end: int
    footer_size: int
    error: str | None = None
    """Why the TOC location this footer gives is impossible, if it is."""


def _footer_hits(blob: BlobFile) -> list[_FooterHit]:
    """Every footer that parses at the end of ``blob``, in Go's order."""
    hits: list[_FooterHit] = []
    size = blob.size
    for fmt, footer_size in (
        ("estargz", GZIP_FOOTER_SIZE),
        ("stargz-legacy", LEGACY_FOOTER_SIZE),
    ):
        if size >= footer_size:
            parse = parse_gzip_footer if fmt == "estargz" else parse_legacy_footer
            try:
                offset = parse(blob.read_at(size - footer_size, footer_size))
            except FormatError:
                continue
            error = None
            if offset >= size - footer_size:
                error = f"footer TOC offset {offset} is not inside the blob of {size} bytes"
            layer_format: BlobFormat = "estargz" if fmt == "estargz" else "stargz-legacy"
            hits.append(
                _FooterHit(layer_format, offset, size - footer_size, offset, footer_size, error)
            )
    if size >= ZSTD_FOOTER_SIZE:
        try:
            footer = parse_zstd_chunked_footer(
                blob.read_at(size - ZSTD_FOOTER_SIZE, ZSTD_FOOTER_SIZE)
            )
        except FormatError:
            return hits
        start, end = footer.toc_offset, footer.toc_offset + footer.compressed_size
        error = None
        if not (start >= 8 and end <= size - ZSTD_FOOTER_SIZE and footer.compressed_size > 0):
            error = f"footer locates the TOC at {start}..{end}, outside the blob of {size} bytes"
        hits.append(_FooterHit("zstdchunked", start, end, start - 8, ZSTD_FOOTER_SIZE, error))
    return hits


def sniff_footer(blob: BlobFile) -> BlobFormat | None:
    """The format whose footer ends ``blob`` (first match in Go's order), or None."""
    for hit in _footer_hits(blob):
        if hit.error is None:
            return hit.format
    return None


def _parse_number(field: bytes, what: str) -> int:
    """A tar numeric field: octal (space/NUL padded) or GNU base-256."""
    if field and field[0] & 0x80:
        if field[0] == 0xFF:
            raise FormatError(f"TOC tar header: negative {what}")
        value = field[0] & 0x7F
        for byte in field[1:]:
            value = (value << 8) | byte
        return value
    text = field.replace(b"\0", b" ").strip()
    if not text:
        return 0
    try:
        return int(text.decode("ascii"), 8)
    except (UnicodeDecodeError, ValueError):
        raise FormatError(f"TOC tar header: {what} field {field!r} is not a number") from None


def _check_header_checksum(block: bytes) -> None:
    if not header_checksum_matches(block, _parse_number(block[148:156], "checksum")):
        raise FormatError("TOC tar header has a bad checksum")


def _pax_records(payload: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    rest = payload
    while rest:
        space = rest.find(b" ")
        try:
            length = int(rest[:space]) if space > 0 else -1
        except ValueError:
            length = -1
        if length <= space or length > len(rest) or rest[length - 1 : length] != b"\n":
            raise FormatError("TOC tar stream has a malformed PAX header")
        key, sep, value = rest[space + 1 : length - 1].partition(b"=")
        if not sep:
            raise FormatError("TOC tar stream has a malformed PAX record")
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
        rest = rest[length:]
    return records


def _read_toc_tar_entry(stream: ByteStream, max_size: int) -> bytes:
    """The payload of the first tar entry of the TOC member, which must be the TOC JSON."""
    long_name: str | None = None
    pax: dict[str, str] = {}
    for _ in range(4):
        block = stream.read_exact(_BLOCK, "TOC tar header")
        if block == bytes(_BLOCK):
            raise FormatError("TOC tar stream has no entry")
        _check_header_checksum(block)
        typeflag = block[156:157]
        size = _parse_number(block[124:136], "size")
        if typeflag in (b"x", b"L"):
            if size > _MAX_EXTENSION_HEADER:
                raise FormatError(f"TOC tar extension header of {size} bytes is too large")
            payload = stream.read_exact(size, "TOC tar extension header")
            stream.skip(-size % _BLOCK, "TOC tar padding")
            if typeflag == b"x":
                pax.update(_pax_records(payload))
            else:
                long_name = payload.split(b"\0", 1)[0].decode("utf-8", "replace")
            continue
        name = block[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
        prefix = block[345:500].split(b"\0", 1)[0].decode("utf-8", "replace")
        if block[257:265] == b"ustar\x0000" and prefix:
            name = f"{prefix}/{name}"
        name = pax.get("path", long_name if long_name is not None else name)
        if name != TOC_TAR_NAME:
            raise FormatError(f"TOC tar entry is named {name!r}, expected {TOC_TAR_NAME!r}")
        if typeflag not in (b"0", b"\0", b"7"):
            raise FormatError(f"TOC tar entry has type {typeflag!r}, not a regular file")
        if "size" in pax:
            try:
                size = int(pax["size"])
            except ValueError:
                raise FormatError(f"TOC tar entry has a bad PAX size {pax['size']!r}") from None
        if size > max_size:
            raise FormatError(f"TOC JSON of {size} bytes exceeds the limit of {max_size} bytes")
        return stream.read_exact(size, "TOC JSON")
    raise FormatError("TOC tar stream has too many extension headers")


def _load_gzip_toc(blob: BlobFile, hit: _FooterHit, max_size: int) -> bytes:
    pieces = decompressed_range(blob, "gzip", hit.toc_offset, hit.toc_end, single_member=True)
    head = blob.read_at(hit.toc_offset, min(3, hit.toc_end - hit.toc_offset))
    if head != b"\x1f\x8b\x08":
        raise FormatError(f"no gzip member at the TOC offset {hit.toc_offset}")
    return _read_toc_tar_entry(ByteStream(pieces), max_size)


def _load_zstd_toc(blob: BlobFile, hit: _FooterHit, max_size: int) -> bytes:
    pieces = decompressed_range(blob, "zstd", hit.toc_offset, hit.toc_end)
    chunks: list[bytes] = []
    total = 0
    for piece in pieces:
        total += len(piece)
        if total > max_size:
            raise FormatError(f"TOC JSON exceeds the limit of {max_size} bytes")
        chunks.append(piece)
    if total == 0:
        raise FormatError("the zstd:chunked TOC frame is empty")
    return b"".join(chunks)


def load_toc(blob: BlobFile, max_toc_size: int = DEFAULT_MAX_TOC_SIZE) -> LoadedTOC:
    """Locate, decompress and decode the TOC of ``blob``; FormatError if none is usable."""
    hits = _footer_hits(blob)
    errors: list[str] = []
    for hit in hits:
        if hit.error is not None:
            errors.append(f"{hit.format}: {hit.error}")
            continue
        try:
            if hit.format == "zstdchunked":
                compression: Compression = "zstd"
                data = _load_zstd_toc(blob, hit, max_toc_size)
            else:
                compression = "gzip"
                data = _load_gzip_toc(blob, hit, max_toc_size)
            toc = TOC.from_json(data)
        except FormatError as err:
            errors.append(f"{hit.format}: {err.message}")
            continue
        return LoadedTOC(
            format=hit.format,
            compression=compression,
            toc=toc,
            toc_digest="sha256:" + hashlib.sha256(data).hexdigest(),
            toc_json_size=len(data),
            toc_offset=hit.toc_offset,
            data_end=hit.data_end,
            footer_size=hit.footer_size,
        )
    if not hits:
        raise FormatError(
            f"not an eStargz or zstd:chunked blob: no footer in its last bytes "
            f"({blob.size} bytes; truncated, or a plain layer?)"
        )
    raise FormatError("cannot read the TOC: " + "; ".join(errors))
