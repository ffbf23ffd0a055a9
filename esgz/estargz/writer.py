"""The layer writer: input tar stream → eStargz / zstd:chunked blob, in one pass.

How the work is split (docs/format.md, "Writer design"):

* The calling thread decompresses the input once, parses the tar and re-encodes each
  header; files larger than one chunk are hashed as they stream by (their ``digest``).
* Entries become **members** (:mod:`esgz.estargz.layout`) in output order. Members (or,
  with the zlib-ng backend, fixed 256 KiB blocks of large members) are batched into tasks
  of ≥ 512 KiB and compressed by a thread pool; the compressors and hashlib release the
  GIL, so compression runs on every core while the calling thread keeps reading. Results
  are written to ``dst`` strictly in order, hashing the output (blob digest), the
  uncompressed stream (DiffID) and each chunk (``chunkDigest``, also the ``digest`` of
  single-chunk files) on the way: nothing is decompressed again. At most
  ``(workers + 1) × max(chunk size, 1 MiB)`` bytes of input are in flight, which bounds
  memory.
* Without prioritized files the output order is the input order (after the leading
  ``.no.prefetch.landmark``), so members are compressed while the input is still being
  read. With prioritized files the order is only known at the end of the input (a
  hardlink target may come anywhere), so headers and payloads are first appended to an
  uncompressed **spool file** (a temporary file, so memory stays flat), then compressed
  from it in the final order — still decompressing the input only once.
* Member boundaries depend only on the entries and the chunk size, and tasks are written
  in order, so the output is byte-identical for any worker count.
* Offsets are filled into the TOC entries as members are written; the TOC, its member
  and the footer follow (:class:`~esgz.estargz.codec.LayerCodec`).

Input handling decisions (each documented in docs/format.md):

* Root-level ``.prefetch.landmark``, ``.no.prefetch.landmark`` and ``stargz.index.json``
  are dropped (re-converting an eStargz discards its landmark and TOC). Dropping anything
  that does not look like what an eStargz writer puts there logs a warning.
* Names: the raw tar name goes into the header and the TOC (``./usr/`` stays
  ``./usr/``), except that absolute names lose their leading ``/``; matching uses the
  cleaned name. Names, whiteouts and hardlinks are interpreted by
  :class:`~esgz.estargz.layerindex.LayerIndexBuilder`, as the profiler's unpacker does:
  what it refuses (a ``..`` component, an entry below a file or symlink of the layer, a
  hardlink to a missing, later, replaced or directory target, …) is a FormatError.
* Duplicate names keep tar's "last one wins": every occurrence stays in the tar stream in
  order (extracting the blob's tar gives what extracting the input gives) and the TOC lists
  only the last occurrence, at its position.
* Every hardlink must point at an entry that comes earlier in the output (Go's reader
  rejects missing targets, the snapshotter's metadata DB rejects later ones).
  Prioritized hardlinks pull their targets forward, and the input order is checked
  by the tree above, so the final check in output order is a safety net.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import os
import tempfile
import threading
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO, Final, cast

from esgz.errors import ConfigError, FormatError
from esgz.estargz.codec import LayerCodec
from esgz.estargz.constants import (
    EMPTY_DIGEST,
    LANDMARK_CONTENTS,
    LANDMARK_DIGEST,
    NO_PREFETCH_LANDMARK,
    PREFETCH_LANDMARK,
    TOC_DIGEST_ANNOTATION,
    TOC_TAR_NAME,
    UNCOMPRESSED_SIZE_ANNOTATION,
)
from esgz.estargz.deflate import BACKEND, EStargzCodec, crc32, crc32_combine
from esgz.estargz.layerindex import LayerIndexBuilder
from esgz.estargz.layout import Member, Piece, Planner, piece_length
from esgz.estargz.options import ConvertOptions, LayerResult
from esgz.estargz.ordering import prioritized_order
from esgz.estargz.source import TarStream
from esgz.estargz.tarheader import encode_header, plain_header
from esgz.estargz.tarinput import TarEntry, TarReader
from esgz.estargz.toc import TOCEntry, encode_toc_into, format_modtime
from esgz.estargz.zstdchunked import ZstdChunkedCodec

__all__ = [
    "ConversionCancelled",
    "PreparedLayer",
    "can_prepare",
    "prepare_layer",
    "write_layer",
    "write_layer_spooled",
]

log = logging.getLogger(__name__)

_TASK_BYTES: Final = 512 * 1024
_DIRECT_WRITE: Final = 64 * 1024
_NO_XATTRS: Final[dict[str, bytes]] = {}
"""Shared by every TOC entry without xattrs (never mutated)."""
_NO_CHUNKS: Final[list[TOCEntry]] = []
"""Shared by every item of at most one chunk (the planner appends only further chunks)."""
_IN_FLIGHT_UNIT: Final = 1 << 20
"""Per worker (plus one), max(chunk size, this) bytes of input may be queued/compressing."""
_SPOOL_BUFFER: Final = 1 << 20
_TYPES: Final = {
    "0": "reg",
    "1": "hardlink",
    "2": "symlink",
    "3": "char",
    "4": "block",
    "5": "dir",
    "6": "fifo",
}
_DROPPED_NAMES: Final = frozenset((PREFETCH_LANDMARK, NO_PREFETCH_LANDMARK, TOC_TAR_NAME))


class ConversionCancelled(Exception):
    """Raised inside the writer when its cancel event is set."""


class _NoHash:
    """Stands in for a hash nobody reads."""

    def update(self, data: bytes | bytearray | memoryview) -> None:
        pass


# --------------------------------------------------------------------------------------
# Spool


class _Spool:
    """An append-only temporary file; workers read it with ``os.preadv``."""

    def __init__(self, directory: str | None) -> None:
        self._file = tempfile.TemporaryFile(prefix="esgz-spool-", dir=directory)  # noqa: SIM115
        self.fd = self._file.fileno()
        self._buffer = bytearray()
        self.size = 0

    def append(self, data: bytes) -> int:
        """Append ``data``; returns its offset."""
        offset = self.size
        if len(data) >= _SPOOL_BUFFER // 4:
            self.flush()
            self._write(data)
        else:
            self._buffer += data
            if len(self._buffer) >= _SPOOL_BUFFER:
                self.flush()
        self.size += len(data)
        return offset

    def _write(self, data: bytes | bytearray) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]

    def flush(self) -> None:
        if self._buffer:
            self._write(self._buffer)
            self._buffer = bytearray()

    def close(self) -> None:
        self._file.close()


def _materialize(fd: int, pieces: list[Piece]) -> list[bytes | bytearray | memoryview]:
    out: list[bytes | bytearray | memoryview] = []
    for piece in pieces:
        if isinstance(piece, tuple):
            offset, length = piece
            data = os.pread(fd, length, offset)
            while len(data) < length:  # pragma: no cover - short reads are rare
                more = os.pread(fd, length - len(data), offset + len(data))
                if not more:
                    raise OSError("the spool file is shorter than expected")
                data += more
            out.append(data)
        else:
            out.append(piece)
    return out


def _slice(pieces: list[Piece], start: int, end: int) -> list[Piece]:
    """The pieces covering bytes ``[start, end)`` of the concatenation of ``pieces``."""
    out: list[Piece] = []
    position = 0
    for piece in pieces:
        length = piece_length(piece)
        lo, hi = max(start, position), min(end, position + length)
        if lo < hi:
            if lo == position and hi == position + length:
                out.append(piece)
            elif isinstance(piece, tuple):
                out.append((piece[0] + lo - position, hi - lo))
            else:
                out.append(memoryview(piece)[lo - position : hi - position])
        position += length
        if position >= end:
            break
    return out


@dataclass(slots=True)
class _Job:
    """One block of one member (the whole member when it is small)."""

    member: Member
    pieces: list[Piece]
    dictionary: list[Piece]
    size: int
    first: bool
    last: bool
    copy: tuple[int, int] | None = None
    """A member compressed earlier: (offset, length) of its bytes in the member file."""


@dataclass(slots=True)
class _TaskResult:
    compressed: list[bytes | bytearray]
    crcs: list[int]


def _run_task(fd: int, jobs: list[_Job], codec: LayerCodec, with_crc: bool) -> _TaskResult:
    """Worker: read spooled pieces, compress each block, CRC it (or, for a member
    compressed earlier, read it and decompress it for the hashes)."""
    compressed: list[bytes | bytearray] = []
    crcs: list[int] = []
    for job in jobs:
        if job.copy is not None:
            member = _materialize(fd, [job.copy])[0]
            assert isinstance(member, bytes)
            job.pieces = [codec.decompress_member(member, job.size)]
            compressed.append(member)
            if with_crc:
                crcs.append(0)
            continue
        pieces = _materialize(fd, job.pieces)
        job.pieces = list(pieces)
        dictionary = b"".join(_materialize(fd, job.dictionary)) if job.dictionary else b""
        compressed.append(codec.compress_block(pieces, dictionary, job.last))
        if with_crc:
            value = 0
            for piece in pieces:
                value = crc32(piece, value)
            crcs.append(value)
    return _TaskResult(compressed, crcs)


# --------------------------------------------------------------------------------------
# Output pipeline

_WINDOW: Final = 32 * 1024


class _Output:
    """Splits members into jobs, batches them into tasks for the pool, writes in order."""

    def __init__(
        self,
        dst: BinaryIO,
        codec: LayerCodec,
        spool: _Spool | None,
        pool: ThreadPoolExecutor,
        max_in_flight: int,
        check_cancel: Callable[[], None],
        *,
        fd: int | None = None,
        hashed: bool = True,
        on_member: Callable[[int, int, int, int], None] | None = None,
    ) -> None:
        """``max_in_flight`` bounds the uncompressed bytes of submitted, unwritten tasks.

        Workers read ranges from ``fd`` (default: the spool's). ``hashed``: hash the blob
        and the uncompressed stream. ``on_member(start, size, offset, length)`` is told
        where each member's content starts in the uncompressed stream, its size, and the
        offset and length of its compressed bytes.
        """
        self._dst = dst
        self._codec = codec
        self._block = codec.block_size
        self._spool = spool
        self._fd = fd if fd is not None else (spool.fd if spool is not None else -1)
        self._hashed = hashed
        self._on_member = on_member
        self._member_offset = 0
        self._pool = pool
        self._max_in_flight = max_in_flight
        self._check_cancel = check_cancel
        self._batch: list[_Job] = []
        self._batch_bytes = 0
        self._pending: deque[tuple[Future[_TaskResult], list[_Job], int]] = deque()
        self._pending_bytes = 0
        self.offset = 0
        self.blob_hash: Any = hashlib.sha256() if hashed else _NoHash()
        self.diff_hash: Any = hashlib.sha256() if hashed else _NoHash()
        self.uncompressed_size = 0
        # state of the member being written
        self._crc = 0
        self._chunk_hash: Any = None
        self._chunk_left = 0

    def add(self, member: Member) -> None:
        block = self._block
        if not block or member.size <= block:
            self._queue(_Job(member, member.pieces, [], member.size, True, True))
            return
        for start in range(0, member.size, block):
            end = min(start + block, member.size)
            self._queue(
                _Job(
                    member,
                    _slice(member.pieces, start, end),
                    _slice(member.pieces, max(0, start - _WINDOW), start),
                    end - start,
                    start == 0,
                    end == member.size,
                )
            )

    def add_copy(self, member: Member, offset: int, length: int) -> None:
        """A member whose compressed bytes are at ``offset`` in the workers' file."""
        self._queue(_Job(member, [], [], member.size, True, True, (offset, length)))

    def _queue(self, job: _Job) -> None:
        self._batch.append(job)
        self._batch_bytes += job.size
        if self._batch_bytes >= _TASK_BYTES:
            self._submit()

    def _submit(self) -> None:
        if not self._batch:
            return
        self._check_cancel()
        if self._spool is not None:
            self._spool.flush()
        batch = self._batch
        future = self._pool.submit(_run_task, self._fd, batch, self._codec, self._codec.uses_crc)
        self._pending.append((future, batch, self._batch_bytes))
        self._pending_bytes += self._batch_bytes
        self._batch = []
        self._batch_bytes = 0
        while self._pending and (
            self._pending_bytes > self._max_in_flight or self._pending[0][0].done()
        ):
            self._write_oldest()

    def _write_oldest(self) -> None:
        future, jobs, size = self._pending.popleft()
        self._pending_bytes -= size
        result = future.result()
        codec = self._codec
        out: list[bytes | bytearray] = []
        offset = self.offset
        diff_hash = self.diff_hash
        for index, job in enumerate(jobs):
            member = job.member
            if job.copy is not None:
                if member.starts is not None:
                    member.starts.offset = offset
                compressed = result.compressed[index]
                out.append(compressed)
                offset += len(compressed)
                for content in job.pieces:
                    diff_hash.update(cast(bytes, content))
                job.pieces = []
                self.uncompressed_size += member.size
                member.pieces = []
                continue
            if job.first:
                self._member_offset = offset
                if member.starts is not None:
                    member.starts.offset = offset
                    self._chunk_hash = hashlib.sha256()
                    self._chunk_left = member.digest_length
                head = codec.member_head()
                out.append(head)
                offset += len(head)
                self._crc = 0
            compressed = result.compressed[index]
            out.append(compressed)
            offset += len(compressed)
            buffers = cast(list[bytes | memoryview], job.pieces)  # materialized by the worker
            for piece in buffers:
                diff_hash.update(piece)
                if self._chunk_left > 0:
                    part = (
                        piece
                        if len(piece) <= self._chunk_left
                        else memoryview(piece)[: self._chunk_left]  # no copy
                    )
                    self._chunk_hash.update(part)
                    self._chunk_left -= len(part)
            if result.crcs:
                crc = result.crcs[index]
                self._crc = crc if job.first else crc32_combine(self._crc, crc, job.size)
            job.pieces = []
            if job.last:
                tail = codec.member_tail(self._crc, member.size)
                out.append(tail)
                offset += len(tail)
                if member.starts is not None:
                    member.starts.chunk_digest = "sha256:" + self._chunk_hash.hexdigest()
                    self._chunk_hash = None
                if self._on_member is not None:
                    start = self._member_offset
                    self._on_member(self.uncompressed_size, member.size, start, offset - start)
                self.uncompressed_size += member.size
                member.pieces = []
        self._emit(out)
        self.offset = offset

    def _emit(self, parts: list[bytes | bytearray]) -> None:
        """Write and hash ``parts``; small ones are joined, large ones go out as they are."""
        small: list[bytes | bytearray] = []
        for part in parts:
            if len(part) < _DIRECT_WRITE:
                small.append(part)
                continue
            if small:
                self._write(b"".join(small))
                small = []
            self._write(part)
        if small:
            self._write(b"".join(small))

    def _write(self, data: bytes | bytearray) -> None:
        self._dst.write(data)
        self.blob_hash.update(data)

    def write_raw(
        self, blob_parts: list[bytes | bytearray], stream_parts: list[bytes | bytearray]
    ) -> None:
        """Append bytes that were compressed by the caller (TOC, footer)."""
        for part in blob_parts:
            self._write(part)
            self.offset += len(part)
        for part in stream_parts:
            self.diff_hash.update(part)
            self.uncompressed_size += len(part)

    def finish(self) -> None:
        self._submit()
        while self._pending:
            self._write_oldest()

    def abandon(self) -> None:
        for future, _, _ in self._pending:
            future.cancel()
        self._pending.clear()


# --------------------------------------------------------------------------------------
# Entries


@dataclass(slots=True)
class _Item:
    toc: TOCEntry
    cleaned: str
    link_target: str | None
    """Cleaned target of a hardlink."""
    chunks: list[TOCEntry]
    """The file's further chunks; the shared, never filled :data:`_NO_CHUNKS` for an entry
    of at most one chunk (most entries: a list each would cost 56 bytes)."""
    size: int = 0
    """Payload size of a regular file (0 for everything else)."""
    header: Piece | None = None
    data: Piece | None = None
    """Where header and payload are: ranges of the spool (when spooling) or of the
    uncompressed stream of the members compressed in input order (when preparing), or
    bytes (a landmark)."""

    def plan(self, planner: Planner, *, padded: bool = False) -> None:
        """Feed a spooled or prepared item to the planner; ``padded``: the stream holding
        the payload's range has the tar padding right after it (prepared items)."""
        assert self.header is not None
        planner.header(self.header)
        if self.size:
            assert self.data is not None
            planner.begin_file(self.toc, self.size, self.chunks)
            planner.data(self.data)
            if padded and isinstance(self.data, tuple):
                start, length = self.data
                planner.end_file((start + length, -length % 512))
            else:
                planner.end_file()


class _Ingest:
    """Turns parsed tar entries into items: header encoded, payload hashed when it spans
    several chunks, bytes sent to the planner (streaming) or to the spool."""

    def __init__(
        self,
        spool: _Spool | None,
        reader: TarReader,
        planner: Planner | None,
        chunk_size: int,
        *,
        track: bool = False,
    ) -> None:
        """``track``: record where each item's header and payload are in the stream fed to
        ``planner`` (:attr:`_Item.header`, :attr:`_Item.data`)."""
        self._spool = spool
        self._reader = reader
        self._planner = planner
        self._chunk_size = chunk_size
        self._track = track
        self.position = 0
        """Bytes fed to the planner so far (when tracking)."""
        self._modtimes: dict[tuple[int, int], str] = {}
        self.tree = LayerIndexBuilder()
        """The layer as a tree: refuses what the unpacker and the mapper would refuse."""

    def _modtime(self, entry: TarEntry) -> str:
        key = (entry.mtime, entry.mtime_ns)
        text = self._modtimes.get(key)
        if text is None:
            try:
                text = format_modtime(entry.mtime, entry.mtime_ns)
            except FormatError as err:
                raise FormatError(f"tar entry {entry.name!r}: {err.message}") from None
            if len(self._modtimes) < 4096:
                self._modtimes[key] = text
        return text

    def item(self, entry: TarEntry) -> _Item | None:
        change = self.tree.add(entry)  # names, whiteouts and hardlinks as every reader sees them
        cleaned = change.name
        if "/" not in cleaned and cleaned in _DROPPED_NAMES:
            self._drop(entry, cleaned)
            return None
        if entry.name.startswith("/"):
            entry.name = entry.name.lstrip("/") or "./"
        kind = _TYPES[entry.typeflag]
        link_target: str | None = None
        if kind == "hardlink":
            if entry.linkname.startswith("/"):
                entry.linkname = entry.linkname.lstrip("/")
            link_target = change.target

        toc = TOCEntry(
            name=entry.name,
            type=kind,
            size=entry.size,
            modtime=self._modtime(entry),
            link_name=entry.linkname if kind in ("hardlink", "symlink") else "",
            mode=entry.mode,
            uid=entry.uid,
            gid=entry.gid,
            user_name=entry.uname,
            group_name=entry.gname,
            dev_major=entry.devmajor if kind in ("char", "block") else 0,
            dev_minor=entry.devminor if kind in ("char", "block") else 0,
            xattrs=entry.xattrs or _NO_XATTRS,
        )
        size = entry.size if kind == "reg" else 0
        item = _Item(toc, cleaned, link_target, [] if size > self._chunk_size else _NO_CHUNKS, size)
        header = encode_header(entry)
        planner = self._planner
        if planner is not None:
            planner.header(header)
            if self._track:
                item.header = (self.position, len(header))
                self.position += len(header)
        else:
            assert self._spool is not None
            item.header = (self._spool.append(header), len(header))
        if kind != "reg":
            return item
        if not size:
            toc.digest = EMPTY_DIGEST
            return item
        hasher = hashlib.sha256() if size > self._chunk_size else None
        if planner is not None:
            planner.begin_file(toc, size, item.chunks)
            for piece in self._reader.payload(entry):
                if hasher is not None:
                    hasher.update(piece)
                planner.data(piece)
            planner.end_file()
            if self._track:
                item.data = (self.position, size)
                self.position += size + -size % 512
        else:
            assert self._spool is not None
            start = self._spool.size
            for piece in self._reader.payload(entry):
                if hasher is not None:
                    hasher.update(piece)
                self._spool.append(piece)
            item.data = (start, self._spool.size - start)
        if hasher is not None:
            toc.digest = "sha256:" + hasher.hexdigest()
        return item

    def _drop(self, entry: TarEntry, cleaned: str) -> None:
        expected = False
        if cleaned == TOC_TAR_NAME:
            expected = entry.typeflag == "0" and entry.mode == 0 and entry.name == TOC_TAR_NAME
        elif entry.typeflag == "0" and entry.size == 1:
            expected = b"".join(self._reader.payload(entry)) == LANDMARK_CONTENTS
        if expected:
            log.debug("dropping %s from the input (it is regenerated)", entry.name)
        else:
            log.warning(
                "dropping input entry %r: the name is reserved for the eStargz %s",
                entry.name,
                "TOC" if cleaned == TOC_TAR_NAME else "prefetch landmark",
            )

    def landmark(self, name: str, *, in_memory: bool = False) -> _Item:
        header = plain_header(name, len(LANDMARK_CONTENTS))
        toc = TOCEntry(name=name, type="reg", size=1, digest=LANDMARK_DIGEST)
        item = _Item(toc, name, None, _NO_CHUNKS, 1)
        if in_memory:
            item.header = header
            item.data = LANDMARK_CONTENTS
        elif self._planner is not None:
            self._planner.header(header)
            self._planner.begin_file(toc, 1, item.chunks)
            self._planner.data(LANDMARK_CONTENTS)
            self._planner.end_file()
        else:
            assert self._spool is not None
            item.header = (self._spool.append(header), len(header))
            item.data = (self._spool.append(LANDMARK_CONTENTS), 1)
        return item


# --------------------------------------------------------------------------------------
# TOC


def _winners(items: list[_Item]) -> dict[str, int]:
    """Index of the last occurrence of each cleaned name (the one the TOC lists)."""
    return {item.cleaned: index for index, item in enumerate(items)}


def _check_hardlinks(items: list[_Item], last: dict[str, int]) -> None:
    """Every listed hardlink must point at a listed entry that comes before it."""
    seen: set[str] = set()
    for index, item in enumerate(items):
        if last[item.cleaned] != index:
            continue
        if item.link_target is not None and item.link_target not in seen:
            where = "comes after it" if item.link_target in last else "is not in the layer"
            raise FormatError(
                f"hardlink {item.toc.name!r}: its target {item.toc.link_name!r} {where} "
                "(readers need the target first)"
            )
        seen.add(item.cleaned)


def _final_toc(items: list[_Item]) -> Iterator[TOCEntry]:
    """TOC entries in output order: last occurrence of each name, links checked.

    Empties ``items`` and drops each item once its entries have been taken.
    """
    last = _winners(items)
    _check_hardlinks(items, last)
    queue = deque(items)
    items.clear()
    last_user: dict[int, str] = {}
    last_group: dict[int, str] = {}
    index = -1
    while queue:
        item = queue.popleft()
        index += 1
        if last[item.cleaned] != index:
            continue
        toc = item.toc
        if item.size and not toc.digest:
            toc.digest = toc.chunk_digest  # single-chunk file: the chunk is the file
        # userName/groupName only when they change for an id (Go's nameIfChanged).
        if toc.user_name:
            if last_user.get(toc.uid) == toc.user_name:
                toc.user_name = ""
            else:
                last_user[toc.uid] = toc.user_name
        if toc.group_name:
            if last_group.get(toc.gid) == toc.group_name:
                toc.group_name = ""
            else:
                last_group[toc.gid] = toc.group_name
        yield toc
        yield from item.chunks


# --------------------------------------------------------------------------------------
# Entry point


def _codec(options: ConvertOptions) -> LayerCodec:
    if options.format == "zstdchunked":
        return ZstdChunkedCodec(options.level)
    backend = os.environ.get("ESGZ_DEFLATE_BACKEND") or BACKEND
    try:
        return EStargzCodec(options.level, backend)
    except ValueError as err:
        raise ConfigError(f"ESGZ_DEFLATE_BACKEND: {err}") from None


def _canceller(cancel: threading.Event | None) -> Callable[[], None]:
    def check_cancel() -> None:
        if cancel is not None and cancel.is_set():
            raise ConversionCancelled

    return check_cancel


def _read_entries(
    reader: TarReader, ingest: _Ingest, check_cancel: Callable[[], None]
) -> list[_Item]:
    items: list[_Item] = []
    count = 0
    for entry in reader:
        item = ingest.item(entry)
        if item is None:
            continue
        items.append(item)
        count += 1
        if count % 256 == 0:
            check_cancel()
    ingest.tree.finish()  # hardlinks whose target was replaced after them
    return items


def _missing(missing: list[str], options: ConvertOptions) -> None:
    if missing and options.strict_prioritized:
        raise FormatError(
            "prioritized files not found in the layer: " + ", ".join(repr(path) for path in missing)
        )


@dataclass(slots=True)
class _Tail:
    toc_digest: str
    annotations: dict[str, str]


def _write_tail(output: _Output, items: list[_Item], codec: LayerCodec) -> _Tail:
    """TOC (entries in output order, offsets filled in by ``output``) and footer.

    ``items`` is consumed: each item is released once its TOC JSON is encoded, so the
    JSON grows while the entries shrink.
    """
    toc = bytearray(codec.toc_prefix)
    encode_toc_into(toc, 1, _final_toc(items))
    toc_hash = hashlib.sha256(memoryview(toc)[codec.toc_prefix :])
    tail = codec.tail(toc, output.offset)
    del toc
    output.write_raw(tail.blob_parts, tail.stream_parts)
    return _Tail("sha256:" + toc_hash.hexdigest(), tail.annotations)


def _result(
    options: ConvertOptions, output: _Output, tail: _Tail, missing: list[str], compression: str
) -> LayerResult:
    annotations = {
        TOC_DIGEST_ANNOTATION: tail.toc_digest,
        UNCOMPRESSED_SIZE_ANNOTATION: str(output.uncompressed_size),
        **tail.annotations,
    }
    return LayerResult(
        format=options.format,
        digest="sha256:" + output.blob_hash.hexdigest(),
        size=output.offset,
        diff_id="sha256:" + output.diff_hash.hexdigest(),
        toc_digest=tail.toc_digest,
        uncompressed_size=output.uncompressed_size,
        annotations=annotations,
        missing_prioritized=tuple(missing),
        source_compression=compression,
    )


def write_layer(
    src: BinaryIO,
    dst: BinaryIO,
    options: ConvertOptions,
    cancel: threading.Event | None = None,
) -> LayerResult:
    """Convert the layer read from ``src``, writing the blob sequentially to ``dst``.

    With prioritized files the members are compressed while the input is read
    (:func:`prepare_layer`) and assembled in the prioritized order afterwards.
    """
    if not options.prioritized_files:
        return _write_streaming(src, dst, options, cancel)
    if not can_prepare(options):
        return write_layer_spooled(src, dst, options, cancel)
    prepared = prepare_layer(src, options, cancel)
    try:
        return prepared.finish(dst, options.prioritized_files, cancel)
    finally:
        prepared.close()


def _write_streaming(
    src: BinaryIO,
    dst: BinaryIO,
    options: ConvertOptions,
    cancel: threading.Event | None = None,
) -> LayerResult:
    """Without prioritized files: members written in input order as the input is read."""
    check_cancel = _canceller(cancel)
    codec = _codec(options)
    workers = options.worker_count
    stream = TarStream(src)
    reader = TarReader(stream)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="esgz-compress")
    in_flight = (workers + 1) * max(options.chunk_size, _IN_FLIGHT_UNIT)
    output = _Output(dst, codec, None, pool, in_flight, check_cancel)
    try:
        planner = Planner(options.chunk_size, output.add)
        ingest = _Ingest(None, reader, planner, options.chunk_size)
        landmark = ingest.landmark(NO_PREFETCH_LANDMARK)
        items = [landmark, *_read_entries(reader, ingest, check_cancel)]
        del ingest
        planner.finish()
        output.finish()
        tail = _write_tail(output, items, codec)
    except BaseException:
        output.abandon()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        stream.close()
    return _result(options, output, tail, [], stream.compression)


def write_layer_spooled(
    src: BinaryIO,
    dst: BinaryIO,
    options: ConvertOptions,
    cancel: threading.Event | None = None,
) -> LayerResult:
    """The former prioritized path, kept as the reference the tests compare with: the
    input is spooled uncompressed, then compressed in the prioritized order."""
    if not options.prioritized_files:
        return _write_streaming(src, dst, options, cancel)
    check_cancel = _canceller(cancel)
    codec = _codec(options)
    workers = options.worker_count
    stream = TarStream(src)
    reader = TarReader(stream)
    spool = _Spool(str(options.temp_dir) if options.temp_dir is not None else None)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="esgz-compress")
    in_flight = (workers + 1) * max(options.chunk_size, _IN_FLIGHT_UNIT)
    output = _Output(dst, codec, spool, pool, in_flight, check_cancel)
    try:
        planner = Planner(options.chunk_size, output.add)
        ingest = _Ingest(spool, reader, None, options.chunk_size)
        items = _read_entries(reader, ingest, check_cancel)
        items, missing = _prioritize(items, ingest, options.prioritized_files)
        _missing(missing, options)
        _check_hardlinks(items, _winners(items))  # fail before compressing anything
        for item in items:
            item.plan(planner)
        planner.finish()
        output.finish()
        tail = _write_tail(output, items, codec)
    except BaseException:
        output.abandon()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        spool.close()
        stream.close()
    return _result(options, output, tail, missing, stream.compression)


def _prioritize(
    items: list[_Item], ingest: _Ingest, prioritized: tuple[str, ...], *, in_memory: bool = False
) -> tuple[list[_Item], list[str]]:
    """The output order (prioritized entries, the landmark, the rest) and missing paths."""
    order = prioritized_order(
        [item.cleaned for item in items], lambda i: items[i].link_target, prioritized
    )
    landmark = ingest.landmark(PREFETCH_LANDMARK, in_memory=in_memory)
    ordered = [items[i] for i in order.prioritized]
    ordered.append(landmark)
    ordered.extend(items[i] for i in order.rest)
    return ordered, order.missing


# --------------------------------------------------------------------------------------
# Prepared layers: compress first, order later


class _MemberLog:
    """The members compressed in input order: where each one's content starts in the
    uncompressed stream, its size, and its compressed bytes in the member file."""

    def __init__(self) -> None:
        self.starts = array("q")
        self.sizes = array("q")
        self.offsets = array("q")
        self.lengths = array("q")

    def add(self, start: int, size: int, offset: int, length: int) -> None:
        self.starts.append(start)
        self.sizes.append(size)
        self.offsets.append(offset)
        self.lengths.append(length)

    def find(self, start: int, size: int) -> int:
        """Index of the member holding exactly ``[start, start + size)``, or -1."""
        index = bisect.bisect_left(self.starts, start)
        if index < len(self.starts) and self.starts[index] == start and self.sizes[index] == size:
            return index
        return -1

    def covering(self, position: int) -> int:
        """Index of the member whose content holds byte ``position``."""
        return bisect.bisect_right(self.starts, position) - 1


class _Resolver:
    """Reads ranges of the input-order uncompressed stream back from the member file
    (decompressing the members involved; only members whose content changes with the
    order need this)."""

    def __init__(self, fd: int, log: _MemberLog, codec: LayerCodec) -> None:
        self._fd = fd
        self._log = log
        self._codec = codec
        self._index = -1
        self._data: bytes | bytearray = b""

    def _member(self, index: int) -> bytes | bytearray:
        if index != self._index:
            log = self._log
            raw = _materialize(self._fd, [(log.offsets[index], log.lengths[index])])[0]
            self._data = self._codec.decompress_member(bytes(raw), log.sizes[index])
            self._index = index
        return self._data

    def read(self, start: int, length: int) -> bytes | bytearray:
        log = self._log
        parts: list[bytes | bytearray] = []
        end = start + length
        index = log.covering(start)
        while start < end:
            data = self._member(index)
            base = log.starts[index]
            take = min(end, base + len(data)) - start
            if index < 0 or take <= 0:
                raise RuntimeError("a range outside the prepared members")
            parts.append(data[start - base : start - base + take])
            start += take
            index += 1
        return parts[0] if len(parts) == 1 else b"".join(parts)


class PreparedLayer:
    """A layer read and compressed in input order, waiting for its output order.

    :func:`prepare_layer` reads the source once and compresses every member as in a
    conversion without prioritized files (a chunk's compressed bytes do not depend on
    where it lands), spooling the *compressed* members to a temporary file.
    :meth:`finish` plans the members of the prioritized order: each one whose content is
    a member already compressed is copied (decompressed once more, in the workers, for the
    DiffID), the others — the ones around moved entries and the landmarks, a few per
    prioritized file — are read back and compressed again. The output is byte-identical to
    :func:`write_layer_spooled`'s. :meth:`finish` can be called once; :meth:`close`
    removes the temporary file.
    """

    def __init__(
        self,
        options: ConvertOptions,
        codec: LayerCodec,
        members: BinaryIO,
        log: _MemberLog,
        items: list[_Item],
        ingest: _Ingest,
        compression: str,
    ) -> None:
        self.options = options
        self._codec = codec
        self._members = members
        self._log = log
        self._items = items
        self._ingest = ingest
        self.source_compression = compression
        self._finished = False

    @property
    def compressed_size(self) -> int:
        """Bytes of compressed members spooled."""
        return sum(self._log.lengths)

    def close(self) -> None:
        """Remove the spooled members."""
        self._members.close()
        self._items = []

    def finish(
        self,
        dst: BinaryIO,
        prioritized: tuple[str, ...],
        cancel: threading.Event | None = None,
    ) -> LayerResult:
        """Write the blob with ``prioritized`` files first (or, with none, the layout of a
        conversion without prioritized files) sequentially to ``dst``."""
        if self._finished:
            raise RuntimeError("a prepared layer is finished once")
        self._finished = True
        options = self.options
        check_cancel = _canceller(cancel)
        codec = self._codec
        items = self._items
        self._items = []
        missing: list[str] = []
        if prioritized:
            items, missing = _prioritize(items, self._ingest, prioritized, in_memory=True)
            _missing(missing, options)
            _check_hardlinks(items, _winners(items))
        else:
            items.insert(0, self._ingest.landmark(NO_PREFETCH_LANDMARK, in_memory=True))
        fd = self._members.fileno()
        resolver = _Resolver(fd, self._log, codec)
        log = self._log
        workers = options.worker_count
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="esgz-compress")
        in_flight = (workers + 1) * max(options.chunk_size, _IN_FLIGHT_UNIT)
        output = _Output(dst, codec, None, pool, in_flight, check_cancel, fd=fd)

        def place(member: Member) -> None:
            pieces = member.pieces
            if len(pieces) == 1 and isinstance(pieces[0], tuple):
                index = log.find(*pieces[0])
                if index >= 0:
                    output.add_copy(member, log.offsets[index], log.lengths[index])
                    return
            member.pieces = [
                resolver.read(*piece) if isinstance(piece, tuple) else piece for piece in pieces
            ]
            output.add(member)

        try:
            planner = Planner(options.chunk_size, place)
            for count, item in enumerate(items):
                item.plan(planner, padded=True)
                if count % 256 == 0:
                    check_cancel()
            planner.finish()
            output.finish()
            tail = _write_tail(output, items, codec)
        except BaseException:
            output.abandon()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return _result(options, output, tail, missing, self.source_compression)


def can_prepare(options: ConvertOptions) -> bool:
    """Whether :func:`prepare_layer` supports the format: eStargz only. (A zstd frame's
    bytes depend on whether it was compressed in one call or streamed in pieces, and the
    pieces differ between the input-order and the spooled plans, so a frame compressed in
    input order is not always the frame the prioritized output has.)"""
    return options.format == "estargz"


def prepare_layer(
    src: BinaryIO, options: ConvertOptions, cancel: threading.Event | None = None
) -> PreparedLayer:
    """Read the layer from ``src`` and compress its members in input order (a temporary
    file in ``options.temp_dir`` holds them); ``options.prioritized_files`` is ignored:
    the order is given to :meth:`PreparedLayer.finish`. eStargz only
    (:func:`can_prepare`); ConfigError for zstd:chunked."""
    if not can_prepare(options):
        raise ConfigError("a layer can be prepared for eStargz only")
    check_cancel = _canceller(cancel)
    codec = _codec(options)
    workers = options.worker_count
    stream = TarStream(src)
    reader = TarReader(stream)
    directory = str(options.temp_dir) if options.temp_dir is not None else None
    members = tempfile.TemporaryFile(prefix="esgz-members-", dir=directory)  # noqa: SIM115
    log = _MemberLog()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="esgz-compress")
    in_flight = (workers + 1) * max(options.chunk_size, _IN_FLIGHT_UNIT)
    output = _Output(
        cast(BinaryIO, members),
        codec,
        None,
        pool,
        in_flight,
        check_cancel,
        hashed=False,
        on_member=log.add,
    )
    try:
        planner = Planner(options.chunk_size, output.add)
        ingest = _Ingest(None, reader, planner, options.chunk_size, track=True)
        items = _read_entries(reader, ingest, check_cancel)
        planner.finish()
        output.finish()
        members.flush()
    except BaseException:
        output.abandon()
        members.close()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        stream.close()
    return PreparedLayer(options, codec, members, log, items, ingest, stream.compression)
