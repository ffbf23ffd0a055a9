"""Turn entries (in output order) into compression members, as the Go writer does.

A new member starts exactly where each chunk of a non-empty regular file starts, so the
chunk's data is at uncompressed offset 0 of its member; the file's header, the headers
of any directories/links/empty files before it and the previous file's last chunk and
padding sit in the member before (FORMAT.md §5.2, normal mode, no innerOffset).
``chunkSize`` is recorded only when at least a full chunk remains (§5.2 rule).

A member is a list of pieces: bytes in memory, or ``(offset, length)`` ranges of the
spool file that a worker reads before compressing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from esgz.estargz.toc import TOCEntry

__all__ = ["Member", "Piece", "Planner", "SpoolRange"]

SpoolRange = tuple[int, int]
Piece = bytes | bytearray | memoryview | SpoolRange
_ZEROS: Final = bytes(512)


def piece_length(piece: Piece) -> int:
    """Length in bytes of a piece."""
    if isinstance(piece, tuple):
        return piece[1]
    return len(piece)


def _split(piece: Piece, n: int) -> tuple[Piece, Piece]:
    if isinstance(piece, tuple):
        offset, length = piece
        return (offset, n), (offset + n, length - n)
    view = memoryview(piece)
    return view[:n], view[n:]


@dataclass(slots=True)
class Member:
    """One gzip member / zstd frame of the output, before compression."""

    pieces: list[Piece] = field(default_factory=list)
    size: int = 0
    starts: TOCEntry | None = None
    """The data entry (chunk) whose ``offset`` is this member's start; None for the first."""
    digest_length: int = 0
    """Length of that chunk: sha256 of the first ``digest_length`` bytes is its digest."""

    def add(self, piece: Piece) -> None:
        """Append ``piece`` (empty ones are ignored; adjacent spool ranges are merged)."""
        length = piece_length(piece)
        if not length:
            return
        pieces = self.pieces
        if isinstance(piece, tuple) and pieces and isinstance(pieces[-1], tuple):
            last_offset, last_length = pieces[-1]
            if last_offset + last_length == piece[0]:
                pieces[-1] = (last_offset, last_length + length)
                self.size += length
                return
        pieces.append(piece)
        self.size += length


class Planner:
    """Feed entries in output order; closed members go to ``emit`` in order.

    Per entry: :meth:`header`, then for a non-empty regular file :meth:`begin_file`,
    :meth:`data` (any number of pieces, any sizes) and :meth:`end_file`.
    """

    def __init__(self, chunk_size: int, emit: Callable[[Member], None]) -> None:
        self._chunk_size = chunk_size
        self._emit = emit
        self._current = Member()
        self._file: TOCEntry | None = None
        self._chunks: list[TOCEntry] = []
        self._size = 0
        self._written = 0
        self._chunk_left = 0
        self._chunk_index = 0

    def header(self, piece: Piece) -> None:
        """Header block(s) of the next entry."""
        self._current.add(piece)

    def begin_file(self, toc: TOCEntry, size: int, chunks: list[TOCEntry]) -> None:
        """Start the payload of a regular file of ``size`` > 0 bytes.

        ``toc`` is its ``reg`` entry; further ``chunk`` entries are appended to ``chunks``
        (or, when ``chunks`` already holds them from an earlier planning of the same file,
        reused: their offsets and digests are the same in any order).
        """
        self._file = toc
        self._chunks = chunks
        self._size = size
        self._written = 0
        self._chunk_left = 0
        self._chunk_index = 0

    def data(self, piece: Piece) -> None:
        """The next bytes of the current file's payload."""
        length = piece_length(piece)
        while length:
            if not self._chunk_left:
                self._start_chunk()
            take = min(length, self._chunk_left)
            if take < length:
                head, piece = _split(piece, take)
                self._current.add(head)
            else:
                self._current.add(piece)
            self._chunk_left -= take
            self._written += take
            length -= take

    def _start_chunk(self) -> None:
        file = self._file
        if file is None or self._written >= self._size:
            raise ValueError("more payload than the file's size")
        remaining = self._size - self._written
        length = min(self._chunk_size, remaining)
        if self._written:
            if self._chunk_index < len(self._chunks):
                toc = self._chunks[self._chunk_index]
            else:
                toc = TOCEntry(name=file.name, type="chunk")
                self._chunks.append(toc)
            self._chunk_index += 1
        else:
            toc = file
        toc.chunk_offset = self._written
        if remaining >= self._chunk_size:
            toc.chunk_size = self._chunk_size
        if self._current.size:
            self._emit(self._current)
        self._current = Member(starts=toc, digest_length=length)
        self._chunk_left = length

    def end_file(self, padding: Piece | None = None) -> None:
        """Finish the file: it must have received exactly ``size`` bytes; add padding.

        ``padding`` is where the padding's zeros are (a range right after the payload's),
        by default bytes in memory.
        """
        if self._written != self._size:
            raise ValueError("payload shorter than the file's size")
        self._current.add(_ZEROS[: -self._size % 512] if padding is None else padding)
        self._file = None

    def finish(self) -> None:
        """Close the last member."""
        if self._current.size:
            self._emit(self._current)
        self._current = Member()
