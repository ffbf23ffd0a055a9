"""The table of contents (TOC) of an eStargz / zstd:chunked layer, and its JSON form.

:class:`TOCEntry` mirrors the Go ``estargz.TOCEntry`` field for field and :class:`TOC`
mirrors ``estargz.JTOC``. :meth:`TOC.to_json` produces exactly the bytes of Go's
``json.MarshalIndent(toc, "", "\\t")``; :meth:`TOC.from_json` decodes the way Go's
``json.Unmarshal`` does into those structs.

Encoding decisions (see also docs/format.md, "TOC JSON"):

* Key order is the Go struct order; every field except ``name`` and ``type`` is omitted when
  zero / empty. ``xattrs`` values are bytes, emitted as standard padded base64 with keys
  sorted bytewise (Go sorts map keys as byte strings).
* String escaping follows Go 1.19's ``encoding/json`` (the Go version of the Debian reader):
  ``<`` ``>`` ``&`` become ``\\u003c`` ``\\u003e`` ``\\u0026``; U+2028/U+2029 become
  ``\\u2028``/``\\u2029``; ``"`` ``\\`` ``\\n`` ``\\r`` ``\\t`` use short escapes; every other
  control character below 0x20 (including backspace and form feed) becomes ``\\u00xx``
  with lowercase hex; DEL and all other valid characters are written raw as UTF-8.
  (Go 1.22+ writes ``\\b``/``\\f``; both decode to the same string, only the TOC digest differs.)
* Names are ``str``. Tar names that are not valid UTF-8 are carried in Python with the
  ``surrogateescape`` error handler (each undecodable byte becomes one lone surrogate
  U+DC80..U+DCFF). Go replaces each invalid UTF-8 byte by ``\\ufffd`` in JSON, so the encoder
  writes every lone surrogate as ``\\ufffd``: the TOC bytes are identical to Go's, and the
  name in the TOC differs from the tar name exactly as it does with the Go writer.
* Modification times are kept as the RFC3339 string Go stores (``modtime``);
  :func:`format_modtime` builds it from a tar mtime the way Go's writer does.

Decoding decisions: unknown keys are ignored; keys match struct fields case-insensitively
with an exact match preferred (as in Go); ``null`` leaves a field at its zero value; a
wrong JSON type, a non-integer or out-of-range number, bad base64, an entry that is not an
object, or malformed JSON raises :class:`~esgz.errors.FormatError`. Invalid UTF-8 inside
strings and lone surrogate escapes decode to U+FFFD (as in Go). Only whitespace may follow
the top-level object.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring
from typing import Any, Final, Literal

from esgz.errors import FormatError
from esgz.oci import gojson

__all__ = [
    "ENTRY_TYPES",
    "TOC",
    "EntryType",
    "TOCEntry",
    "encode_toc_into",
    "format_modtime",
    "go_json_string",
]

EntryType = Literal["dir", "reg", "symlink", "hardlink", "char", "block", "fifo", "chunk"]
ENTRY_TYPES: Final[frozenset[str]] = frozenset(
    ("dir", "reg", "symlink", "hardlink", "char", "block", "fifo", "chunk")
)

_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_GO_ZERO_TIME_UNIX: Final = -62135596800
"""Unix seconds of Go's zero ``time.Time`` (January 1, year 1, UTC)."""


@dataclass(slots=True)
class TOCEntry:
    """One entry of the TOC: a file, directory, link, device, fifo, or a further file chunk.

    Zero / empty values mean "absent" and are omitted from the JSON, as in Go.
    """

    name: str
    type: str
    size: int = 0
    modtime: str = ""
    """RFC3339 UTC time, whole seconds (``2024-01-02T03:04:05Z``), or empty."""
    link_name: str = ""
    mode: int = 0
    uid: int = 0
    gid: int = 0
    user_name: str = ""
    group_name: str = ""
    offset: int = 0
    inner_offset: int = 0
    dev_major: int = 0
    dev_minor: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)
    digest: str = ""
    chunk_offset: int = 0
    chunk_size: int = 0
    chunk_digest: str = ""


@dataclass(slots=True)
class TOC:
    """The whole TOC: ``{"version": 1, "entries": [...]}`` with entries in blob order."""

    version: int = 1
    entries: list[TOCEntry] = field(default_factory=list)

    def to_json(self) -> bytes:
        """Exactly Go's ``json.MarshalIndent(toc, "", "\\t")`` (no trailing newline)."""
        return encode_toc(self.version, self.entries)

    @classmethod
    def from_json(cls, data: bytes) -> TOC:
        """Decode TOC JSON as Go's ``json.Unmarshal`` into ``JTOC`` would."""
        return decode_toc(data)


def format_modtime(seconds: int, nanoseconds: int = 0) -> str:
    """The TOC ``modtime`` of a tar mtime: UTC, rounded to the second, RFC3339; "" for 0.

    Go omits the field for the Unix epoch (``t.Unix() == 0``, which is checked *before*
    rounding, so 0.6 s is omitted too) and for the zero ``time.Time``.
    """
    if seconds == 0:
        return ""
    if nanoseconds >= 500_000_000:
        seconds += 1
    try:
        moment = _EPOCH + timedelta(seconds=seconds)
    except OverflowError:
        raise FormatError(f"modification time {seconds} is out of range") from None
    if seconds == _GO_ZERO_TIME_UNIX and nanoseconds == 0:
        return ""
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}Z"
    )


# --------------------------------------------------------------------------------------
# Encoding

_NEEDS_GO_ESCAPE: Final = re.compile("[<>&\b\f\u2028\u2029\ud800-\udfff]")
"""Characters the C ``encode_basestring`` writes differently from Go 1.19."""


def go_json_string(value: str) -> str:
    """``value`` as a JSON string literal, escaped exactly like Go 1.19 ``encoding/json``.

    Most names need nothing beyond what the C-accelerated ``encode_basestring`` writes;
    the rest go through :func:`esgz.oci.gojson.quote` (a lone surrogate, i.e. an invalid
    UTF-8 byte of the tar name, becomes the escape ``\\ufffd``, as Go writes it).
    """
    if _NEEDS_GO_ESCAPE.search(value) is None:
        return encode_basestring(value)
    return gojson.quote(value, lone_surrogate="\\ufffd")


def _entry_lines(entry: TOCEntry) -> str:
    ind = "\n\t\t\t"
    parts = [
        '\t\t{\n\t\t\t"name": ',
        go_json_string(entry.name),
        ',\n\t\t\t"type": ',
        go_json_string(entry.type),
    ]
    app = parts.append
    if entry.size:
        app(f',{ind}"size": {entry.size}')
    if entry.modtime:
        app(f',{ind}"modtime": {go_json_string(entry.modtime)}')
    if entry.link_name:
        app(f',{ind}"linkName": {go_json_string(entry.link_name)}')
    if entry.mode:
        app(f',{ind}"mode": {entry.mode}')
    if entry.uid:
        app(f',{ind}"uid": {entry.uid}')
    if entry.gid:
        app(f',{ind}"gid": {entry.gid}')
    if entry.user_name:
        app(f',{ind}"userName": {go_json_string(entry.user_name)}')
    if entry.group_name:
        app(f',{ind}"groupName": {go_json_string(entry.group_name)}')
    if entry.offset:
        app(f',{ind}"offset": {entry.offset}')
    if entry.inner_offset:
        app(f',{ind}"innerOffset": {entry.inner_offset}')
    if entry.dev_major:
        app(f',{ind}"devMajor": {entry.dev_major}')
    if entry.dev_minor:
        app(f',{ind}"devMinor": {entry.dev_minor}')
    if entry.xattrs:
        keyed = sorted(
            ((key.encode("utf-8", "surrogateescape"), key, value))
            for key, value in entry.xattrs.items()
        )
        items = ",".join(
            f'\n\t\t\t\t{go_json_string(key)}: "{base64.b64encode(value).decode("ascii")}"'
            for _, key, value in keyed
        )
        app(f',{ind}"xattrs": {{{items}{ind}}}')
    if entry.digest:
        app(f',{ind}"digest": {go_json_string(entry.digest)}')
    if entry.chunk_offset:
        app(f',{ind}"chunkOffset": {entry.chunk_offset}')
    if entry.chunk_size:
        app(f',{ind}"chunkSize": {entry.chunk_size}')
    if entry.chunk_digest:
        app(f',{ind}"chunkDigest": {go_json_string(entry.chunk_digest)}')
    app("\n\t\t}")
    return "".join(parts)


def encode_toc(version: int, entries: Iterable[TOCEntry]) -> bytes:
    """The Go ``MarshalIndent`` bytes of a TOC with these entries (see :meth:`TOC.to_json`)."""
    return b"".join(encode_toc_pieces(version, entries))


def encode_toc_into(buffer: bytearray, version: int, entries: Iterable[TOCEntry]) -> None:
    """Append :func:`encode_toc`'s bytes to ``buffer``, one entry at a time (``entries``
    may be consumed as they are encoded, so that they need not all be kept)."""
    count = 0
    for entry in entries:
        text = _entry_lines(entry)
        if count:
            buffer += (",\n" + text).encode("utf-8")
        else:
            buffer += f'{{\n\t"version": {version},\n\t"entries": [\n{text}'.encode()
        count += 1
    if count:
        buffer += b"\n\t]\n}"
    else:
        buffer += f'{{\n\t"version": {version},\n\t"entries": []\n}}'.encode()


def encode_toc_pieces(version: int, entries: Iterable[TOCEntry]) -> list[bytes]:
    """:func:`encode_toc` as a list of pieces (one per entry), to stream a large TOC."""
    pieces: list[bytes] = []
    for entry in entries:
        text = _entry_lines(entry)
        pieces.append((",\n" + text if pieces else text).encode("utf-8"))
    if not pieces:
        return [f'{{\n\t"version": {version},\n\t"entries": []\n}}'.encode()]
    pieces[0] = f'{{\n\t"version": {version},\n\t"entries": [\n'.encode() + pieces[0]
    pieces.append(b"\n\t]\n}")
    return pieces


# --------------------------------------------------------------------------------------
# Decoding

_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _reject_constant(name: str) -> Any:
    raise FormatError(f"TOC JSON contains {name}, which is not JSON")


def _as_int(value: Any, key: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FormatError(f"TOC JSON: {key!r} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise FormatError(f"TOC JSON: {key!r} value {value} is out of range")
    return value


def _as_str(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise FormatError(f"TOC JSON: {key!r} must be a string, got {value!r}")
    return _SURROGATE.sub("\ufffd", value)


def _as_xattrs(value: Any, key: str) -> dict[str, bytes]:
    if not isinstance(value, dict):
        raise FormatError(f"TOC JSON: {key!r} must be an object, got {value!r}")
    out: dict[str, bytes] = {}
    for name, encoded in value.items():
        if encoded is None:
            out[_as_str(name, key)] = b""
            continue
        text = _as_str(encoded, f"{key}.{name}").replace("\r", "").replace("\n", "")
        try:
            out[_as_str(name, key)] = base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise FormatError(f"TOC JSON: xattr {name!r} is not valid base64") from None
    return out


_Converter = Callable[[Any, str], Any]


def _int64(value: Any, key: str) -> int:
    return _as_int(value, key, _INT64_MIN, _INT64_MAX)


_ENTRY_FIELDS: Final[dict[str, tuple[str, _Converter]]] = {
    "name": ("name", _as_str),
    "type": ("type", _as_str),
    "size": ("size", _int64),
    "modtime": ("modtime", _as_str),
    "linkName": ("link_name", _as_str),
    "mode": ("mode", _int64),
    "uid": ("uid", _int64),
    "gid": ("gid", _int64),
    "userName": ("user_name", _as_str),
    "groupName": ("group_name", _as_str),
    "offset": ("offset", _int64),
    "innerOffset": ("inner_offset", _int64),
    "devMajor": ("dev_major", _int64),
    "devMinor": ("dev_minor", _int64),
    "xattrs": ("xattrs", _as_xattrs),
    "digest": ("digest", _as_str),
    "chunkOffset": ("chunk_offset", _int64),
    "chunkSize": ("chunk_size", _int64),
    "chunkDigest": ("chunk_digest", _as_str),
}
_ENTRY_FIELDS_FOLDED: Final = {key.lower(): spec for key, spec in _ENTRY_FIELDS.items()}


def _field_spec(key: str) -> tuple[str, _Converter] | None:
    """The struct field a JSON key sets: exact name first, else case-insensitive (as Go)."""
    spec = _ENTRY_FIELDS.get(key)
    if spec is None:
        spec = _ENTRY_FIELDS_FOLDED.get(key.lower())
    return spec


def _decode_entry(raw: Any, index: int) -> TOCEntry:
    if not isinstance(raw, dict):
        raise FormatError(f"TOC JSON: entry {index} is not an object")
    values: dict[str, Any] = {}
    # Go applies keys in document order; a later key for the same field overwrites.
    for key, value in raw.items():
        spec = _field_spec(key)
        if spec is None or value is None:
            continue
        attr, convert = spec
        values[attr] = convert(value, key)
    entry = TOCEntry(name=values.pop("name", ""), type=values.pop("type", ""))
    for attr, value in values.items():
        setattr(entry, attr, value)
    return entry


def decode_toc(data: bytes) -> TOC:
    """Decode TOC JSON bytes (see :meth:`TOC.from_json`)."""
    text = data.decode("utf-8", "replace")
    try:
        raw = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as err:
        raise FormatError(f"TOC JSON is malformed: {err}") from None
    except RecursionError:
        raise FormatError("TOC JSON is nested too deeply") from None
    if not isinstance(raw, dict):
        raise FormatError("TOC JSON is not an object")
    version = 0
    raw_entries: Any = None
    for key, value in raw.items():
        folded = key.lower()
        if folded == "version" and value is not None:
            version = _as_int(value, key, _INT64_MIN, _INT64_MAX)
        elif folded == "entries":
            raw_entries = value
    if raw_entries is None:
        return TOC(version=version, entries=[])
    if not isinstance(raw_entries, list):
        raise FormatError("TOC JSON: 'entries' must be an array")
    entries = [_decode_entry(item, index) for index, item in enumerate(raw_entries)]
    return TOC(version=version, entries=entries)
