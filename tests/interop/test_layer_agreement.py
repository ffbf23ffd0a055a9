"""The three readers of a source layer agree on odd and hostile tars.

The profiler's unpacker (:mod:`esgz.runtime.unpack`), the prefetch-list mapper
(:mod:`esgz.stages.layerindex`) and the writer (:mod:`esgz.estargz.writer`) are fed the
same layers. Either all three refuse a layer with a FormatError, or they all accept it
and agree: the mapper's index is the unpacker's; every entry the unpacker created is in
the writer's TOC under the same name with the same content, link or hard link; and the
mapper reads the converted blob back to the same index. Accepted layers are also read,
verified and fully extracted by the Go reference reader.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from esgz.errors import FormatError
from esgz.estargz.constants import NO_PREFETCH_LANDMARK, TOC_TAR_NAME
from esgz.estargz.layerindex import LayerIndex, entry_path
from esgz.estargz.reader import open_layer
from esgz.runtime.unpack import LayerFile, unpack_layer_sync
from esgz.stages.layerindex import index_layer_file
from tests.estargz.writer_support import Spec, convert, make_tar
from tests.fixtures.gotools import go_check

DIR, REG, SYM, LNK = tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
LONG = "/".join(["a-rather-long-directory-name"] * 12)  # 335 bytes
UNICODE = "données/日本語/été.txt"


@dataclass
class Case:
    """A layer and, when it is accepted, parts of its expected index."""

    id: str
    specs: list[Spec]
    fmt: int = tarfile.PAX_FORMAT
    refused: str = ""
    """Regex of the refusal; empty: accepted."""
    entries: set[str] | None = None
    whiteouts: set[str] = field(default_factory=set)
    opaque: set[str] = field(default_factory=set)
    go_errors: list[str] = field(default_factory=list)
    """What the Go checker reports although Go's reader opens and verifies the blob."""


def deep(levels: int) -> list[Spec]:
    names = ["/".join(["d"] * n) for n in range(1, levels + 1)]
    return [*(Spec(n, DIR, mode=0o755) for n in names), Spec(names[-1] + "/f", data=b"deep")]


ACCEPTED = [
    Case(
        "dot-slash-and-double-slashes",
        [
            Spec("./", DIR, mode=0o755),
            Spec("./usr/", DIR, mode=0o755),
            Spec("./usr/bin/tool", data=b"tool", mode=0o755),
            Spec("usr//lib/x", data=b"x"),
            Spec("./usr/./share/doc", data=b"doc"),
        ],
        entries={"usr", "usr/bin/tool", "usr/lib/x", "usr/share/doc"},
    ),
    Case(
        "absolute-names-and-link-targets",
        [
            Spec("/etc/", DIR, mode=0o755),
            Spec("/etc/passwd", data=b"root:x:0:0"),
            Spec("/etc/pw", LNK, linkname="/etc/passwd"),
        ],
        entries={"etc", "etc/passwd", "etc/pw"},
    ),
    Case(
        "gnu-long-names",
        [Spec(LONG + "/file", data=b"long"), Spec("short", LNK, linkname=LONG + "/file")],
        fmt=tarfile.GNU_FORMAT,
        entries={LONG + "/file", "short"},
    ),
    Case(
        "pax-long-names",
        [Spec(LONG + "/file", data=b"long"), Spec(LONG + "/hard", LNK, linkname=LONG + "/file")],
        entries={LONG + "/file", LONG + "/hard"},
    ),
    Case(
        "unicode-and-backslashes",
        [
            Spec(UNICODE, data="été".encode()),
            Spec("dir/back\\slash", data=b"b"),
            Spec("..\\..\\etc", data=b"not a parent"),
        ],
        entries={UNICODE, "dir/back\\slash", "..\\..\\etc"},
    ),
    Case(
        "whiteouts-and-opaque-dirs",
        [
            Spec(".wh.gone"),
            Spec("etc/.wh.motd"),
            Spec("opt/", DIR, mode=0o755),
            Spec("opt/.wh..wh..opq"),
            Spec("opt/new", data=b"new"),
            Spec("var/.wh..wh.plnk", DIR, mode=0o700),  # aufs metadata: skipped
            Spec("srv/.wh..wh..opq"),  # opaque directory without an entry of its own
        ],
        entries={"opt", "opt/new"},
        whiteouts={"gone", "etc/motd"},
        opaque={"opt", "srv"},
    ),
    Case(
        "whiteout-then-recreate",
        [Spec(".wh.x"), Spec("x/", DIR, mode=0o755), Spec("x/f", data=b"f")],
        entries={"x", "x/f"},
    ),
    Case(
        "whiteout-of-an-own-entry",
        [Spec("d/", DIR, mode=0o755), Spec("d/f", data=b"f"), Spec(".wh.d"), Spec("kept")],
        entries={"kept"},
        whiteouts={"d"},
    ),
    Case(
        "hardlink-chains-and-symlinks",
        [
            Spec("a", data=b"shared"),
            Spec("b", LNK, linkname="a"),
            Spec("./c", LNK, linkname="./b"),
            Spec("s", SYM, linkname="a"),
            Spec("hs", LNK, linkname="s"),  # a hard link to a symlink
            Spec("up", SYM, linkname="../../../.."),  # symlink targets are data
            Spec("abs", SYM, linkname="/etc/shadow"),
        ],
        entries={"a", "b", "c", "s", "hs", "up", "abs"},
        # Go's reader resolves the link to the symlink entry; the checker then asserts
        # that every hardlink reads as a regular file.
        go_errors=['"hs": resolves to a "symlink" entry, not a regular file'],
    ),
    Case(
        "duplicates-later-wins",
        [
            Spec("f", data=b"first"),
            Spec("f", data=b"second"),
            Spec("x/", DIR, mode=0o755),
            Spec("x/inner", data=b"gone with x"),
            Spec("x", data=b"now a file"),
            Spec("y", data=b"a file first"),
            Spec("y/", DIR, mode=0o700),
            Spec("y/z", data=b"z"),
            Spec("t", data=b"old target"),
            Spec("h", LNK, linkname="t"),
            Spec("h", data=b"h replaced by a file"),
            Spec("t", data=b"new target"),
        ],
        entries={"f", "x", "y", "y/z", "t", "h"},
    ),
    Case("deep-300", deep(300)),
]

REFUSED = [
    Case("dotdot-escape", [Spec("../escape", data=b"x")], refused="'\\.\\.'"),
    Case("dotdot-climbing-out", [Spec("a/../../b", data=b"x")], refused="'\\.\\.'"),
    Case("dotdot-inside", [Spec("a/../b", data=b"x")], refused="'\\.\\.'"),
    Case("link-to-missing", [Spec("h", LNK, linkname="missing")], refused="not in the layer"),
    Case(
        "link-to-later",
        [Spec("h", LNK, linkname="later"), Spec("later", data=b"x")],
        refused="not in the layer",
    ),
    Case("link-escaping", [Spec("h", LNK, linkname="../etc/passwd")], refused="'\\.\\.'"),
    Case(
        "link-to-directory",
        [Spec("d/", DIR, mode=0o755), Spec("h", LNK, linkname="d")],
        refused="is a directory",
    ),
    Case(
        "link-target-replaced-later",
        [Spec("t", data=b"1"), Spec("h", LNK, linkname="t"), Spec("t", data=b"2")],
        refused="replaced or deleted after it",
    ),
    Case(
        "link-target-whited-out-later",
        [Spec("t", data=b"1"), Spec("h", LNK, linkname="t"), Spec(".wh.t")],
        refused="replaced or deleted after it",
    ),
    Case(
        "link-to-itself",
        [Spec("h", data=b"1"), Spec("h", LNK, linkname="h")],
        refused="itself",
    ),
    Case(
        "write-through-absolute-symlink",
        [Spec("link", SYM, linkname="/tmp"), Spec("link/planted", data=b"evil")],
        refused="'link' is not a directory",
    ),
    Case(
        "write-through-relative-symlink",
        [Spec("up", SYM, linkname="../../.."), Spec("up/tmp/planted", data=b"evil")],
        refused="'up' is not a directory",
    ),
    Case(
        "entry-below-a-file",
        [Spec("f", data=b"file"), Spec("f/x", data=b"x")],
        refused="'f' is not a directory",
    ),
    Case(
        "entry-below-a-whiteout",
        [Spec(".wh.x"), Spec("x/y", data=b"y")],
        refused="'x' is a whiteout",
    ),
    Case("whiteout-of-nothing", [Spec("dir/.wh.")], refused="whiteout of nothing"),
    Case(
        "whiteout-marker-as-directory",
        [Spec(".wh.x/y", data=b"y")],
        refused="whiteout marker used as a directory",
    ),
    Case("root-as-a-file", [Spec("./", data=b"root")], refused="root must be a directory"),
    Case(
        "pax-uid-beyond-int64",
        [Spec("f", data=b"x", pax={"uid": "99999999999999999999"})],
        refused="'f'.*uid.*out of range",
    ),
    Case("pax-uid-as-float", [Spec("f", pax={"uid": "1e20"})], refused="'f'.*bad PAX uid"),
    Case("pax-mtime-as-float", [Spec("f", pax={"mtime": "1e300"})], refused="'f'.*bad PAX time"),
    Case(
        "nul-in-a-pax-path",
        [Spec("x", data=b"x", pax={"path": "a\0b"})],
        refused="NUL",
    ),
]


def _layer(tmp_path: Path, case: Case) -> LayerFile:
    data = make_tar(case.specs, case.fmt)
    path = tmp_path / "layer.tar"
    path.write_bytes(data)
    return LayerFile("sha256:" + hashlib.sha256(data).hexdigest(), path)


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: whiteouts are character devices, opaque dirs trusted xattrs")


@pytest.mark.parametrize("case", REFUSED, ids=[c.id for c in REFUSED])
def test_all_refuse(tmp_path: Path, case: Case) -> None:
    source = _layer(tmp_path, case)
    with pytest.raises(FormatError, match=case.refused) as unpacking:
        unpack_layer_sync(source, tmp_path / "cache")
    assert unpacking.value.layer == source.digest
    assert "\n" not in str(unpacking.value)
    assert os.listdir(tmp_path / "cache") == []  # nothing half-written is left
    with pytest.raises(FormatError, match=case.refused) as mapping:
        index_layer_file(source.path, source.digest)
    assert mapping.value.layer == source.digest
    with pytest.raises(FormatError, match=case.refused):
        convert(source.path.read_bytes())
    with pytest.raises(FormatError, match=case.refused):
        convert(source.path.read_bytes(), prioritized_files=("a",))


def _disk_paths(root: Path) -> dict[str, os.stat_result]:
    """Every path below ``root`` (relative, ``/``-separated) with its lstat; iterative."""
    found: dict[str, os.stat_result] = {}
    stack = [""]
    while stack:
        relative = stack.pop()
        with os.scandir(root / relative if relative else root) as entries:
            for item in entries:
                name = f"{relative}/{item.name}" if relative else item.name
                found[name] = item.stat(follow_symlinks=False)
                if item.is_dir(follow_symlinks=False):
                    stack.append(name)
    return found


def _ancestors(names: set[str]) -> set[str]:
    out: set[str] = set()
    for name in names:
        while "/" in name:
            name = name.rpartition("/")[0]
            out.add(name)
    return out


def _index_without_eStargz_names(index: LayerIndex) -> LayerIndex:
    extra = {NO_PREFETCH_LANDMARK, TOC_TAR_NAME}
    return LayerIndex(index.entries - extra, index.whiteouts, index.opaque_dirs)


@pytest.mark.parametrize("case", ACCEPTED, ids=[c.id for c in ACCEPTED])
def test_all_accept_and_agree(tmp_path: Path, case: Case) -> None:
    _require_root()
    source = _layer(tmp_path, case)
    unpacked = unpack_layer_sync(source, tmp_path / "cache")
    index = unpacked.index
    if case.entries is not None:
        assert index.entries == case.entries
    assert index.whiteouts == case.whiteouts
    assert index.opaque_dirs == case.opaque

    # The mapper reads the same index from the headers alone.
    assert index_layer_file(source.path) == index

    # On disk: every entry, whiteouts as 0:0 character devices, nothing else but parents.
    disk = _disk_paths(unpacked.root)
    assert index.entries <= disk.keys()
    implied = index.opaque_dirs | _ancestors(set(disk))
    assert disk.keys() <= index.entries | index.whiteouts | implied
    for name in index.whiteouts - index.entries:
        assert stat.S_ISCHR(disk[name].st_mode)
        assert disk[name].st_rdev == 0
    for name in index.opaque_dirs:
        assert os.getxattr(unpacked.root / name, "trusted.overlay.opaque") == b"y"

    # The writer lists every entry under the same name, with the same content.
    blob, result = convert(source.path.read_bytes())
    blob_path = tmp_path / "blob"
    blob_path.write_bytes(blob)
    with open_layer(blob_path) as layer:
        layer.verify(result.toc_digest, check_data=True)
        for name in index.entries:
            entry = layer.lookup(name, follow_hardlinks=False)
            assert entry is not None, name
            on_disk = disk[name]
            if entry.type == "hardlink":
                target = disk[entry_path(entry.link_name)]
                assert (target.st_ino, target.st_dev) == (on_disk.st_ino, on_disk.st_dev)
                entry = layer.lookup(name)
                assert entry is not None
            if entry.type == "reg":
                assert stat.S_ISREG(on_disk.st_mode)
                assert layer.read_bytes(name) == (unpacked.root / name).read_bytes()
            elif entry.type == "symlink":
                assert os.readlink(unpacked.root / name) == entry.link_name
            elif entry.type == "dir":
                assert stat.S_ISDIR(on_disk.st_mode)

    # Mapping the converted blob gives the same index (landmark and TOC aside).
    assert _index_without_eStargz_names(index_layer_file(blob_path)) == index


def test_the_largest_numbers_go_reads_are_written_readably(tmp_path: Path) -> None:
    """Ids and sizes up to int64 are converted, and esgz and Go read the blob back."""
    largest = str((1 << 63) - 1)
    source = make_tar([Spec("f", data=b"x", pax={"uid": largest, "gid": largest})])
    blob, result = convert(source)
    path = tmp_path / "blob"
    path.write_bytes(blob)
    with open_layer(path) as layer:
        layer.verify(result.toc_digest, check_data=True)
        entry = layer.lookup("f")
        assert entry is not None
        assert (entry.uid, entry.gid) == ((1 << 63) - 1, (1 << 63) - 1)
    check = go_check(path, result.toc_digest)
    assert check.ok, check.errors


@pytest.mark.parametrize("case", ACCEPTED, ids=[c.id for c in ACCEPTED])
def test_go_reads_what_the_writer_accepted(tmp_path: Path, case: Case) -> None:
    blob, result = convert(make_tar(case.specs, case.fmt))
    path = tmp_path / "blob"
    path.write_bytes(blob)
    check = go_check(path, result.toc_digest)
    assert check.errors == case.go_errors
    assert check.ok == (not case.go_errors)
