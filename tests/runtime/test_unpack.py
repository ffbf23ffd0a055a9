"""Layer unpacking: overlayfs whiteouts, metadata, caching, and hostile tars."""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from esgz.errors import FormatError
from esgz.estargz.layerindex import entry_path
from esgz.fsutil import remove_tree
from esgz.runtime.layermap import layer_of
from esgz.runtime.unpack import (
    LayerFile,
    unpack_layer,
    unpack_layer_sync,
)
from esgz.stages.layerindex import index_layer_file
from tests.estargz.test_tarinput import gnu_tar, make_sparse_file
from tests.estargz.writer_support import MTIME, Spec, make_tar
from tests.runtime.conftest import make_layer, tar_member

ROOT = os.geteuid() == 0


def test_entry_path() -> None:
    assert entry_path("./usr/bin/") == "usr/bin"
    assert entry_path("/etc//passwd") == "etc/passwd"
    assert entry_path("a/./b/c") == "a/b/c"
    assert entry_path("./") == ""
    for name in ("a/../../etc/passwd", "a/b/../c"):  # no layer entry has a '..' component
        with pytest.raises(FormatError, match=r"'\.\.' component"):
            entry_path(name)


def test_backslash_is_part_of_a_name(tmp_path: Path) -> None:
    """On Linux ``\\`` is an ordinary character: the name the workload opens is kept."""
    assert entry_path("dir/back\\slash") == "dir/back\\slash"
    assert entry_path("..\\..\\etc") == "..\\..\\etc"
    members = [
        (tar_member("dir", tarfile.DIRTYPE), b""),
        (tar_member("dir/back\\slash"), b"x"),
    ]
    layer = unpack_layer_sync(make_layer(tmp_path / "blob", members), tmp_path / "cache")
    assert layer.index.entries == {"dir", "dir/back\\slash"}
    assert (layer.root / "dir" / "back\\slash").read_bytes() == b"x"
    assert layer_of("/dir/back\\slash", [layer.index]) == 0


@pytest.mark.parametrize("compression", ["gzip", "zstd", "tar"])
def test_unpack_files_links_whiteouts_and_index(tmp_path: Path, compression: str) -> None:
    members = [
        (tar_member("./", tarfile.DIRTYPE), b""),
        (tar_member("bin", tarfile.DIRTYPE), b""),
        (tar_member("bin/tool", mode=0o4755), b"#!/bin/sh\n"),
        (tar_member("bin/alias", tarfile.SYMTYPE, linkname="tool"), b""),
        (tar_member("bin/hard", tarfile.LNKTYPE, linkname="bin/tool"), b""),
        (tar_member("etc/conf", uid=1000, gid=1001, mode=0o600), b"key=value\n"),
        (tar_member("etc/.wh.removed"), b""),
        (tar_member("var/cache/.wh..wh..opq"), b""),
        (tar_member("var/cache/kept"), b"x"),
        (tar_member("var/.wh..wh.plnk"), b""),
        (tar_member("run/fifo", tarfile.FIFOTYPE, mode=0o600), b""),
    ]
    source = make_layer(tmp_path / "blob", members, compression)
    layer = unpack_layer_sync(source, tmp_path / "cache")
    root = layer.root
    assert (root / "bin/tool").read_bytes() == b"#!/bin/sh\n"
    assert os.readlink(root / "bin/alias") == "tool"
    assert (root / "bin/hard").stat().st_ino == (root / "bin/tool").stat().st_ino
    assert stat.S_ISFIFO((root / "run/fifo").lstat().st_mode)
    assert layer.index.entries == {
        "bin", "bin/tool", "bin/alias", "bin/hard", "etc/conf", "var/cache/kept", "run/fifo",
    }  # fmt: skip
    assert layer.index.whiteouts == {"etc/removed"}
    assert layer.index.opaque_dirs == {"var/cache"}
    assert not (root / "etc/.wh.removed").exists()
    if ROOT:
        whiteout = (root / "etc/removed").lstat()
        assert stat.S_ISCHR(whiteout.st_mode)
        assert whiteout.st_rdev == os.makedev(0, 0)
        assert os.getxattr(root / "var/cache", "trusted.overlay.opaque") == b"y"
        conf = (root / "etc/conf").stat()
        assert (conf.st_uid, conf.st_gid, stat.S_IMODE(conf.st_mode)) == (1000, 1001, 0o600)
        assert stat.S_IMODE((root / "bin/tool").stat().st_mode) == 0o4755  # setuid kept
    assert (root / "bin/tool").stat().st_mtime == 1_700_000_000
    assert (root / "bin").stat().st_mtime == 1_700_000_000


def test_device_nodes_are_created(tmp_path: Path) -> None:
    if not ROOT:
        pytest.skip("needs root: mknod of character devices")
    members = [(tar_member("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666), b"")]
    layer = unpack_layer_sync(make_layer(tmp_path / "blob", members), tmp_path / "cache")
    node = (layer.root / "dev/null").lstat()
    assert stat.S_ISCHR(node.st_mode)
    assert node.st_rdev == os.makedev(1, 3)
    assert stat.S_IMODE(node.st_mode) == 0o666


def test_cached_layer_is_not_unpacked_again(tmp_path: Path) -> None:
    source = make_layer(tmp_path / "blob", [(tar_member("a.txt"), b"a")])
    first = unpack_layer_sync(source, tmp_path / "cache")
    (first.root / "marker").write_text("still here")
    second = unpack_layer_sync(source, tmp_path / "cache")
    assert second.root == first.root
    assert (second.root / "marker").read_text() == "still here"
    assert second.index == first.index
    assert sorted(os.listdir(tmp_path / "cache")) == [source.cache_key]


@pytest.mark.anyio
async def test_async_unpack(tmp_path: Path) -> None:
    source = make_layer(tmp_path / "blob", [(tar_member("a.txt"), b"a")])
    layer = await unpack_layer(source, tmp_path / "cache")
    assert layer.index.entries == {"a.txt"}


def test_later_entry_replaces_earlier(tmp_path: Path) -> None:
    members = [
        (tar_member("x", tarfile.DIRTYPE), b""),
        (tar_member("x/inner"), b"1"),
        (tar_member("x"), b"now a file"),
        (tar_member("y"), b"old"),
        (tar_member("y"), b"new"),
    ]
    layer = unpack_layer_sync(make_layer(tmp_path / "blob", members), tmp_path / "cache")
    assert (layer.root / "x").read_bytes() == b"now a file"
    assert (layer.root / "y").read_bytes() == b"new"


# --- hostile tars ------------------------------------------------------------------------


def _assert_refused(tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    source = make_layer(tmp_path / "blob", members)
    cache = tmp_path / "cache"
    with pytest.raises(FormatError) as caught:
        unpack_layer_sync(source, cache)
    assert caught.value.layer == source.digest
    # Neither the cache entry nor a temp dir is left.
    assert os.listdir(cache) == []


def test_dotdot_escape_is_refused(tmp_path: Path) -> None:
    _assert_refused(tmp_path, [(tar_member("a/../../escaped.txt"), b"evil")])
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "cache" / "escaped.txt").exists()


def test_absolute_names_stay_inside(tmp_path: Path) -> None:
    target = tmp_path / "outside.txt"
    members = [(tar_member(str(target)), b"inside after all")]
    layer = unpack_layer_sync(make_layer(tmp_path / "blob", members), tmp_path / "cache")
    assert not target.exists()
    inside = str(target).lstrip("/")
    assert (layer.root / inside).read_bytes() == b"inside after all"
    assert layer.index.entries >= {inside}


def test_symlinked_parent_escape_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    _assert_refused(
        tmp_path,
        [
            (tar_member("link", tarfile.SYMTYPE, linkname=str(outside)), b""),
            (tar_member("link/planted.txt"), b"evil"),
        ],
    )
    assert os.listdir(outside) == []


def test_relative_symlinked_parent_escape_is_refused(tmp_path: Path) -> None:
    _assert_refused(
        tmp_path,
        [
            (tar_member("up", tarfile.SYMTYPE, linkname="../../../.."), b""),
            (tar_member("up/tmp/planted.txt"), b"evil"),
        ],
    )


@pytest.mark.parametrize("target", ["/etc/passwd", "../../../etc/passwd", "missing"])
def test_hardlink_outside_is_refused(tmp_path: Path, target: str) -> None:
    _assert_refused(tmp_path, [(tar_member("stolen", tarfile.LNKTYPE, linkname=target), b"")])


def test_corrupt_blob_is_a_format_error(tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(gzip.compress(b"this is not a tar archive" * 40)[:-10])
    source = LayerFile("sha256:" + "0" * 64, blob)
    with pytest.raises(FormatError):
        unpack_layer_sync(source, tmp_path / "cache")


def test_whiteout_of_an_entry_of_the_same_layer(tmp_path: Path) -> None:
    members = [
        (tar_member("d", tarfile.DIRTYPE), b""),
        (tar_member("d/f"), b"1"),
        (tar_member(".wh.d"), b""),
        (tar_member("back"), b"1"),
        (tar_member(".wh.back"), b""),
        (tar_member("back"), b"2"),
    ]
    source = make_layer(tmp_path / "blob", members)
    layer = unpack_layer_sync(source, tmp_path / "cache")
    assert layer.index.entries == {"back"}
    assert layer.index.whiteouts == {"d"}
    assert (layer.root / "back").read_bytes() == b"2"
    if ROOT:
        assert stat.S_ISCHR((layer.root / "d").lstat().st_mode)
    assert index_layer_file(source.path) == layer.index


# --- hardening ---------------------------------------------------------------------------


def _raw_layer(path: Path, data: bytes) -> LayerFile:
    path.write_bytes(data)
    return LayerFile("sha256:" + hashlib.sha256(data).hexdigest(), path)


def test_sparse_bomb_keeps_its_holes(tmp_path: Path) -> None:
    """A PAX 0.1 sparse entry of 2 GiB with no data: a hole, not 2 GiB of zeros."""
    pax = {"GNU.sparse.size": str(2 << 30), "GNU.sparse.numblocks": "1", "GNU.sparse.map": "0,0"}
    source = _raw_layer(tmp_path / "blob", make_tar([Spec("bomb", pax=pax)]))
    layer = unpack_layer_sync(source, tmp_path / "cache")
    bomb = (layer.root / "bomb").stat()
    assert bomb.st_size == 2 << 30
    assert bomb.st_blocks * 512 < 1 << 20


@pytest.mark.parametrize("tar_args", [["--format=gnu"], ["--format=pax", "--sparse-version=1.0"]])
def test_sparse_files_unpack_with_their_data_and_holes(tmp_path: Path, tar_args: list[str]) -> None:
    tar = gnu_tar()
    content = make_sparse_file(tmp_path / "holes.bin")
    archive = tmp_path / "a.tar"
    subprocess.run(
        [tar, "-c", "--sparse", *tar_args, "-f", str(archive), "-C", str(tmp_path), "holes.bin"],
        check=True,
    )
    source = _raw_layer(tmp_path / "blob", archive.read_bytes())
    layer = unpack_layer_sync(source, tmp_path / "cache")
    unpacked = layer.root / "holes.bin"
    assert unpacked.read_bytes() == content
    assert unpacked.stat().st_blocks * 512 < len(content) // 2


def test_data_beyond_the_unpack_limit_is_refused(tmp_path: Path) -> None:
    members = [(tar_member("small"), b"x" * 1000), (tar_member("big"), b"y" * 5000)]
    source = make_layer(tmp_path / "blob", members)
    with pytest.raises(FormatError, match=r"'big'.*more than 4096 bytes") as caught:
        unpack_layer_sync(source, tmp_path / "cache", max_bytes=4096)
    assert caught.value.layer == source.digest
    assert os.listdir(tmp_path / "cache") == []


@pytest.mark.parametrize(
    ("pax", "message"),
    [
        ({"uid": "99999999999999999999"}, "uid.*out of range"),
        ({"uid": "1e20"}, "bad PAX uid"),
        ({"mtime": "1e300"}, "bad PAX time"),
        ({"uid": str(1 << 40)}, "uid 1099511627776 is out of range"),  # Go reads it; chown cannot
        ({"mtime": str(1 << 60)}, "mtime .* is out of range"),  # beyond 64-bit nanoseconds
    ],
)
def test_out_of_range_numbers_are_one_line_format_errors(
    tmp_path: Path, pax: dict[str, str], message: str
) -> None:
    source = _raw_layer(tmp_path / "blob", make_tar([Spec("f", data=b"x", pax=pax)]))
    with pytest.raises(FormatError, match=f"'f'.*{message}") as caught:
        unpack_layer_sync(source, tmp_path / "cache")
    assert caught.value.layer == source.digest
    assert "\n" not in str(caught.value)


def test_a_deep_tree_unpacks_and_is_removed_without_recursion(tmp_path: Path) -> None:
    """1,200 nested directories (deeper than Python's recursion limit) and one file."""
    names = ["/".join(["d"] * n) for n in range(1, 1201)]
    specs = [*(Spec(n, tarfile.DIRTYPE, mode=0o755) for n in names), Spec(names[-1] + "/f")]
    source = _raw_layer(tmp_path / "blob", make_tar(specs))
    try:
        _check_deep_layer(source, tmp_path)
    finally:  # pytest removes old temp dirs with a recursive shutil.rmtree
        remove_tree(tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def _check_deep_layer(source: LayerFile, tmp_path: Path) -> None:
    layer = unpack_layer_sync(source, tmp_path / "cache")
    assert len(layer.index.entries) == 1201
    assert index_layer_file(source.path) == layer.index
    fd = os.open(layer.root, os.O_RDONLY)
    try:  # the path is longer than PATH_MAX: walk it
        for _ in range(1200):
            next_fd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        assert os.stat("f", dir_fd=fd).st_mtime == MTIME
        assert os.stat(".", dir_fd=fd).st_mtime == MTIME  # directory times set last
    finally:
        os.close(fd)


def test_a_deep_tree_left_by_a_failed_unpack_is_removed(tmp_path: Path) -> None:
    names = ["/".join(["d"] * n) for n in range(1, 1201)]
    specs = [*(Spec(n, tarfile.DIRTYPE, mode=0o755) for n in names), Spec("../escape")]
    source = _raw_layer(tmp_path / "blob", make_tar(specs))
    try:
        with pytest.raises(FormatError, match=r"'\.\.' component"):
            unpack_layer_sync(source, tmp_path / "cache")
        assert os.listdir(tmp_path / "cache") == []
    finally:
        remove_tree(tmp_path / "cache")
