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

import hashlib
import logging
import os
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
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
from esgz.estargz.layout import Member, Piece, Planner, SpoolRange, piece_length
from esgz.estargz.options import ConvertOptions, LayerResult
from esgz.estargz.ordering import prioritized_order
from esgz.estargz.source import TarStream
from esgz.estargz.tarheader import encode_header, plain_header
from esgz.estargz.tarinput import TarEntry, TarReader
from esgz.estargz.toc import TOCEntry, encode_toc_pieces, format_modtime
from esgz.estargz.zstdchunked import ZstdChunkedCodec

__all__ = ["ConversionCancelled", "write_layer"]

log = logging.getLogger(__name__)

_TASK_BYTES: Final = 512 * 1024
_DIRECT_WRITE: Final = 64 * 1024
_NO_XATTRS: Final[dict[str, bytes]] = {}
"""Shared by every TOC entry without xattrs (never mutated)."""
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


def _materialize(fd: int, pieces: list[Piece]) -> list[bytes | memoryview]:
    out: list[bytes | memoryview] = []
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


@dataclass(slots=True)
class _TaskResult:
    compressed: list[bytes | bytearray]
    crcs: list[int]


def _run_task(fd: int, jobs: list[_Job], codec: LayerCodec, with_crc: bool) -> _TaskResult:
    """Worker: read spooled pieces, compress each block, CRC it."""
    compressed: list[bytes | bytearray] = []
    crcs: list[int] = []
    for job in jobs:
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
        spool: _Spool,
        pool: ThreadPoolExecutor,
        max_in_flight: int,
        check_cancel: Callable[[], None],
    ) -> None:
        """``max_in_flight`` bounds the uncompressed bytes of submitted, unwritten tasks."""
        self._dst = dst
        self._codec = codec
        self._block = codec.block_size
        self._spool = spool
        self._pool = pool
        self._max_in_flight = max_in_flight
        self._check_cancel = check_cancel
        self._batch: list[_Job] = []
        self._batch_bytes = 0
        self._pending: deque[tuple[Future[_TaskResult], list[_Job], int]] = deque()
        self._pending_bytes = 0
        self.offset = 0
        self.blob_hash = hashlib.sha256()
        self.diff_hash = hashlib.sha256()
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

    def _queue(self, job: _Job) -> None:
        self._batch.append(job)
        self._batch_bytes += job.size
        if self._batch_bytes >= _TASK_BYTES:
            self._submit()

    def _submit(self) -> None:
        if not self._batch:
            return
        self._check_cancel()
        self._spool.flush()
        batch = self._batch
        future = self._pool.submit(
            _run_task, self._spool.fd, batch, self._codec, self._codec.uses_crc
        )
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
            if job.first:
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

    def write_raw(self, blob_parts: list[bytes], stream_parts: list[bytes]) -> None:
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
    size: int = 0
    """Payload size of a regular file (0 for everything else)."""
    chunks: list[TOCEntry] = field(default_factory=list)
    header: SpoolRange | None = None
    data: SpoolRange | None = None
    """Where header and payload are in the spool (only when spooling)."""

    def plan(self, planner: Planner) -> None:
        """Feed a spooled item to the planner."""
        assert self.header is not None
        planner.header(self.header)
        if self.size:
            assert self.data is not None
            planner.begin_file(self.toc, self.size, self.chunks)
            planner.data(self.data)
            planner.end_file()


class _Ingest:
    """Turns parsed tar entries into items: header encoded, payload hashed when it spans
    several chunks, bytes sent to the planner (streaming) or to the spool."""

    def __init__(
        self, spool: _Spool, reader: TarReader, planner: Planner | None, chunk_size: int
    ) -> None:
        self._spool = spool
        self._reader = reader
        self._planner = planner
        self._chunk_size = chunk_size
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
        item = _Item(toc, cleaned, link_target, size)
        header = encode_header(entry)
        planner = self._planner
        if planner is not None:
            planner.header(header)
        else:
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
        else:
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

    def landmark(self, name: str) -> _Item:
        header = plain_header(name, len(LANDMARK_CONTENTS))
        toc = TOCEntry(name=name, type="reg", size=1, digest=LANDMARK_DIGEST)
        item = _Item(toc, name, None, 1)
        if self._planner is not None:
            self._planner.header(header)
            self._planner.begin_file(toc, 1, item.chunks)
            self._planner.data(LANDMARK_CONTENTS)
            self._planner.end_file()
        else:
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


def _final_toc(items: list[_Item]) -> list[TOCEntry]:
    """TOC entries in output order: last occurrence of each name, links checked."""
    last = _winners(items)
    _check_hardlinks(items, last)
    entries: list[TOCEntry] = []
    last_user: dict[int, str] = {}
    last_group: dict[int, str] = {}
    for index, item in enumerate(items):
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
        entries.append(toc)
        entries.extend(item.chunks)
    return entries


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


def write_layer(
    src: BinaryIO,
    dst: BinaryIO,
    options: ConvertOptions,
    cancel: threading.Event | None = None,
) -> LayerResult:
    """Convert the layer read from ``src``, writing the blob sequentially to ``dst``."""

    def check_cancel() -> None:
        if cancel is not None and cancel.is_set():
            raise ConversionCancelled

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
        prioritized = options.prioritized_files
        streaming = not prioritized
        ingest = _Ingest(spool, reader, planner if streaming else None, options.chunk_size)
        items: list[_Item] = []
        missing: list[str] = []
        if streaming:
            items.append(ingest.landmark(NO_PREFETCH_LANDMARK))
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
        if not streaming:
            items, missing = _prioritize(items, ingest, prioritized)
            if missing and options.strict_prioritized:
                raise FormatError(
                    "prioritized files not found in the layer: "
                    + ", ".join(repr(path) for path in missing)
                )
            _check_hardlinks(items, _winners(items))  # fail before compressing anything
            for item in items:
                item.plan(planner)
        planner.finish()
        output.finish()
        toc_entries = _final_toc(items)
        toc_pieces = encode_toc_pieces(1, toc_entries)
        del toc_entries, items
        toc_hash = hashlib.sha256()
        for piece in toc_pieces:
            toc_hash.update(piece)
        tail = codec.tail(toc_pieces, output.offset)
        output.write_raw(tail.blob_parts, tail.stream_parts)
    except BaseException:
        output.abandon()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        spool.close()
        stream.close()

    toc_digest = "sha256:" + toc_hash.hexdigest()
    annotations = {
        TOC_DIGEST_ANNOTATION: toc_digest,
        UNCOMPRESSED_SIZE_ANNOTATION: str(output.uncompressed_size),
        **tail.annotations,
    }
    return LayerResult(
        format=options.format,
        digest="sha256:" + output.blob_hash.hexdigest(),
        size=output.offset,
        diff_id="sha256:" + output.diff_hash.hexdigest(),
        toc_digest=toc_digest,
        uncompressed_size=output.uncompressed_size,
        annotations=annotations,
        missing_prioritized=tuple(missing),
        source_compression=stream.compression,
    )


def _prioritize(
    items: list[_Item], ingest: _Ingest, prioritized: tuple[str, ...]
) -> tuple[list[_Item], list[str]]:
    """The output order (prioritized entries, the landmark, the rest) and missing paths."""
    order = prioritized_order(
        [item.cleaned for item in items], lambda i: items[i].link_target, prioritized
    )
    landmark = ingest.landmark(PREFETCH_LANDMARK)
    ordered = [items[i] for i in order.prioritized]
    ordered.append(landmark)
    ordered.extend(items[i] for i in order.rest)
    return ordered, order.missing
