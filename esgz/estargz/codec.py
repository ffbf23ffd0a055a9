"""What differs between the gzip eStargz and the zstd:chunked blob layouts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["LayerCodec", "TOCTail"]

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True)
class TOCTail:
    """Everything after the last data member: blob bytes, uncompressed bytes, annotations."""

    blob_parts: list[bytes | bytearray]
    """TOC (gzip member or skippable frame) followed by the footer."""
    stream_parts: list[bytes | bytearray]
    """What the tail adds to the uncompressed stream (counts toward the DiffID)."""
    annotations: dict[str, str] = field(default_factory=dict)


class LayerCodec(Protocol):
    """Compression of members and the format's TOC and footer.

    A member is :meth:`member_head`, then its compressed blocks, then :meth:`member_tail`.
    With ``block_size`` > 0 members are cut into independent blocks of that many bytes
    (each primed with the preceding 32 KiB of the member as dictionary); with 0 a member is
    one block. ``uses_crc``: the tail needs the CRC32 of the member's content (computed by
    the workers per block and combined in order).
    """

    block_size: int
    uses_crc: bool

    def member_head(self) -> bytes:
        """Bytes before a member's first block."""
        ...

    def compress_block(
        self, pieces: Sequence[Buffer], dictionary: bytes, final: bool
    ) -> bytes | bytearray:
        """One block of a member; called from many threads at once."""
        ...

    def member_tail(self, crc: int, size: int) -> bytes:
        """Bytes after a member's last block, given the CRC32 and length of its content."""
        ...

    def decompress_member(self, member: bytes, size: int) -> bytes | bytearray:
        """The ``size`` bytes of content of one whole member written by this codec."""
        ...

    toc_prefix: int
    """Bytes reserved at the start of the buffer given to :meth:`tail`."""

    def tail(self, toc: bytearray, toc_offset: int) -> TOCTail:
        """TOC and footer for data members ending at ``toc_offset``. ``toc`` holds
        :attr:`toc_prefix` reserved bytes, then the JSON; the codec fills the prefix and
        may append to it (it is not copied: the TOC of a large layer is large)."""
        ...
