"""Encode tar header blocks the way Go's ``archive/tar`` writer does.

Every entry is re-encoded (as the Go builder does) rather than copied: USTAR when all
fields fit (ASCII names, split into prefix/name when longer than 100 bytes; octal numbers;
whole-second mtime; no extra records), otherwise PAX: an ``x`` header named
``<dir>/PaxHeaders.0/<base>`` carrying the records sorted by key, followed by a main block
with ASCII-only, truncated fields and zero for numbers that do not fit. The GNU format is
never written (PAX represents everything it can, except sparse files, which are expanded).

Byte layout per FORMAT.md §6: numeric fields zero-padded octal with a trailing NUL,
devmajor/devminor always written, checksum ``%06o\\0 ``, magic ``ustar\\0`` + ``00``.
For USTAR inputs the blocks are byte-identical to Go's.
"""

from __future__ import annotations

import posixpath
from typing import Final

from esgz.errors import FormatError
from esgz.estargz.tarinput import BLOCK, TarEntry

__all__ = ["encode_header", "plain_header"]

_MAGIC: Final = b"ustar\x0000"


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _fits_octal(width: int, value: int) -> bool:
    return 0 <= value < 1 << ((width - 1) * 3)


def _octal(width: int, value: int) -> bytes:
    if not _fits_octal(width, value):
        value = 0
    return b"%0*o\0" % (width - 1, value)


def _field(width: int, raw: bytes) -> bytes:
    """A NUL-padded string field; too long values are cut (and a cut '/' dropped, as Go)."""
    if len(raw) > width:
        raw = raw[:width]
        if raw.endswith(b"/"):
            raw = raw.rstrip(b"/")
    return raw.ljust(width, b"\0")


def _ascii(text: str) -> bytes:
    return bytes(c for c in _bytes(text) if 0 < c < 0x80)


def _block(
    name: bytes,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime: int,
    typeflag: str,
    linkname: bytes,
    uname: bytes,
    gname: bytes,
    devmajor: int | None,
    devminor: int | None,
    prefix: bytes = b"",
) -> bytes:
    parts = [
        _field(100, name),
        _octal(8, mode),
        _octal(8, uid),
        _octal(8, gid),
        _octal(12, size),
        _octal(12, mtime),
        b"        ",
        typeflag.encode("ascii"),
        _field(100, linkname),
        _MAGIC,
        _field(32, uname),
        _field(32, gname),
        _octal(8, devmajor) if devmajor is not None else bytes(8),
        _octal(8, devminor) if devminor is not None else bytes(8),
        _field(155, prefix),
        bytes(12),
    ]
    block = bytearray(b"".join(parts))
    block[148:156] = b"%06o\0 " % sum(block)
    assert len(block) == BLOCK
    return bytes(block)


def _split_ustar(name: bytes) -> tuple[bytes, bytes] | None:
    """(prefix, name) for an ASCII name longer than 100 bytes, or None if impossible."""
    length = len(name)
    if length > 156:
        length = 156
    elif name.endswith(b"/"):
        length -= 1
    cut = name.rfind(b"/", 0, length)
    if cut <= 0:
        return None
    prefix, rest = name[:cut], name[cut + 1 :]
    if len(prefix) > 155 or not rest or len(rest) > 100:
        return None
    return prefix, rest


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    size = len(body) + 1
    while len(str(size)) + len(body) != size:
        size = len(str(size)) + len(body)
    return str(size).encode("ascii") + body


def _pax_time(seconds: int, nanos: int) -> str:
    if not nanos:
        return str(seconds)
    if seconds < 0:
        text = f"-{-(seconds + 1)}.{1_000_000_000 - nanos:09d}"
    else:
        text = f"{seconds}.{nanos:09d}"
    return text.rstrip("0")


def _pax_header_name(name: str) -> bytes:
    directory, base = posixpath.split(name)
    joined = "/".join(part for part in (directory, "PaxHeaders.0", base) if part)
    clean = posixpath.normpath(joined)
    raw = _ascii(clean)[:100]
    return raw.rstrip(b"/")


def plain_header(name: str, size: int) -> bytes:
    """USTAR header of a regular file with every other field zero (TOC entry, landmarks)."""
    return _block(_bytes(name), 0, 0, 0, size, 0, "0", b"", b"", b"", 0, 0)


def encode_header(entry: TarEntry) -> bytes:
    """The header block(s) for ``entry``: one USTAR block, or a PAX header + main block."""
    name = _bytes(entry.name)
    link = _bytes(entry.linkname)
    uname = _bytes(entry.uname)
    gname = _bytes(entry.gname)
    for value, what in ((entry.mode, "mode"), (entry.devmajor, "devmajor")):
        if not _fits_octal(8, value):
            raise FormatError(f"tar entry {entry.name!r}: {what} {value} cannot be encoded")
    if not _fits_octal(8, entry.devminor):
        raise FormatError(f"tar entry {entry.name!r}: devminor {entry.devminor} out of range")

    records: dict[bytes, bytes] = {}
    prefix = b""
    if not name.isascii():
        records[b"path"] = name
    elif len(name) > 100:
        split = _split_ustar(name)
        if split is None:
            records[b"path"] = name
        else:
            prefix, name = split
    if len(link) > 100 or not link.isascii():
        records[b"linkpath"] = link
    if len(uname) > 32 or not uname.isascii():
        records[b"uname"] = uname
    if len(gname) > 32 or not gname.isascii():
        records[b"gname"] = gname
    if not _fits_octal(8, entry.uid):
        records[b"uid"] = str(entry.uid).encode()
    if not _fits_octal(8, entry.gid):
        records[b"gid"] = str(entry.gid).encode()
    if not _fits_octal(12, entry.size):
        records[b"size"] = str(entry.size).encode()
    if entry.mtime_ns or not _fits_octal(12, entry.mtime):
        records[b"mtime"] = _pax_time(entry.mtime, entry.mtime_ns).encode()
    for key, xvalue in entry.xattrs.items():
        records[b"SCHILY.xattr." + _bytes(key)] = xvalue
    for key, text in entry.extra_pax.items():
        records[_bytes(key)] = _bytes(text)

    if not records:
        return _block(
            name,
            entry.mode,
            entry.uid,
            entry.gid,
            entry.size,
            entry.mtime,
            entry.typeflag,
            link,
            uname,
            gname,
            entry.devmajor,
            entry.devminor,
            prefix,
        )

    data = b"".join(_pax_record(key, records[key]) for key in sorted(records))
    pax = _block(
        _pax_header_name(entry.name), 0, 0, 0, len(data), 0, "x", b"", b"", b"", None, None
    )
    main = _block(
        _ascii(entry.name),
        entry.mode,
        entry.uid,
        entry.gid,
        entry.size,
        entry.mtime,
        entry.typeflag,
        _ascii(entry.linkname),
        _ascii(entry.uname),
        _ascii(entry.gname),
        entry.devmajor,
        entry.devminor,
    )
    return pax + data + bytes(-len(data) % BLOCK) + main
