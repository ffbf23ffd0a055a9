"""Blobs built by the Go reference (estargz 0.12 ``Build``) read by our reader."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from esgz.estargz.reader import is_reusable_layer, open_layer, sniff_layer_format
from tests.fixtures.gotools import GoBuildResult, go_build, go_check
from tests.interop.sourcetar import assert_reader_matches_tar, read_tar, rich_items, write_tar

CHUNK = 4096
PRIORITIZED = ["/etc/hard", "bin/tool", "./uni/ünïcödé 文件.txt", "missing/file"]


@pytest.fixture(scope="module")
def source_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tar(tmp_path_factory.mktemp("src") / "rich.tar", rich_items(CHUNK))


CASES = [
    pytest.param(False, None, 1, id="gzip"),
    pytest.param(False, PRIORITIZED, 1, id="gzip-prioritized"),
    pytest.param(False, PRIORITIZED, 4, id="gzip-prioritized-4parts"),
    pytest.param(True, None, 1, id="zstd"),
    pytest.param(True, PRIORITIZED, 3, id="zstd-prioritized-3parts"),
]


@pytest.mark.parametrize(("zstd", "prioritized", "procs"), CASES)
def test_go_blob_opens_verifies_and_reads(
    tmp_path: Path,
    source_tar: Path,
    zstd: bool,
    prioritized: list[str] | None,
    procs: int,
) -> None:
    blob = tmp_path / "blob"
    built = go_build(
        source_tar, blob, zstd=zstd, chunk_size=CHUNK, prioritized=prioritized, gomaxprocs=procs
    )
    with open_layer(blob) as layer:
        assert layer.format == ("zstdchunked" if zstd else "estargz")
        assert layer.toc_digest == built.toc_digest
        layer.verify(built.toc_digest, check_data=True)
        assert layer.uncompressed_digest()[0] == built.diff_id
        assert_reader_matches_tar(layer, source_tar)
        # Multi-chunk files really are chunked the way the Go writer cut them.
        tool = layer.lookup("bin/tool")
        assert tool is not None
        assert [c.size for c in tool.chunks] == [CHUNK, CHUNK, CHUNK, 17]
        ours = layer.prioritized_names()
        landmark = layer.prefetch_landmark()
        assert landmark is not None
    go = go_check(blob, built.toc_digest, zstd=zstd, source_tar=source_tar)
    assert go.ok, go.errors
    assert landmark.name == go.report["landmark"]
    assert ours == (go.report["prioritized"] if prioritized else [])
    if prioritized:
        assert landmark.name == ".prefetch.landmark"
        assert built.missed == ["missing/file"]
        # Parents come first, a hardlink's target precedes the link (FORMAT.md §3).
        assert ours.index("etc") < ours.index("etc/hostname") < ours.index("etc/hard")
        assert ours.index("bin") < ours.index("bin/tool")
        assert "uni/ünïcödé 文件.txt" in ours
    else:
        assert landmark.name == ".no.prefetch.landmark"
    assert is_reusable_layer(blob, built.toc_digest)
    assert sniff_layer_format(blob) == layer.format


def test_go_blob_read_from_open_file_object(tmp_path: Path, source_tar: Path) -> None:
    blob = tmp_path / "blob"
    built = go_build(source_tar, blob, chunk_size=CHUNK)
    with open(blob, "rb") as handle, open_layer(handle) as layer:
        layer.verify(built.toc_digest)
        assert layer.read_bytes("etc/hostname") == b"box\n"
        assert not handle.closed
    assert handle.closed


def test_go_blob_extracts_like_the_tar(tmp_path: Path, source_tar: Path) -> None:
    blob = tmp_path / "blob"
    built: GoBuildResult = go_build(source_tar, blob, chunk_size=CHUNK)
    dest = tmp_path / "rootfs"
    with open_layer(blob) as layer:
        layer.verify(built.toc_digest)
        layer.extract(dest)
    root = os.geteuid() == 0
    for name, (info, data) in read_tar(source_tar).items():
        path = dest / name if name else dest
        st = path.lstat()
        if info.isreg() and not info.islnk():
            assert path.read_bytes() == data, name
            assert stat.S_IMODE(st.st_mode) == info.mode, name
            assert int(st.st_mtime) == info.mtime, name
        elif info.isdir() and name:
            assert stat.S_ISDIR(st.st_mode), name
            assert stat.S_IMODE(st.st_mode) == info.mode, name
        elif info.issym():
            assert os.readlink(path) == info.linkname, name
        elif info.islnk():
            assert st.st_ino == (dest / info.linkname).lstat().st_ino, name
        elif info.isfifo():
            assert stat.S_ISFIFO(st.st_mode), name
        elif info.ischr() and root:
            assert stat.S_ISCHR(st.st_mode), name
            assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (info.devmajor, info.devminor)
        if root and not info.issym() and not info.islnk():
            assert (st.st_uid, st.st_gid) == (info.uid, info.gid), name
        for key, value in info.pax_headers.items():
            if key.startswith("SCHILY.xattr.user."):
                attr = key.removeprefix("SCHILY.xattr.")
                assert os.getxattr(path, attr) == value.encode(), name
    assert not (dest / ".no.prefetch.landmark").exists()
