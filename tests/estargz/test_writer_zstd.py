"""The zstd:chunked writer: frames, skippable TOC and footer, annotations."""

from __future__ import annotations

import hashlib
import json
import tarfile

import zstandard

from esgz.estargz.footer import parse_zstd_chunked_footer
from tests.estargz.test_writer import example_tar
from tests.estargz.writer_support import Spec, convert, make_tar, sha256, tar_members, zstd_frames


def test_zstd_chunked_blob_structure() -> None:
    blob, result = convert(example_tar(), format="zstdchunked", prioritized_files=("/dir/b.bin",))
    frames = zstd_frames(blob)
    # 4 data frames, the TOC skippable frame, the footer skippable frame
    assert len(frames) == 6
    data_frames, toc_frame, footer_frame = frames[:4], frames[4], frames[5]
    for frame in data_frames:
        assert frame.compressed[:4] == b"\x28\xb5\x2f\xfd"
        descriptor = frame.compressed[4]
        assert descriptor & 0x04, "content checksum"
        assert descriptor >> 6 == 0, "no content size"
        assert not descriptor & 0x20, "no single-segment content size"
    assert data_frames[1].data.startswith(b"0123456789AB")
    assert data_frames[2].data.startswith(b"\x0f")
    assert data_frames[3].data.startswith(b"hello\n")

    assert toc_frame.compressed[:4] == b"\x50\x2a\x4d\x18"
    compressed_toc = toc_frame.data
    toc_json = zstandard.ZstdDecompressor().decompressobj().decompress(compressed_toc)
    assert footer_frame.compressed[:8] == b"\x50\x2a\x4d\x18\x28\x00\x00\x00"
    assert len(footer_frame.data) == 40
    footer = parse_zstd_chunked_footer(blob[-40:])
    assert footer.toc_offset == toc_frame.offset + 8
    assert footer.compressed_size == len(compressed_toc)
    assert footer.uncompressed_size == len(toc_json)

    entries = json.loads(toc_json)["entries"]
    assert [e["name"] for e in entries] == [
        "dir/", "dir/b.bin", ".prefetch.landmark", "a.txt", "dir/c.txt",
    ]  # fmt: skip
    assert [entries[i]["offset"] for i in (1, 2, 3)] == [f.offset for f in data_frames[1:]]

    stream = b"".join(frame.data for frame in data_frames)
    assert len(stream) == 4096  # no TOC entry, no end-of-archive blocks
    assert result.uncompressed_size == 4096
    assert result.diff_id == sha256(stream)
    assert [m.name for m in tar_members(stream)] == [
        "dir", "dir/b.bin", ".prefetch.landmark", "a.txt", "dir/c.txt",
    ]  # fmt: skip
    assert result.toc_digest == sha256(toc_json)
    assert result.annotations == {
        "containerd.io/snapshot/stargz/toc.digest": result.toc_digest,
        "io.containers.estargz.uncompressed-size": "4096",
        "io.containers.zstd-chunked.manifest-checksum": "sha256:"
        + hashlib.sha256(compressed_toc).hexdigest(),
        "io.containers.zstd-chunked.manifest-position": (
            f"{footer.toc_offset}:{len(compressed_toc)}:{len(toc_json)}:1"
        ),
    }
    assert result.format == "zstdchunked"


def test_zstd_chunked_is_reproducible_and_level_aware() -> None:
    data = b"".join(bytes([i]) * 777 for i in range(256)) * 20
    source = make_tar(
        [Spec("big", data=data), Spec("d/", tarfile.DIRTYPE), Spec("d/small", data=b"s")]
    )
    one = convert(source, format="zstdchunked", workers=1, chunk_size=100_000)
    two = convert(source, format="zstdchunked", workers=3, chunk_size=100_000)
    assert one == two
    fast, _ = convert(source, format="zstdchunked", compression_level=1, chunk_size=100_000)
    best, _ = convert(source, format="zstdchunked", compression_level=19, chunk_size=100_000)
    assert len(best) < len(fast)
    frames = zstd_frames(one[0])
    assert data in b"".join(f.data for f in frames[:-2])
