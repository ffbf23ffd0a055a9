"""What differs between the gzip eStargz and the zstd:chunked blob layouts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["LayerCodec", "TOCTail"]


@dataclass(frozen=True)
class TOCTail:
    """Everything after the last data member: blob bytes, uncompressed bytes, annotations."""

    blob_bytes: bytes
    """TOC (gzip member or skippable frame) followed by the footer."""
    stream_bytes: bytes
    """What the tail adds to the uncompressed stream (counts toward the DiffID)."""
    annotations: dict[str, str] = field(default_factory=dict)


class LayerCodec(Protocol):
    """Compression of members and the format's TOC and footer."""

    def compress(self, pieces: Sequence[bytes | memoryview]) -> bytes:
        """One independent member (gzip member / zstd frame) holding the concatenated
        pieces; called from many threads at once."""
        ...

    def tail(self, toc_json: bytes, toc_offset: int) -> TOCTail:
        """TOC and footer for a blob whose data members end at ``toc_offset``."""
        ...
