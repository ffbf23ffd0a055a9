"""Input sniffing and streaming decompression."""

from __future__ import annotations

import gzip
import io

import pytest
import zstandard

from esgz.errors import FormatError
from esgz.estargz.source import TarStream, sniff_compression

DATA = bytes(range(256)) * 4000


def read_all(blob: bytes) -> bytes:
    stream = TarStream(io.BytesIO(blob))
    parts = []
    while piece := stream.read(65536):
        parts.append(piece)
    return b"".join(parts)


def test_sniffing() -> None:
    assert sniff_compression(b"\x1f\x8b\x08\x00") == "gzip"
    assert sniff_compression(b"\x28\xb5\x2f\xfd") == "zstd"
    assert sniff_compression(b"\x5a\x2a\x4d\x18") == "zstd"
    assert sniff_compression(b"ustar") == "tar"
    assert sniff_compression(b"\x1f") == "tar"


def test_multi_member_gzip_and_multi_frame_zstd_with_skippable_frames() -> None:
    assert read_all(gzip.compress(DATA[:1000]) + gzip.compress(DATA[1000:])) == DATA
    frame = zstandard.ZstdCompressor(write_checksum=True).compress
    skippable = b"\x50\x2a\x4d\x18" + (3).to_bytes(4, "little") + b"abc"
    assert read_all(skippable + frame(DATA[:5000]) + skippable + frame(DATA[5000:])) == DATA
    assert read_all(DATA[:3]) == DATA[:3]
    assert read_all(b"") == b""


@pytest.mark.parametrize(
    "blob",
    [
        gzip.compress(DATA)[:-9],
        gzip.compress(DATA)[:100],
        zstandard.ZstdCompressor().compress(DATA)[:-5],
        zstandard.ZstdCompressor().compress(DATA) + b"\x28\xb5\x2f\xfd\x00",
        b"\x28\xb5\x2f\xfd" + b"\xff" * 40,
    ],
)
def test_truncated_or_corrupt_compressed_input_is_a_format_error(blob: bytes) -> None:
    with pytest.raises(FormatError):
        read_all(blob)
