"""remove_tree: iterative, never follows symlinks, never crosses into a mount."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from esgz.fsutil import remove_tree


def nested(root: Path, depth: int) -> None:
    fd = os.open(root, os.O_RDONLY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(os.open("file", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
    os.close(fd)


def test_depth_needs_no_recursion(tmp_path: Path) -> None:
    root = tmp_path / "deep"
    root.mkdir()
    nested(root, 3000)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(400)  # far below the depth of the tree
    try:
        remove_tree(root)
    finally:
        sys.setrecursionlimit(limit)
    assert not root.exists()


def test_symlinks_are_removed_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    root = tmp_path / "tree"
    (root / "a").mkdir(parents=True)
    (root / "a" / "link").symlink_to(outside)
    (root / "dangling").symlink_to(tmp_path / "nowhere")
    remove_tree(root)
    assert not root.exists()
    assert (outside / "keep").exists()
    link = tmp_path / "toplink"
    link.symlink_to(outside)
    remove_tree(link)  # the link goes, not what it points to
    assert not link.is_symlink()
    assert (outside / "keep").exists()


def test_relative_to_a_dir_fd_and_missing(tmp_path: Path) -> None:
    (tmp_path / "x" / "y").mkdir(parents=True)
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        remove_tree("x", dir_fd=fd)
    finally:
        os.close(fd)
    assert not (tmp_path / "x").exists()
    remove_tree(tmp_path / "x")  # missing is fine by default
    with pytest.raises(FileNotFoundError):
        remove_tree(tmp_path / "x", missing_ok=False)


@pytest.mark.root
def test_a_mount_inside_is_never_entered(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount")
    root = tmp_path / "tree"
    mount = root / "sub" / "mnt"
    mount.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mount)], check=True)
    try:
        (mount / "precious").write_text("x")
        (root / "other").write_text("x")
        with pytest.raises(OSError, match="a mount point is inside the tree") as info:
            remove_tree(root)
        assert info.value.errno == errno.EBUSY
        remove_tree(root, ignore_errors=True)
        assert (mount / "precious").exists()
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)
    remove_tree(root)
    assert not root.exists()
