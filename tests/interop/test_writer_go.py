"""esgz's writer against the Go reference: its blobs pass the Go reader (incl. a comparison
with the source tar) and its TOC equals the Go builder's for the same input, offsets aside."""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import tarfile
from pathlib import Path

import pytest
import zstandard

from esgz.estargz.constants import (
    TOC_DIGEST_ANNOTATION,
    UNCOMPRESSED_SIZE_ANNOTATION,
    ZSTD_MANIFEST_CHECKSUM_ANNOTATION,
    ZSTD_MANIFEST_POSITION_ANNOTATION,
)
from esgz.estargz.reader import is_reusable_layer, open_layer
from tests.fixtures.gotools import go_build, go_check
from tests.interop.sourcetar import (
    TarItem,
    assert_reader_matches_tar,
    pattern,
    rich_items,
    write_tar,
)
from tests.interop.spec_example import ORDER, PRIORITIZED, example_toc_json, write_example_tar
from tests.interop.writer import toc_without_offsets, write_with_esgz

CHUNK = 4096
PRIO = ["/etc/hard", "bin/tool", "./uni/ünïcödé 文件.txt", "missing/file"]


@pytest.fixture(scope="module")
def source_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tar(tmp_path_factory.mktemp("src") / "rich.tar", rich_items(CHUNK))


@pytest.mark.parametrize("fmt", ["estargz", "zstdchunked"])
@pytest.mark.parametrize("prioritized", [(), tuple(PRIO)], ids=["plain", "prioritized"])
@pytest.mark.parametrize("workers", [1, 2])
def test_esgz_blob_passes_go_checker(
    tmp_path: Path, source_tar: Path, fmt: str, prioritized: tuple[str, ...], workers: int
) -> None:
    blob = tmp_path / "blob"
    result = write_with_esgz(
        source_tar,
        blob,
        format=fmt,
        chunk_size=CHUNK,
        prioritized_files=prioritized,
        workers=workers,
    )
    zstd = fmt == "zstdchunked"
    go = go_check(blob, result.toc_digest, zstd=zstd, source_tar=source_tar)
    assert go.ok, go.errors
    assert go.report["diff_id"] == result.diff_id
    assert go.report["uncompressed_size"] == result.uncompressed_size
    assert result.annotations[TOC_DIGEST_ANNOTATION] == result.toc_digest
    assert result.annotations[UNCOMPRESSED_SIZE_ANNOTATION] == str(result.uncompressed_size)
    if prioritized:
        assert go.report["landmark"] == ".prefetch.landmark"
        assert result.missing_prioritized == ("missing/file",)
    else:
        assert go.report["landmark"] == ".no.prefetch.landmark"
    with open_layer(blob) as layer:
        layer.verify(result.toc_digest, check_data=True)
        assert layer.prioritized_names() == go.report["prioritized"]
        assert layer.uncompressed_digest() == (result.diff_id, result.uncompressed_size)
        assert_reader_matches_tar(layer, source_tar)
        if zstd:
            position = result.annotations[ZSTD_MANIFEST_POSITION_ANNOTATION]
            offset, compressed, uncompressed, kind = (int(p) for p in position.split(":"))
            assert (offset, kind) == (layer.toc_offset, 1)
            toc_frame = blob.read_bytes()[offset : offset + compressed]
            checksum = "sha256:" + hashlib.sha256(toc_frame).hexdigest()
            assert result.annotations[ZSTD_MANIFEST_CHECKSUM_ANNOTATION] == checksum
            assert uncompressed > 0
    assert is_reusable_layer(blob, result.toc_digest)


@pytest.mark.parametrize("fmt", ["estargz", "zstdchunked"])
@pytest.mark.parametrize("prioritized", [(), tuple(PRIO)], ids=["plain", "prioritized"])
def test_esgz_toc_equals_go_toc(
    tmp_path: Path, source_tar: Path, fmt: str, prioritized: tuple[str, ...]
) -> None:
    """Same entries, order, names, modes, digests and chunking as Go (one part)."""
    ours = tmp_path / "ours"
    theirs = tmp_path / "theirs"
    zstd = fmt == "zstdchunked"
    write_with_esgz(
        source_tar, ours, format=fmt, chunk_size=CHUNK, prioritized_files=prioritized, workers=2
    )
    built = go_build(
        source_tar,
        theirs,
        zstd=zstd,
        chunk_size=CHUNK,
        prioritized=list(prioritized) or None,
        gomaxprocs=1,
    )
    assert built.missed == (["missing/file"] if prioritized else [])
    assert toc_without_offsets(ours) == toc_without_offsets(theirs)


@pytest.mark.parametrize("fmt", ["estargz", "zstdchunked"])
def test_spec_example_esgz_writer(tmp_path: Path, fmt: str) -> None:
    source = write_example_tar(tmp_path / "in.tar")
    blob = tmp_path / "blob"
    result = write_with_esgz(
        source,
        blob,
        format=fmt,
        compression_level=9 if fmt == "estargz" else 3,
        prioritized_files=tuple(PRIORITIZED),
    )
    with open_layer(blob) as layer:
        assert [e.name for e in layer.entries()] == ORDER
        offsets = []
        for name in ("dir/b.bin", ".prefetch.landmark", "a.txt"):
            entry = layer.lookup(name)
            assert entry is not None
            offsets.append(entry.chunks[0].offset)
        expected = example_toc_json(*offsets)
        assert result.toc_digest == "sha256:" + hashlib.sha256(expected).hexdigest()
        assert layer.toc_digest == result.toc_digest
        layer.verify(result.toc_digest, check_data=True)
    if fmt == "estargz":
        assert result.uncompressed_size == 7168
    else:
        assert result.uncompressed_size == 4096
    go = go_check(blob, result.toc_digest, zstd=fmt == "zstdchunked", source_tar=source)
    assert go.ok, go.errors
    assert go.report["prioritized"] == ["dir", "dir/b.bin"]


def test_duplicate_entries(tmp_path: Path) -> None:
    """A re-added name: the TOC lists the last occurrence at Go's position (FORMAT.md §2).

    By the writer's design the shadowed earlier entry stays in the tar stream (so extracting
    the tar still ends with the last one); the Go reader, which only follows the TOC, reads
    the last content.
    """
    items = [TarItem("a", data=b"first"), TarItem("b", data=b"bb"), TarItem("a", data=b"second")]
    source = write_tar(tmp_path / "in.tar", items)
    ours = tmp_path / "ours"
    result = write_with_esgz(source, ours, format="estargz")
    go_build(source, tmp_path / "theirs", gomaxprocs=1)
    assert toc_without_offsets(ours) == toc_without_offsets(tmp_path / "theirs")
    go = go_check(ours, result.toc_digest, source_tar=source)
    assert go.ok, go.errors
    with open_layer(ours) as layer:
        assert layer.read_bytes("a") == b"second"
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(ours.read_bytes()))) as tar:
        names = tar.getnames()
    assert names == [".no.prefetch.landmark", "a", "b", "a", "stargz.index.json"]


@pytest.mark.parametrize(
    ("fmt", "level"),
    [
        ("estargz", 0),
        ("estargz", 1),
        ("estargz", -1),
        ("estargz", -2),
        ("zstdchunked", -7),
        ("zstdchunked", -3),
        ("zstdchunked", 1),
        ("zstdchunked", 19),
    ],
)
def test_compression_levels_pass_go_checker(
    tmp_path: Path, source_tar: Path, fmt: str, level: int
) -> None:
    blob = tmp_path / "blob"
    result = write_with_esgz(
        source_tar, blob, format=fmt, compression_level=level, chunk_size=CHUNK
    )
    go = go_check(blob, result.toc_digest, zstd=fmt == "zstdchunked", source_tar=source_tar)
    assert go.ok, go.errors


@pytest.mark.parametrize("fmt", ["estargz", "zstdchunked"])
def test_default_chunk_size_and_compressed_inputs(tmp_path: Path, fmt: str) -> None:
    """A 9 MiB file with the default 4 MiB chunks, from gzip, zstd and eStargz inputs."""
    items = [TarItem("big", data=pattern(9 * 1024 * 1024 + 3, 9)), TarItem("small", data=b"s")]
    source = write_tar(tmp_path / "in.tar", items)
    gz = tmp_path / "in.tar.gz"
    gz.write_bytes(gzip.compress(source.read_bytes(), compresslevel=1))
    zst = tmp_path / "in.tar.zst"
    zst.write_bytes(zstandard.ZstdCompressor(level=1).compress(source.read_bytes()))
    first = tmp_path / "first"
    reference = write_with_esgz(source, first, format=fmt)
    with open_layer(first) as layer:
        big = layer.lookup("big")
        assert big is not None
        assert [c.size for c in big.chunks] == [4 * 1024 * 1024, 4 * 1024 * 1024, 1024 * 1024 + 3]
    for name, src in (("gzip", gz), ("zstd", zst), ("esgz", first)):
        blob = tmp_path / f"from-{name}"
        result = write_with_esgz(src, blob, format=fmt)
        assert result.toc_digest == reference.toc_digest, name
        assert result.diff_id == reference.diff_id, name
        go = go_check(blob, result.toc_digest, zstd=fmt == "zstdchunked", source_tar=source)
        assert go.ok, (name, go.errors)


_LONG_DIR = "deep/" + "d" * 60 + "/" + "e" * 60 + "/"
_HEADER_CASES = [
    pytest.param(tarfile.USTAR_FORMAT, False, id="ustar"),
    pytest.param(tarfile.PAX_FORMAT, False, id="pax-short-names"),
    pytest.param(tarfile.USTAR_FORMAT, True, id="ustar-long-name"),
]


@pytest.mark.parametrize(("tar_format", "long_name"), _HEADER_CASES)
def test_uncompressed_stream_equals_go(tmp_path: Path, tar_format: int, long_name: bool) -> None:
    """zstd:chunked streams hold no offsets, so Go-style headers give Go's DiffID exactly.

    Not for GNU inputs or PAX inputs with long names: the writer never writes GNU headers
    and prefers USTAR where the fields fit, where Go keeps the input's format.
    """
    items = [
        item
        for item in rich_items(CHUNK)
        if tar_format != tarfile.USTAR_FORMAT or (item.name.isascii() and not item.xattrs)
    ]
    items = [item for item in items if len(item.name) < 100]
    if long_name:
        items.append(TarItem(_LONG_DIR, "dir", mode=0o755))
    source = write_tar(tmp_path / "in.tar", items, fmt=tar_format)
    result = write_with_esgz(source, tmp_path / "ours", format="zstdchunked", chunk_size=CHUNK)
    built = go_build(source, tmp_path / "theirs", zstd=True, chunk_size=CHUNK, gomaxprocs=1)
    assert result.diff_id == built.diff_id


def _toc_json_without_offsets(blob: Path) -> bytes:
    """The TOC JSON bytes of an eStargz (gzip) blob as written, with offset values blanked."""
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob.read_bytes()))) as tar:
        member = tar.extractfile("stargz.index.json")
        assert member is not None
        text = member.read()
    return re.sub(rb'"offset": \d+', b'"offset": 0', text)


@pytest.mark.parametrize("control", ["\b", "\f", "\x01"], ids=["backspace", "formfeed", "soh"])
def test_control_characters_in_names_escape_like_go(tmp_path: Path, control: str) -> None:
    """A name whose only special character is a control character: TOC text equals Go's."""
    items = [TarItem(f"ctl/name{control}end", data=b"x"), TarItem("plain", data=b"y")]
    source = write_tar(tmp_path / "in.tar", items)
    write_with_esgz(source, tmp_path / "ours", format="estargz")
    go_build(source, tmp_path / "theirs", gomaxprocs=1)
    ours = _toc_json_without_offsets(tmp_path / "ours")
    assert ours == _toc_json_without_offsets(tmp_path / "theirs")
