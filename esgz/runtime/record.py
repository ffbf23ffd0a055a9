"""Saved profiles: ctr-remote record files (JSON lines) and plain prefetch lists.

A record file holds one JSON object per line, written exactly as Go's ``json.Encoder``
does (compact, ``<`` ``>`` ``&`` U+2028 U+2029 escaped as ``\\uXXXX``, control characters
as ``\\n`` ``\\r`` ``\\t`` or ``\\u00XX``, each byte of a path that is not UTF-8 as the
escape ``\\ufffd``, then ``\\n``)::

    {"path":"bin/busybox","manifestDigest":"sha256:…","layerIndex":0}

``manifestDigest`` is left out when empty, ``layerIndex`` when unknown. Readers accept
any whitespace-separated sequence of such objects (as Go's ``json.Decoder``).

A prefetch list is a text file of paths and globs, one per line: lines are trimmed,
blank lines and ``#`` comments skipped. A line with any of ``*?[`` is a glob (``*``,
``?``, ``[...]`` within one path segment, ``**`` across segments; :mod:`esgz.runtime.globs`)
matched against the union of the layers' entry names; matches are taken in sorted order,
so the result is deterministic (the reference iterates a Go map: random order).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from esgz.errors import FormatError
from esgz.estargz.layerindex import LayerIndex, entry_path
from esgz.oci import gojson
from esgz.runtime.globs import Glob, is_glob
from esgz.runtime.layermap import prioritized_by_layer

__all__ = [
    "RecordEntry",
    "encode_record",
    "expand_prefetch_list",
    "layer_lists_from_records",
    "parse_prefetch_list",
    "parse_records",
    "prefetch_list_by_layer",
    "read_prefetch_list",
    "read_record_file",
    "record_paths",
    "write_record_file",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RecordEntry:
    """One accessed file: its cleaned path, the profiled manifest and the layer index."""

    path: str
    manifest_digest: str | None = None
    layer_index: int | None = None


def _go_string(text: str) -> str:
    """``text`` as Go's encoder writes a string holding the bytes ``text`` stands for.

    A path that is not UTF-8 arrives with each bad byte as a ``surrogateescape``
    surrogate; Go writes the six characters ``\\ufffd`` for each such byte.
    """
    # Re-decoding joins escaped bytes that do form UTF-8; what stays escaped is invalid.
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape")
    return gojson.quote(text, lone_surrogate="\\ufffd")


def encode_record(entry: RecordEntry) -> str:
    """One record line (with its trailing newline), byte-identical to Go's encoder."""
    parts = [f'"path":{_go_string(entry.path)}']
    if entry.manifest_digest:
        parts.append(f'"manifestDigest":{_go_string(entry.manifest_digest)}')
    if entry.layer_index is not None:
        parts.append(f'"layerIndex":{int(entry.layer_index)}')
    return "{" + ",".join(parts) + "}\n"


def write_record_file(path: Path, entries: Iterable[RecordEntry]) -> None:
    """Write ``entries`` to ``path`` atomically (temp file in the same directory, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
            for entry in entries:
                out.write(encode_record(entry))
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def parse_records(text: str, *, source: str = "record file") -> list[RecordEntry]:
    """Parse a sequence of whitespace-separated record objects."""
    decoder = json.JSONDecoder()
    entries: list[RecordEntry] = []
    position = 0
    while True:
        while position < len(text) and text[position] in " \t\r\n":
            position += 1
        if position >= len(text):
            return entries
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as err:
            raise FormatError(f"{source}: invalid JSON at offset {err.pos}: {err.msg}") from None
        if not isinstance(value, dict) or not isinstance(value.get("path"), str):
            raise FormatError(f"{source}: record without a string 'path': {value!r}")
        digest = value.get("manifestDigest")
        index = value.get("layerIndex")
        if digest is not None and not isinstance(digest, str):
            raise FormatError(f"{source}: manifestDigest must be a string: {value!r}")
        if index is not None and (not isinstance(index, int) or isinstance(index, bool)):
            raise FormatError(f"{source}: layerIndex must be an integer: {value!r}")
        entries.append(RecordEntry(value["path"], digest or None, index))


def read_record_file(path: Path) -> list[RecordEntry]:
    """Read a record file (blocking); FormatError if it is not one."""
    return parse_records(
        path.read_text(encoding="utf-8", errors="surrogateescape"), source=str(path)
    )


def record_paths(entries: Iterable[RecordEntry]) -> list[str]:
    """The ``path`` values, de-duplicated in first-occurrence order (as ``--record-in``)."""
    return list(dict.fromkeys(entry.path for entry in entries))


def layer_lists_from_records(
    entries: Iterable[RecordEntry], manifest_digest: str | None, layer_count: int
) -> list[list[str]]:
    """Per layer (bottom = 0), its recorded paths, first-seen order, each once.

    As ``ctr-remote`` builds layer options from a record: entries of another manifest
    (when both digests are known) or with a missing or out-of-range ``layerIndex`` are
    ignored.
    """
    result: list[list[str]] = [[] for _ in range(layer_count)]
    seen: list[set[str]] = [set() for _ in range(layer_count)]
    for entry in entries:
        if manifest_digest and entry.manifest_digest and entry.manifest_digest != manifest_digest:
            continue
        index = entry.layer_index
        if index is None or not 0 <= index < layer_count:
            continue
        try:
            name = entry_path(entry.path)
        except FormatError:
            continue
        if name and name not in seen[index]:
            seen[index].add(name)
            result[index].append(name)
    return result


def prefetch_list_by_layer(lines: Iterable[str], layers: Sequence[LayerIndex]) -> list[list[str]]:
    """Prefetch-list lines → per-layer prioritized paths (globs over all layers' entries)."""
    names = (name for layer in layers for name in layer.entries)
    return prioritized_by_layer(expand_prefetch_list(lines, names), layers)


def parse_prefetch_list(text: str) -> list[str]:
    """The meaningful lines of a prefetch list: trimmed, no blanks, no ``#`` comments."""
    lines = [line.strip() for line in text.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def read_prefetch_list(path: Path) -> list[str]:
    """Read a prefetch list file (blocking); warns when it holds nothing."""
    log.info("using prefetch list from %s", path)
    lines = parse_prefetch_list(path.read_text(encoding="utf-8", errors="surrogateescape"))
    if not lines:
        log.warning("prefetch list is empty")
    return lines


def expand_prefetch_list(lines: Iterable[str], entry_names: Iterable[str]) -> list[str]:
    """Turn prefetch-list lines into cleaned paths: globs matched, in sorted order.

    ``entry_names`` is the union of the layers' entry names. Duplicates are dropped
    (first occurrence wins); a glob matching nothing is logged as a warning.
    """
    names: list[str] | None = None
    result: dict[str, None] = {}
    for line in lines:
        if is_glob(line):
            if names is None:
                names = sorted(set(entry_names))
            glob = Glob(line)
            matched = [name for name in names if glob.matches(name)]
            if not matched:
                log.warning("glob pattern %r matched no files", line)
            result.update(dict.fromkeys(matched))
            continue
        try:
            name = entry_path(line)
        except FormatError:
            log.warning("prefetch list: %r points outside the image; ignored", line)
            continue
        if name:
            result[name] = None
    return list(result)
