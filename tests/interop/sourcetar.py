"""Source tars for interop and property tests, and checks of a read layer against its tar.

:func:`write_tar` writes a list of :class:`TarItem` with Python's ``tarfile`` (PAX format,
so xattrs, long and non-ASCII names survive). :func:`rich_items` is a layer with every
entry type. :func:`assert_reader_matches_tar` compares what :class:`LayerReader` returns
with the tar, field by field and byte for byte, using only ``tarfile`` as the reference.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import tarfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from esgz.estargz.reader import LayerReader

LANDMARKS = (".prefetch.landmark", ".no.prefetch.landmark")
_TYPES = {
    "reg": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "char": tarfile.CHRTYPE,
    "block": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}
_TYPE_NAMES = {value: key for key, value in _TYPES.items()} | {tarfile.AREGTYPE: "reg"}


@dataclass
class TarItem:
    """One entry to put in a source tar."""

    name: str
    type: str = "reg"
    data: bytes = b""
    mode: int = 0o644
    link: str = ""
    uid: int = 0
    gid: int = 0
    uname: str = "root"
    gname: str = "root"
    mtime: int = 1_704_164_645  # 2024-01-02T03:04:05Z
    dev: tuple[int, int] = (0, 0)
    xattrs: dict[str, str] = field(default_factory=dict)


def write_tar(path: Path, items: list[TarItem], fmt: int = tarfile.PAX_FORMAT) -> Path:
    """Write ``items`` as a tar to ``path`` and return it."""
    with tarfile.open(path, "w", format=fmt) as tar:
        for item in items:
            info = tarfile.TarInfo(item.name)
            info.type = _TYPES[item.type]
            info.mode = item.mode
            info.uid, info.gid = item.uid, item.gid
            info.uname, info.gname = item.uname, item.gname
            info.mtime = item.mtime
            info.linkname = item.link
            info.devmajor, info.devminor = item.dev
            if item.xattrs:
                info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in item.xattrs.items()}
            if item.type == "reg":
                info.size = len(item.data)
                tar.addfile(info, io.BytesIO(item.data))
            else:
                tar.addfile(info)
    return path


def pattern(size: int, seed: int) -> bytes:
    """``size`` deterministic, poorly compressible bytes."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def rich_items(chunk_size: int = 4096) -> list[TarItem]:
    """A layer with every entry type, xattrs, hardlinks, multi-chunk and unicode names."""
    long_dir = "deep/" + "d" * 60 + "/" + "e" * 60
    return [
        TarItem("./", "dir", mode=0o755),
        TarItem("bin/", "dir", mode=0o755),
        TarItem("bin/tool", data=pattern(3 * chunk_size + 17, 1), mode=0o4755),
        TarItem("bin/exact", data=pattern(2 * chunk_size, 2), mode=0o755),
        TarItem("etc/", "dir", mode=0o755, xattrs={"user.dir": "yes"}),
        TarItem("etc/hostname", data=b"box\n", uid=1000, gid=1000, uname="me", gname="us"),
        TarItem("etc/empty", data=b""),
        TarItem("etc/attrs", data=b"x", xattrs={"user.a": "1", "user.b": "välue ✓"}),
        TarItem("etc/hard", "hardlink", link="etc/hostname", mode=0o644),
        TarItem("etc/hard-to-exec", "hardlink", link="bin/tool", mode=0o4755),
        TarItem("etc/sym", "symlink", link="hostname", mode=0o777),
        TarItem("etc/abs-sym", "symlink", link="/etc/hostname", mode=0o777),
        TarItem("etc/dangling", "symlink", link="../nowhere", mode=0o777),
        TarItem("dev/", "dir", mode=0o755),
        TarItem("dev/null", "char", mode=0o666, dev=(1, 3)),
        TarItem("dev/loop0", "block", mode=0o660, dev=(7, 0)),
        TarItem("dev/pipe", "fifo", mode=0o600),
        TarItem("uni/", "dir", mode=0o755),
        TarItem("uni/ünïcödé 文件.txt", data="grüße\n".encode()),
        TarItem("uni/<tag>&amp", data=b"escaped in JSON"),
        TarItem("deep/", "dir", mode=0o755),
        TarItem(long_dir + "/", "dir", mode=0o700),
        TarItem(long_dir + "/file-with-a-long-path.bin", data=pattern(chunk_size + 1, 3)),
        TarItem("implicit/parent/child.txt", data=b"no explicit parents"),
        TarItem("zero-mtime", data=b"epoch", mtime=0),
    ]


def _clean(name: str) -> str:
    return posixpath.normpath("/" + name).lstrip("/")


def _modtime(mtime: float) -> str:
    seconds = int(mtime)
    if seconds == 0:
        return ""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_tar(path: Path) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    """Cleaned name → (member, content) of a tar, last one winning, landmarks dropped."""
    members: dict[str, tuple[tarfile.TarInfo, bytes]] = {}
    with tarfile.open(path) as tar:
        for info in tar:
            name = _clean(info.name)
            if name in LANDMARKS or name == "stargz.index.json":
                continue
            data = b""
            if info.isreg():
                extracted = tar.extractfile(info)
                assert extracted is not None
                data = extracted.read()
            members.pop(name, None)
            members[name] = (info, data)
    return members


def assert_reader_matches_tar(layer: LayerReader, tar_path: Path) -> None:
    """Every tar member is in the layer with the same metadata and content, and vice versa."""
    members = read_tar(tar_path)
    names_in_layer = {e.name for e in layer.entries()} - set(LANDMARKS)
    assert names_in_layer == set(members), names_in_layer ^ set(members)
    for name, (info, data) in members.items():
        entry = layer.lookup(name, follow_hardlinks=False)
        assert entry is not None, name
        expected_type = _TYPE_NAMES[info.type]
        assert entry.type == expected_type, name
        assert entry.mode == info.mode, (name, oct(entry.mode), oct(info.mode))
        assert (entry.uid, entry.gid) == (info.uid, info.gid), name
        if info.uname:
            assert entry.user_name == info.uname, name
        if info.gname:
            assert entry.group_name == info.gname, name
        assert entry.modtime == _modtime(info.mtime), name
        xattrs = {
            key.removeprefix("SCHILY.xattr."): value.encode("utf-8", "surrogateescape")
            for key, value in info.pax_headers.items()
            if key.startswith("SCHILY.xattr.")
        }
        assert entry.xattrs == xattrs, name
        if expected_type == "reg":
            assert entry.size == len(data), name
            assert layer.read_bytes(name) == data, name
        elif expected_type == "symlink":
            assert entry.link_name == info.linkname, name
        elif expected_type == "hardlink":
            target = _clean(info.linkname)
            assert _clean(entry.link_name) == target, name
            assert layer.read_bytes(name) == members[target][1], name
        elif expected_type in ("char", "block"):
            assert (entry.dev_major, entry.dev_minor) == (info.devmajor, info.devminor), name
