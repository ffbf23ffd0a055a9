"""Directory walks through fds: deep trees, symlinks, and the eStargz extractor on them."""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from esgz.errors import FormatError
from esgz.estargz.dirfd import DirCursor
from esgz.estargz.extract import extract_layer
from esgz.estargz.reader import open_layer
from esgz.fsutil import DIR_FLAGS, remove_tree
from tests.estargz.writer_support import MTIME, Spec, convert, make_tar

DEPTH = 1200  # deeper than Python's recursion limit, longer than PATH_MAX (4096 bytes)
DEEP = "/".join(["level"] * DEPTH)


@pytest.fixture(autouse=True)
def _remove_deep_trees(tmp_path: Path) -> Iterator[None]:
    """pytest removes old temp dirs with a recursive ``shutil.rmtree``: leave nothing deep."""
    yield
    for name in os.listdir(tmp_path):
        remove_tree(tmp_path / name)


def _walk_down(root: Path, components: list[str]) -> int:
    fd = os.open(root, DIR_FLAGS)
    for part in components:
        next_fd = os.open(part, DIR_FLAGS, dir_fd=fd)
        os.close(fd)
        fd = next_fd
    return fd


def test_the_cursor_creates_climbs_and_restarts(tmp_path: Path) -> None:
    root_fd = os.open(tmp_path, DIR_FLAGS)
    cursor = DirCursor(root_fd)
    try:
        os.mknod("marker", dir_fd=cursor.at(DEEP))  # created on the way down
        os.mknod("x", dir_fd=cursor.at("a/b/c"))
        os.mknod("y", dir_fd=cursor.at("a/b/d"))  # one up, one down
        os.mknod("z", dir_fd=cursor.at(""))
        assert sorted(os.listdir(cursor.at("a/b"))) == ["c", "d"]
        with pytest.raises(FileNotFoundError):
            cursor.at("a/missing/deeper", create=False)
        os.symlink("/tmp", tmp_path / "a" / "link")
        with pytest.raises(FormatError, match="'link' is a symlink or not a directory"):
            cursor.at("a/link/planted")
        assert not os.path.exists("/tmp/planted")
        os.mknod("w", dir_fd=cursor.at("a/b/c"))  # usable again after an error
    finally:
        cursor.close()
        os.close(root_fd)
    assert sorted(os.listdir(tmp_path / "a/b/c")) == ["w", "x"]
    assert (tmp_path / "z").exists()
    fd = _walk_down(tmp_path, DEEP.split("/"))
    try:
        assert os.listdir(fd) == ["marker"]
    finally:
        os.close(fd)


def test_remove_tree_removes_a_deep_tree_and_not_what_symlinks_point_at(tmp_path: Path) -> None:
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "precious").write_bytes(b"p")
    root_fd = os.open(tmp_path, DIR_FLAGS)
    cursor = DirCursor(root_fd)
    try:
        os.symlink(str(keep), "to-keep", dir_fd=cursor.at("tree/" + DEEP))
        os.mknod("file", dir_fd=cursor.at("tree/" + DEEP))
        for index in range(50):  # a wide level too
            cursor.at(f"tree/wide/{index}")
    finally:
        cursor.close()
        os.close(root_fd)
    remove_tree(tmp_path / "tree")
    assert sorted(os.listdir(tmp_path)) == ["keep"]
    assert (keep / "precious").read_bytes() == b"p"
    remove_tree(tmp_path / "missing")  # nothing there: nothing to do
    (tmp_path / "plain").write_bytes(b"")
    remove_tree(tmp_path / "plain")
    assert sorted(os.listdir(tmp_path)) == ["keep"]


def test_a_deep_blob_extracts_without_recursion(tmp_path: Path) -> None:
    names = ["/".join(["d"] * n) for n in range(1, DEPTH + 1)]
    specs = [*(Spec(n, tarfile.DIRTYPE, mode=0o755) for n in names), Spec(names[-1] + "/f")]
    blob, result = convert(make_tar(specs), prioritized_files=(names[-1] + "/f",))
    path = tmp_path / "blob"
    path.write_bytes(blob)
    with open_layer(path) as layer:
        layer.verify(result.toc_digest, check_data=True)
        extract_layer(layer, tmp_path / "out")
    fd = _walk_down(tmp_path / "out", ["d"] * DEPTH)
    try:
        assert os.listdir(fd) == ["f"]
        assert os.stat(".", dir_fd=fd).st_mtime == MTIME
    finally:
        os.close(fd)
    remove_tree(tmp_path / "out")
