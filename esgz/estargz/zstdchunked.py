"""The zstd:chunked layout (FORMAT.md §11): zstd frames, a skippable-frame TOC and footer.

Every member is an independent zstd frame with a content checksum and without a content
size (as the Go writer's frames). The TOC is the raw JSON (no tar wrapper) compressed as
one frame and wrapped in a skippable frame; the footer is a second skippable frame with
the 40-byte payload. Neither adds anything to the uncompressed stream, so the DiffID
covers the entries only (no TOC entry, no end-of-archive blocks). Annotations:
``manifest-checksum`` is the sha256 of the compressed TOC frame, ``manifest-position``
``"<offset>:<compressed length>:<uncompressed length>:1"``.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections.abc import Sequence

import zstandard

from esgz.estargz.codec import TOCTail
from esgz.estargz.constants import (
    ZSTD_CHUNKED_MANIFEST_TYPE,
    ZSTD_MANIFEST_CHECKSUM_ANNOTATION,
    ZSTD_MANIFEST_POSITION_ANNOTATION,
    ZSTD_SKIPPABLE_MAGIC,
)
from esgz.estargz.footer import ZstdChunkedFooter, zstd_chunked_footer

__all__ = ["ZstdChunkedCodec"]


class ZstdChunkedCodec:
    """zstd frames for members; skippable frames for the TOC and footer."""

    def __init__(self, level: int) -> None:
        self.level = level
        self._local = threading.local()

    def _compressor(self) -> zstandard.ZstdCompressor:
        compressor: zstandard.ZstdCompressor | None = getattr(self._local, "compressor", None)
        if compressor is None:
            compressor = zstandard.ZstdCompressor(
                level=self.level, write_checksum=True, write_content_size=False
            )
            self._local.compressor = compressor
        return compressor

    block_size = 0
    """Frames are compressed whole."""
    uses_crc = False

    def member_head(self) -> bytes:
        """Nothing: a frame is self-contained."""
        return b""

    def member_tail(self, crc: int, size: int) -> bytes:
        """Nothing: a frame is self-contained."""
        return b""

    def compress_block(
        self, pieces: Sequence[bytes | bytearray | memoryview], dictionary: bytes, final: bool
    ) -> bytes:
        """One whole zstd frame."""
        if len(pieces) == 1:
            return self._compressor().compress(pieces[0])
        stream = self._compressor().compressobj()
        out = [stream.compress(piece) for piece in pieces]
        out.append(stream.flush())
        return b"".join(out)

    def decompress_member(self, member: bytes, size: int) -> bytes | bytearray:
        """The content of one frame (frames carry no content size: ``size`` bounds it)."""
        data: bytes = zstandard.ZstdDecompressor().decompress(member, max_output_size=size)
        return data

    toc_prefix = 0

    def tail(self, toc: bytearray, toc_offset: int) -> TOCTail:
        """Skippable frame holding the compressed TOC, then the footer frame."""
        length = len(toc)
        stream = self._compressor().compressobj()  # streamed, as it always was
        frame = stream.compress(toc) + stream.flush()
        header = ZSTD_SKIPPABLE_MAGIC + struct.pack("<I", len(frame))
        position = toc_offset + 8
        footer = zstd_chunked_footer(ZstdChunkedFooter(position, len(frame), length))
        annotations = {
            ZSTD_MANIFEST_CHECKSUM_ANNOTATION: "sha256:" + hashlib.sha256(frame).hexdigest(),
            ZSTD_MANIFEST_POSITION_ANNOTATION: (
                f"{position}:{len(frame)}:{length}:{ZSTD_CHUNKED_MANIFEST_TYPE}"
            ),
        }
        return TOCTail(blob_parts=[header, frame, footer], stream_parts=[], annotations=annotations)
