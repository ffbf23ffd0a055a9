"""Index a decoded TOC the way the Go reader's ``initFields`` does, with stricter checks.

What Go does and this module reproduces: names are cleaned (``path.Clean("/"+name)``
without the leading slash); ``chunk`` entries belong to the regular file before them;
a missing ``chunkSize`` means "to the end of the file"; implicit parent directories are
created (mode 0755); every hardlink target must exist; a missing ``userName`` /
``groupName`` is filled from the last one seen for the same id; each chunk's compressed
range ends at the next member start (``nextOffset``).

What this module rejects although Go would open the blob (each a
:class:`~esgz.errors.FormatError`): unknown entry types; names with a ``..`` component, an
absolute path or a NUL byte; a ``chunk`` that does not directly follow a non-empty
``reg`` or an earlier chunk of it; chunks that do not cover the file exactly; negative
sizes, ids or offsets; symlinks without a target; empty xattr names or link targets / xattr
names with a NUL byte; data offsets outside the data region; data entries whose
``(offset, innerOffset)`` do not strictly grow in TOC order (TOC order must be blob
order); hardlink cycles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, NamedTuple

from esgz.errors import FormatError
from esgz.estargz.constants import NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK
from esgz.estargz.ordering import clean_name, parent_name
from esgz.estargz.toc import ENTRY_TYPES, TOC, TOCEntry

__all__ = [
    "Chunk",
    "LayerEntry",
    "TOCIndex",
    "build_index",
    "resolve_hardlink",
]

_LANDMARKS: Final = frozenset((PREFETCH_LANDMARK, NO_PREFETCH_LANDMARK))


def _unsafe_name_reason(name: str) -> str | None:
    if ".." not in name and "\0" not in name and not name.startswith("/"):
        return None
    if "\0" in name:
        return "contains a NUL byte"
    if ".." in name.split("/"):
        return "has a '..' component"
    if name.startswith("/") and clean_name(name) != "":
        return "is an absolute path"
    return None


class Chunk(NamedTuple):
    """One compressed piece of a regular file's data.

    * ``offset``: blob offset of the gzip member / zstd frame that holds the chunk;
    * ``inner_offset``: uncompressed bytes to skip in that member before the chunk's data;
    * ``chunk_offset``: where the chunk starts within the file;
    * ``size``: uncompressed length of the chunk;
    * ``digest``: ``chunkDigest`` as recorded (may be empty);
    * ``end``: blob offset where the compressed range that may be decoded for it ends;
    * ``toc_index``: position of the chunk's entry in the TOC.
    """

    offset: int
    inner_offset: int
    chunk_offset: int
    size: int
    digest: str
    end: int
    toc_index: int


@dataclass(slots=True)
class LayerEntry:
    """A file, directory, link, device or fifo of the layer, as the reader sees it.

    ``name`` is the cleaned path ("" for the root). Fields missing from the TOC hold
    their zero value; ``user_name`` / ``group_name`` are filled in from earlier entries
    with the same id. ``toc_index`` is -1 for directories the TOC only implies.
    """

    name: str
    type: str
    toc_index: int
    size: int = 0
    mode: int = 0
    uid: int = 0
    gid: int = 0
    user_name: str = ""
    group_name: str = ""
    modtime: str = ""
    link_name: str = ""
    dev_major: int = 0
    dev_minor: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)
    digest: str = ""
    chunks: tuple[Chunk, ...] = ()

    @property
    def implicit(self) -> bool:
        """True for a parent directory that has no entry of its own in the TOC."""
        return self.toc_index < 0


@dataclass(slots=True)
class TOCIndex:
    """Everything the reader needs to look entries up and read their data."""

    entries: list[LayerEntry]
    """Non-chunk TOC entries in TOC order (duplicates included)."""
    by_name: dict[str, LayerEntry]
    """Cleaned name → entry (the last one of that name) plus implicit directories."""
    children: dict[str, dict[str, LayerEntry]]
    """Directory name → child base name → entry (hardlinks resolved to their target)."""
    landmark_position: int
    """Position in :attr:`entries` of the first root landmark, or -1."""


def _check_non_negative(entry: TOCEntry, index: int) -> None:
    lowest = min(
        entry.size,
        entry.uid,
        entry.gid,
        entry.offset,
        entry.inner_offset,
        entry.dev_major,
        entry.dev_minor,
        entry.chunk_offset,
        entry.chunk_size,
        entry.mode,
    )
    if lowest >= 0:
        return
    for label, value in (
        ("size", entry.size),
        ("uid", entry.uid),
        ("gid", entry.gid),
        ("offset", entry.offset),
        ("innerOffset", entry.inner_offset),
        ("devMajor", entry.dev_major),
        ("devMinor", entry.dev_minor),
        ("chunkOffset", entry.chunk_offset),
        ("chunkSize", entry.chunk_size),
        ("mode", entry.mode),
    ):
        if value < 0:
            raise FormatError(f"TOC entry {index} ({entry.name!r}) has a negative {label} {value}")


class _ChunkList:
    """Chunks of the regular file being indexed, checked when the file is complete."""

    def __init__(self, entry: LayerEntry, raw: TOCEntry, index: int) -> None:
        self.entry = entry
        self.pieces: list[tuple[int, TOCEntry]] = [(index, raw)]

    def finish(self) -> list[tuple[int, TOCEntry, int]]:
        size = self.entry.size
        sized: list[tuple[int, TOCEntry, int]] = []
        position = 0
        last = len(self.pieces) - 1
        for number, (index, raw) in enumerate(self.pieces):
            if raw.chunk_offset != position:
                raise FormatError(
                    f"TOC entry {index}: chunk of {self.entry.name!r} starts at "
                    f"{raw.chunk_offset}, expected {position}"
                )
            length = raw.chunk_size if raw.chunk_size > 0 else size - raw.chunk_offset
            if number == last and length >= size - position:
                length = size - position
            if length <= 0 or position + length > size:
                raise FormatError(
                    f"TOC entry {index}: chunk of {self.entry.name!r} at {position} has "
                    f"size {length}, beyond the file size {size}"
                )
            sized.append((index, raw, length))
            position += length
        if position != size:
            raise FormatError(f"chunks of {self.entry.name!r} cover {position} of its {size} bytes")
        return sized


def build_index(toc: TOC, data_end: int) -> TOCIndex:
    """Index ``toc``; ``data_end`` is where file data must end (the TOC's start)."""
    entries: list[LayerEntry] = []
    by_name: dict[str, LayerEntry] = {}
    user_names: dict[int, str] = {}
    group_names: dict[int, str] = {}
    files: list[_ChunkList] = []
    current: _ChunkList | None = None
    landmark_position = -1

    for index, raw in enumerate(toc.entries):
        if raw.type not in ENTRY_TYPES:
            raise FormatError(f"TOC entry {index} ({raw.name!r}) has unknown type {raw.type!r}")
        _check_non_negative(raw, index)
        if raw.type == "chunk":
            if current is None:
                raise FormatError(
                    f"TOC entry {index} is a chunk that does not follow a non-empty regular file"
                )
            current.pieces.append((index, raw))
            continue
        current = None
        reason = _unsafe_name_reason(raw.name)
        if reason is not None:
            raise FormatError(f"TOC entry {index}: name {raw.name!r} {reason}")
        if raw.type == "hardlink":
            reason = _unsafe_name_reason(raw.link_name)
            if reason is not None or not raw.link_name:
                raise FormatError(
                    f"TOC entry {index}: hardlink target {raw.link_name!r} {reason or 'is empty'}"
                )
        elif raw.type == "symlink" and (not raw.link_name or "\0" in raw.link_name):
            raise FormatError(
                f"TOC entry {index}: symlink target {raw.link_name!r} is empty or has a NUL byte"
            )
        for key in raw.xattrs:
            if not key or "\0" in key:
                raise FormatError(f"TOC entry {index}: invalid xattr name {key!r}")
        name = clean_name(raw.name)
        if raw.user_name:
            user_names[raw.uid] = raw.user_name
        if raw.group_name:
            group_names[raw.gid] = raw.group_name
        entry = LayerEntry(
            name=name,
            type=raw.type,
            toc_index=index,
            size=raw.size if raw.type == "reg" else 0,
            mode=raw.mode,
            uid=raw.uid,
            gid=raw.gid,
            user_name=raw.user_name or user_names.get(raw.uid, ""),
            group_name=raw.group_name or group_names.get(raw.gid, ""),
            modtime=raw.modtime,
            link_name=raw.link_name,
            dev_major=raw.dev_major,
            dev_minor=raw.dev_minor,
            xattrs=raw.xattrs,
            digest=raw.digest,
        )
        if landmark_position < 0 and name in _LANDMARKS:
            landmark_position = len(entries)
        entries.append(entry)
        by_name[name] = entry
        if raw.type == "reg" and raw.size > 0:
            if raw.chunk_offset != 0:
                raise FormatError(
                    f"TOC entry {index} ({raw.name!r}): first chunk has chunkOffset "
                    f"{raw.chunk_offset}"
                )
            current = _ChunkList(entry, raw, index)
            files.append(current)

    _attach_chunks(files, data_end)
    children = _link_tree(entries, by_name)
    return TOCIndex(entries, by_name, children, landmark_position)


def _attach_chunks(files: list[_ChunkList], data_end: int) -> None:
    """Give every regular file its chunks, with ``end`` = next member start (Go nextOffset)."""
    sized = [(chunks, chunks.finish()) for chunks in files]
    previous: tuple[int, int] | None = None
    previous_index = -1
    for _, pieces in sized:
        for index, raw, _length in pieces:
            position = (raw.offset, raw.inner_offset)
            if raw.offset >= data_end:
                raise FormatError(
                    f"TOC entry {index}: data offset {raw.offset} is outside the data region "
                    f"(which ends at {data_end})"
                )
            if previous is not None and position <= previous:
                raise FormatError(
                    f"TOC order is not blob order: entry {index} has data at "
                    f"{raw.offset}+{raw.inner_offset}, not after entry {previous_index} at "
                    f"{previous[0]}+{previous[1]}"
                )
            previous, previous_index = position, index
    next_start = data_end
    for chunks, pieces in reversed(sized):
        built: list[Chunk] = []
        for index, raw, length in reversed(pieces):
            built.append(
                Chunk(
                    offset=raw.offset,
                    inner_offset=raw.inner_offset,
                    chunk_offset=raw.chunk_offset,
                    size=length,
                    digest=raw.chunk_digest,
                    end=next_start,
                    toc_index=index,
                )
            )
            if raw.offset != 0 and raw.inner_offset == 0:
                next_start = raw.offset
        chunks.entry.chunks = tuple(reversed(built))


def _link_tree(
    entries: list[LayerEntry], by_name: dict[str, LayerEntry]
) -> dict[str, dict[str, LayerEntry]]:
    """Children per directory, implicit parents created, hardlinks resolved and checked."""
    children: dict[str, dict[str, LayerEntry]] = {}

    def directory(name: str) -> dict[str, LayerEntry]:
        if name not in by_name:
            by_name[name] = LayerEntry(name=name, type="dir", toc_index=-1, mode=0o755)
            if name != "":
                directory(parent_name(name))[name.rpartition("/")[2]] = by_name[name]
        return children.setdefault(name, {})

    directory("")
    for entry in entries:
        if entry.name == "":
            continue
        target = resolve_hardlink(entry, by_name) if entry.type == "hardlink" else entry
        directory(parent_name(entry.name))[entry.name.rpartition("/")[2]] = target
    return children


def resolve_hardlink(entry: LayerEntry, by_name: dict[str, LayerEntry]) -> LayerEntry:
    """The entry a hardlink (chain) points at; FormatError if missing or cyclic."""
    seen: set[str] = set()
    current = entry
    while current.type == "hardlink":
        if current.name in seen:
            raise FormatError(f"{entry.name!r} is a hardlink in a cycle of hardlinks")
        seen.add(current.name)
        target = by_name.get(clean_name(current.link_name))
        if target is None:
            raise FormatError(
                f"{current.name!r} is a hardlink but the linkname {current.link_name!r} isn't found"
            )
        current = target
    return current
