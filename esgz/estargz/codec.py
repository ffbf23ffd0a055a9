"""What differs between the gzip eStargz and the zstd:chunked blob layouts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["LayerCodec", "TOCTail"]

Buffer = bytes | memoryview


@dataclass(frozen=True)
class TOCTail:
    """Everything after the last data member: blob bytes, uncompressed bytes, annotations."""

    blob_bytes: bytes
    """TOC (gzip member or skippable frame) followed by the footer."""
    stream_bytes: bytes
    """What the tail adds to the uncompressed stream (counts toward the DiffID)."""
    annotations: dict[str, str] = field(default_factory=dict)


class LayerCodec(Protocol):
    """Compression of members and the format's TOC and footer.

    A member may be compressed in independent blocks of ``block_size`` bytes (each primed
    with the preceding 32 KiB of the member as dictionary) that are concatenated between
    :meth:`member_head` and :meth:`member_tail`; ``block_size`` 0 means members are
    compressed whole (then head and tail are empty).
    """

    block_size: int

    def member_head(self) -> bytes:
        """Bytes before a member's first block."""
        ...

    def compress_block(self, pieces: Sequence[Buffer], dictionary: bytes, final: bool) -> bytes:
        """One block of a member; called from many threads at once."""
        ...

    def member_tail(self, crc: int, size: int) -> bytes:
        """Bytes after a member's last block, given the CRC32 and length of its content."""
        ...

    def tail(self, toc_json: bytes, toc_offset: int) -> TOCTail:
        """TOC and footer for a blob whose data members end at ``toc_offset``."""
        ...
