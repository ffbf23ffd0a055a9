"""Parse the entries of an input tar stream (USTAR, PAX, GNU and V7 headers).

A small streaming parser instead of :mod:`tarfile`, because the writer needs what
``tarfile`` hides (which PAX records an entry carried, its exact mtime text) and must treat
some inputs differently from it. It reads the uncompressed stream once, front to back.

What it does with each header kind (see also docs/format.md, "Writer decisions"):

* ``x`` (PAX) and ``g`` (PAX global) records are applied to the following entry / all
  following entries, as POSIX and GNU tar do; a global record with an empty value removes
  it. (The Go builder rejects ``g``.) ``L``/``K`` (GNU long name / link name) likewise.
* ``0``, legacy ``\\0`` and ``7`` (contiguous file) are regular files (``\\0`` with a name
  ending in ``/`` is a directory, as in Go); ``1`` hardlink, ``2`` symlink, ``3`` char,
  ``4`` block, ``5`` directory, ``6`` fifo. Header-only types have no payload whatever
  their size field says (as Go reads them).
* Sparse files (old GNU ``S`` headers and the PAX ``GNU.sparse`` 0.0, 0.1 and 1.0
  encodings) are expanded to their full content with zeros in the holes: a TOC cannot
  represent holes. (The Go builder rejects ``S`` and silently corrupts PAX sparse files.)
* ``V`` (GNU volume label) carries no file and is skipped. Any other type is a
  :class:`~esgz.errors.FormatError`.
* Names, link names and user/group names are bytes in tar; they are decoded as UTF-8 with
  ``surrogateescape`` so non-UTF-8 bytes survive unchanged into the output headers.
* A bad checksum, a malformed number or PAX record, or a stream that ends inside a header
  or payload is a FormatError naming the entry. The archive ends at the first zero block
  (or at a clean end of stream between entries); anything after it is ignored.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from esgz.errors import FormatError
from esgz.estargz.source import TarStream

__all__ = ["TarEntry", "TarReader", "header_checksum_matches"]

BLOCK: Final = 512
ZERO_BLOCK: Final = bytes(BLOCK)
_PIECE: Final = 1 << 20
_MAX_META: Final = 16 << 20
"""Largest PAX / long-name payload accepted (a guard against absurd sizes)."""
INT64_MAX: Final = (1 << 63) - 1
"""Numbers beyond a signed 64-bit integer are refused, as Go's ``archive/tar`` does."""

HEADER_ONLY_TYPES: Final = frozenset("123456")
_NATIVE_PAX_KEYS: Final = frozenset(
    ("path", "linkpath", "size", "uid", "gid", "uname", "gname", "mtime", "hdrcharset")
)


@dataclass(slots=True)
class TarEntry:
    """One file system entry of the input, with long names and PAX records applied."""

    name: str
    typeflag: str
    """One of ``0 1 2 3 4 5 6`` (regular, hardlink, symlink, char, block, dir, fifo)."""
    mode: int = 0
    uid: int = 0
    gid: int = 0
    size: int = 0
    """Payload size (the expanded size for sparse files; 0 for header-only types)."""
    mtime: int = 0
    mtime_ns: int = 0
    linkname: str = ""
    uname: str = ""
    gname: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)
    extra_pax: dict[str, str] = field(default_factory=dict)
    """PAX records to carry over verbatim (atime, ctime, vendor keys), not xattrs."""
    sparse: list[tuple[int, int]] | None = None
    stored_size: int = 0
    """Bytes of archive data after the header (padding excluded)."""
    sparse_map_size: int = 0


def header_checksum_matches(block: bytes, stored: int) -> bool:
    """Whether ``stored`` is the checksum of the 512-byte header ``block``.

    The checksum field counts as eight spaces; both the unsigned sum and the signed one
    (bytes above 127 taken as negative, as some old writers did) are accepted, as in Go.
    """
    unsigned = sum(block[:148]) + 8 * 0x20 + sum(block[156:])
    if stored == unsigned:
        return True
    high = sum(1 for b in block[:148] if b > 127) + sum(1 for b in block[156:] if b > 127)
    return stored == unsigned - 256 * high


def _cstring(field_bytes: bytes) -> bytes:
    end = field_bytes.find(b"\0")
    return field_bytes if end < 0 else field_bytes[:end]


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _in_int64(value: int, what: str, name: str) -> int:
    if not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise FormatError(f"tar entry {name!r}: {what} {value} is out of range")
    return value


def _parse_number(raw: bytes, what: str, name: str) -> int:
    if raw and raw[0] & 0x80:
        # GNU base-256: big-endian two's complement, first byte's top bit is the marker.
        value = int.from_bytes(bytes([raw[0] & 0x7F]) + raw[1:], "big")
        if raw[0] & 0x40:
            value -= 1 << (len(raw) * 8 - 1)
        return _in_int64(value, what, name)
    text = raw.strip(b" \0")
    if not text:
        return 0
    try:
        return _in_int64(int(text, 8), what, name)
    except ValueError:
        raise FormatError(f"tar entry {name!r}: bad {what} field {raw!r}") from None


def _parse_decimal(value: str, key: str, name: str) -> int:
    if not value.isascii() or not value.isdigit():
        if value.startswith("-") and value[1:].isascii() and value[1:].isdigit():
            raise FormatError(f"tar entry {name!r}: negative PAX {key} record {value[:40]!r}")
        raise FormatError(f"tar entry {name!r}: bad PAX {key} record {value[:40]!r}")
    if len(value.lstrip("0")) > 19:
        raise FormatError(f"tar entry {name!r}: PAX {key} record {value[:40]!r} is out of range")
    return _in_int64(int(value, 10), f"PAX {key} record", name)


def _parse_pax_time(value: str, name: str) -> tuple[int, int]:
    """Seconds (floored) and nanoseconds of a PAX time ``[-]S[.F]``."""
    sign = -1 if value.startswith("-") else 1
    digits = value[1:] if sign < 0 else value
    whole, _, frac = digits.partition(".")
    if not (whole + frac).isascii() or not whole.isdigit() or (frac and not frac.isdigit()):
        raise FormatError(f"tar entry {name!r}: bad PAX time {value[:40]!r}")
    nanos = int((frac + "000000000")[:9])
    if len(whole.lstrip("0")) > 19:
        raise FormatError(f"tar entry {name!r}: PAX time {value[:40]!r} is out of range")
    seconds = _in_int64(int(whole), "PAX time", name)
    if sign < 0:
        if nanos:
            return -seconds - 1, 1_000_000_000 - nanos
        return -seconds, 0
    return seconds, nanos


def _parse_pax_records(data: bytes, name: str) -> list[tuple[str, bytes]]:
    records: list[tuple[str, bytes]] = []
    pos = 0
    while pos < len(data):
        if data[pos] == 0:  # some writers pad the record block with NULs
            break
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space]) if space > pos else -1
        except ValueError:
            length = -1
        end = pos + length
        if length <= 0 or end > len(data) or data[end - 1] != 0x0A:
            raise FormatError(f"tar entry {name!r}: malformed PAX record at byte {pos}")
        key, eq, value = data[space + 1 : end - 1].partition(b"=")
        if not eq:
            raise FormatError(f"tar entry {name!r}: PAX record without '='")
        try:
            records.append((key.decode("utf-8"), value))
        except UnicodeDecodeError:
            raise FormatError(f"tar entry {name!r}: PAX key is not UTF-8") from None
        pos = end
    return records


class _Input:
    """Exact-size reads over the uncompressed stream."""

    def __init__(self, stream: TarStream) -> None:
        self._stream = stream
        self._buf = b""
        self._pos = 0
        self.offset = 0
        """Bytes of the tar stream consumed so far."""

    def _fill(self) -> bool:
        data = self._stream.read(_PIECE)
        if not data:
            return False
        rest = self._buf[self._pos :]
        self._buf = rest + data if rest else data
        self._pos = 0
        return True

    def read_upto(self, n: int) -> bytes:
        """Between 1 and ``n`` bytes; ``b""`` only at the end of the stream."""
        if self._pos >= len(self._buf) and not self._fill():
            return b""
        start = self._pos
        end = min(len(self._buf), start + n)
        self._pos = end
        self.offset += end - start
        if start == 0 and end == len(self._buf):
            return self._buf
        return self._buf[start:end]

    def read_exact(self, n: int, what: str) -> bytes:
        if len(self._buf) - self._pos >= n:
            start = self._pos
            self._pos += n
            self.offset += n
            return self._buf[start : self._pos]
        parts: list[bytes] = []
        left = n
        while left:
            piece = self.read_upto(left)
            if not piece:
                raise FormatError(f"tar stream is truncated in {what}")
            parts.append(piece)
            left -= len(piece)
        return b"".join(parts)

    def skip(self, n: int, what: str) -> None:
        while n:
            piece = self.read_upto(min(n, _PIECE))
            if not piece:
                raise FormatError(f"tar stream is truncated in {what}")
            n -= len(piece)

    def at_end(self) -> bool:
        return self._pos >= len(self._buf) and not self._fill()


def _padding(size: int) -> int:
    return -size % BLOCK


class TarReader:
    """Iterate the entries of a tar stream; read each payload before asking for the next."""

    def __init__(self, stream: TarStream) -> None:
        self._in = _Input(stream)
        self._globals: dict[str, bytes] = {}
        self._pending: TarEntry | None = None
        self._left = 0
        self._done = False

    # -- headers -------------------------------------------------------------------------

    def __iter__(self) -> Iterator[TarEntry]:
        while True:
            entry = self.next()
            if entry is None:
                return
            yield entry

    def next(self) -> TarEntry | None:
        """The next entry, or None at the end of the archive."""
        if self._pending is not None:
            self._skip_payload(self._pending)
        if self._done:
            return None
        local: list[tuple[str, bytes]] = []
        long_name: bytes | None = None
        long_link: bytes | None = None
        while True:
            if self._in.at_end():
                self._done = True
                if local or long_name is not None or long_link is not None:
                    raise FormatError("tar stream ends after an extended header")
                return None
            block = self._in.read_exact(BLOCK, "a tar header")
            if block == ZERO_BLOCK:
                self._done = True
                return None
            raw_name = _cstring(block[0:100])
            shown = _decode(long_name if long_name is not None else raw_name)
            self._check_sum(block, shown)
            flag = chr(block[156])
            size = _parse_number(block[124:136], "size", shown)
            if size < 0:
                raise FormatError(f"tar entry {shown!r}: negative size {size}")
            if flag in "xgLK":
                if size > _MAX_META:
                    raise FormatError(f"tar entry {shown!r}: extended header of {size} bytes")
                data = self._in.read_exact(size, f"the extended header of {shown!r}")
                self._in.skip(_padding(size), f"the extended header of {shown!r}")
                if flag == "x":
                    local.extend(_parse_pax_records(data, shown))
                elif flag == "g":
                    for key, value in _parse_pax_records(data, shown):
                        if value:
                            self._globals[key] = value
                        else:
                            self._globals.pop(key, None)
                elif flag == "L":
                    long_name = _cstring(data)
                else:
                    long_link = _cstring(data)
                continue
            if flag == "V":
                self._in.skip(size + _padding(size), "a volume label")
                local, long_name, long_link = [], None, None
                continue
            entry = self._build(block, flag, size, local, long_name, long_link)
            self._pending = entry
            self._left = entry.stored_size
            return entry

    @staticmethod
    def _check_sum(block: bytes, name: str) -> None:
        stored = _parse_number(block[148:156], "checksum", name)
        if not header_checksum_matches(block, stored):
            raise FormatError(f"tar entry {name!r}: header checksum mismatch (not a tar?)")

    def _build(
        self,
        block: bytes,
        flag: str,
        size: int,
        local: list[tuple[str, bytes]],
        long_name: bytes | None,
        long_link: bytes | None,
    ) -> TarEntry:
        magic = block[257:263]
        is_ustar = magic == b"ustar\0"
        is_gnu = magic == b"ustar "
        name_bytes = _cstring(block[0:100])
        if is_ustar:
            prefix = _cstring(block[345:500])
            if prefix:
                name_bytes = prefix + b"/" + name_bytes
        if long_name is not None:
            name_bytes = long_name
        name = _decode(name_bytes)
        link_bytes = long_link if long_link is not None else _cstring(block[157:257])
        entry = TarEntry(name=name, typeflag=flag, linkname=_decode(link_bytes))
        entry.mode = _parse_number(block[100:108], "mode", name)
        entry.uid = _parse_number(block[108:116], "uid", name)
        entry.gid = _parse_number(block[116:124], "gid", name)
        entry.mtime = _parse_number(block[136:148], "mtime", name)
        if is_ustar or is_gnu:
            entry.uname = sys.intern(_decode(_cstring(block[265:297])))
            entry.gname = sys.intern(_decode(_cstring(block[297:329])))
            entry.devmajor = _parse_number(block[329:337], "devmajor", name)
            entry.devminor = _parse_number(block[337:345], "devminor", name)
        stored = size

        records: dict[str, bytes] = dict(self._globals)
        sparse_pax: list[tuple[str, bytes]] = []
        for key, value in local:
            if key in ("GNU.sparse.offset", "GNU.sparse.numbytes"):
                sparse_pax.append((key, value))
            if value or key.startswith("SCHILY.xattr."):
                records[key] = value
            else:
                records.pop(key, None)
        self._apply_pax(entry, records)
        name = entry.name

        if flag in ("\0", "7"):
            flag = "5" if flag == "\0" and name.endswith("/") else "0"
        elif flag == "S":
            flag = "0"
            entry.sparse = self._gnu_sparse_map(block, name)
            entry.size = _parse_number(block[483:495], "realsize", name)
        elif flag not in "0123456":
            raise FormatError(f"tar entry {name!r}: unsupported entry type {flag!r}")
        entry.typeflag = flag

        if flag in HEADER_ONLY_TYPES:
            stored = 0
            entry.size = 0
        elif entry.sparse is None:
            if "size" in records:
                stored = _parse_decimal(_decode(records["size"]), "size", name)
            entry.size = stored
            self._pax_sparse(entry, records, sparse_pax)
        entry.stored_size = stored
        if entry.sparse is not None:
            self._check_sparse(entry)
        return entry

    def _apply_pax(self, entry: TarEntry, records: dict[str, bytes]) -> None:
        name = entry.name
        for key, raw in records.items():
            if key.startswith("SCHILY.xattr."):
                entry.xattrs[key[len("SCHILY.xattr.") :]] = raw
                continue
            if key.startswith("GNU.sparse."):
                continue
            value = _decode(raw)
            if key == "path":
                entry.name = value
            elif key == "linkpath":
                entry.linkname = value
            elif key == "uname":
                entry.uname = sys.intern(value)
            elif key == "gname":
                entry.gname = sys.intern(value)
            elif key in ("uid", "gid"):
                setattr(entry, key, _parse_decimal(value, key, name))
            elif key == "mtime":
                entry.mtime, entry.mtime_ns = _parse_pax_time(value, name)
            elif key not in _NATIVE_PAX_KEYS and key != "comment":
                if "\0" in value or "\0" in key:
                    raise FormatError(f"tar entry {name!r}: NUL byte in PAX record {key!r}")
                entry.extra_pax[key] = value
        if "\0" in entry.name or "\0" in entry.linkname:
            raise FormatError(f"tar entry {entry.name!r}: NUL byte in a PAX path")

    def _pax_sparse(
        self, entry: TarEntry, records: dict[str, bytes], ordered: list[tuple[str, bytes]]
    ) -> None:
        def text(key: str) -> str | None:
            raw = records.get(key)
            return None if raw is None else _decode(raw)

        major, minor = text("GNU.sparse.major"), text("GNU.sparse.minor")
        sparse_name = text("GNU.sparse.name")
        real = text("GNU.sparse.realsize") or text("GNU.sparse.size")
        name = entry.name
        if major == "1" and minor == "0":
            entry.sparse = []  # the map is read from the data area in payload()
            entry.sparse_map_size = -1
        elif "GNU.sparse.map" in records:
            numbers = text("GNU.sparse.map") or ""
            values = [_parse_decimal(v, "GNU.sparse.map", name) for v in numbers.split(",")]
            if len(values) % 2:
                raise FormatError(f"tar entry {name!r}: odd GNU.sparse.map")
            entry.sparse = list(zip(values[::2], values[1::2], strict=True))
        elif ordered:
            offsets = [_parse_decimal(_decode(v), k, name) for k, v in ordered]
            if len(offsets) % 2 or any(
                k != ("GNU.sparse.offset", "GNU.sparse.numbytes")[i % 2]
                for i, (k, _) in enumerate(ordered)
            ):
                raise FormatError(f"tar entry {name!r}: malformed GNU.sparse 0.0 records")
            entry.sparse = list(zip(offsets[::2], offsets[1::2], strict=True))
        elif major is not None or real is not None:
            raise FormatError(f"tar entry {name!r}: unsupported GNU sparse format {major}.{minor}")
        else:
            return
        if sparse_name is not None:
            entry.name = sparse_name
        if real is None:
            raise FormatError(f"tar entry {entry.name!r}: sparse file without a real size")
        entry.size = _parse_decimal(real, "GNU.sparse.realsize", name)

    def _gnu_sparse_map(self, block: bytes, name: str) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []

        def take(area: bytes, count: int) -> None:
            for i in range(count):
                off = _parse_number(area[i * 24 : i * 24 + 12], "sparse offset", name)
                length = _parse_number(area[i * 24 + 12 : i * 24 + 24], "sparse size", name)
                if off == 0 and length == 0 and area[i * 24] == 0:
                    continue
                spans.append((off, length))

        take(block[386:482], 4)
        extended = block[482] != 0
        while extended:
            ext = self._in.read_exact(BLOCK, f"the sparse map of {name!r}")
            take(ext[:504], 21)
            extended = ext[504] != 0
        return spans

    @staticmethod
    def _check_sparse(entry: TarEntry) -> None:
        if entry.sparse_map_size < 0:
            return  # PAX 1.0: checked once the map is read
        end = 0
        total = 0
        for offset, length in entry.sparse:  # type: ignore[union-attr]
            if offset < end or length < 0 or offset + length > entry.size:
                raise FormatError(f"tar entry {entry.name!r}: invalid sparse map")
            end = offset + length
            total += length
        if total != entry.stored_size:
            raise FormatError(
                f"tar entry {entry.name!r}: sparse map holds {total} bytes, "
                f"archive has {entry.stored_size}"
            )

    # -- payloads ------------------------------------------------------------------------

    def payload(self, entry: TarEntry, piece: int = _PIECE) -> Iterator[bytes]:
        """The entry's content in pieces of at most ``piece`` bytes (holes expanded)."""
        position = 0
        for offset, data in self.regions(entry, piece):
            yield from _zeros(offset - position, piece)
            yield data
            position = offset + len(data)
        yield from _zeros(entry.size - position, piece)

    def regions(self, entry: TarEntry, piece: int = _PIECE) -> Iterator[tuple[int, bytes]]:
        """The entry's stored data as ``(file offset, bytes)`` pieces, holes left out.

        For a sparse file the holes between the pieces (and up to ``entry.size``) read as
        zeros; a writer that keeps them as holes (seek + truncate) allocates no more than
        the archive holds. For any other file the pieces are the whole content, in order.
        """
        if entry is not self._pending:
            raise RuntimeError("an entry's content must be read before the next entry")
        what = f"the content of {entry.name!r}"
        if entry.sparse is None:
            spans = [(0, self._left)]
        else:
            if entry.sparse_map_size < 0:
                self._read_sparse_map_v1(entry)
            spans = entry.sparse
        for offset, length in spans:
            position = offset
            left = length
            while left:
                data = self._in.read_upto(min(left, piece))
                if not data:
                    raise FormatError(f"tar stream is truncated in {what}")
                left -= len(data)
                self._left -= len(data)
                yield position, data
                position += len(data)
        self._finish(entry)

    def _read_sparse_map_v1(self, entry: TarEntry) -> None:
        """Read the PAX 1.0 sparse map at the start of the data area (linear in its size)."""
        what = f"the sparse map of {entry.name!r}"
        numbers: list[int] = []
        count = -1
        partial = b""
        size = 0
        while count < 0 or len(numbers) < 2 * count:
            if self._left < BLOCK:
                raise FormatError(f"tar entry {entry.name!r}: truncated sparse map")
            lines = (partial + self._in.read_exact(BLOCK, what)).split(b"\n")
            self._left -= BLOCK
            size += BLOCK
            partial = lines.pop()
            for line in lines:
                value = _parse_decimal(_decode(line), "sparse map", entry.name)
                if count < 0:
                    count = value
                else:
                    numbers.append(value)
                if len(numbers) == 2 * count:
                    break
            else:
                if len(partial) > 40:  # no number is that long: not a map
                    raise FormatError(f"tar entry {entry.name!r}: malformed sparse map")
        entry.sparse = list(zip(numbers[::2], numbers[1::2], strict=True))
        entry.sparse_map_size = size
        entry.stored_size -= size
        TarReader._check_sparse(entry)
        entry.stored_size += size
        # self._left already excludes the map blocks.

    def _finish(self, entry: TarEntry) -> None:
        what = f"the content of {entry.name!r}"
        self._in.skip(self._left + _padding(entry.stored_size), what)
        self._left = 0
        self._pending = None

    def _skip_payload(self, entry: TarEntry) -> None:
        self._finish(entry)


def _zeros(n: int, piece: int) -> Iterator[bytes]:
    while n > 0:
        size = min(n, piece)
        yield bytes(size)
        n -= size
