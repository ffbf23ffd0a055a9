"""Tar header encoding: Go's USTAR and PAX layouts, read back by tarfile."""

from __future__ import annotations

import io
import tarfile

import pytest

from esgz.errors import FormatError
from esgz.estargz.tarheader import encode_header, plain_header
from esgz.estargz.tarinput import TarEntry


def parse(blocks: bytes) -> tarfile.TarInfo:
    with tarfile.open(fileobj=io.BytesIO(blocks + bytes(1024))) as archive:
        member = archive.next()
        assert member is not None
        return member


def test_toc_header_matches_the_documented_go_bytes() -> None:
    # FORMAT.md §15: the stargz.index.json header for a 1275-byte TOC.
    header = plain_header("stargz.index.json", 1275)
    assert len(header) == 512
    assert header[:17] == b"stargz.index.json"
    assert header[100:108] == b"0000000\0"
    assert header[124:136] == b"00000002373\0"
    assert header[136:148] == b"00000000000\0"
    assert header[148:156] == b"012507\0 "
    assert header[156:157] == b"0"
    assert header[257:265] == b"ustar\x0000"
    assert header[329:345] == b"0000000\x000000000\x00"


def test_ustar_header_with_a_split_long_name() -> None:
    name = "d" * 120 + "/" + "f" * 90
    entry = TarEntry(name=name, typeflag="0", mode=0o644, size=3, mtime=1704164645)
    header = encode_header(entry)
    assert len(header) == 512  # no PAX header needed
    assert header[345:465] == b"d" * 120
    assert parse(header).name == name


def test_pax_header_is_laid_out_like_gos() -> None:
    entry = TarEntry(
        name="dir/café.txt",
        typeflag="0",
        mode=0o644,
        size=5,
        mtime=1704164645,
        mtime_ns=500_000_000,
        uname="root",
        xattrs={"user.b": b"2", "user.a": b"1"},
    )
    blocks = encode_header(entry)
    pax, main = blocks[:512], blocks[-512:]
    assert pax[:20] == b"dir/PaxHeaders.0/caf"
    assert pax[20:25] == b".txt\0"
    assert pax[156:157] == b"x"
    assert pax[329:345] == bytes(16)  # devmajor/devminor left empty in the PAX header
    records = blocks[512:-512].rstrip(b"\0")
    assert records == (
        b"25 SCHILY.xattr.user.a=1\n"
        b"25 SCHILY.xattr.user.b=2\n"
        b"22 mtime=1704164645.5\n"
        b"22 path=dir/caf\xc3\xa9.txt\n"
    )
    assert main[:12] == b"dir/caf.txt\0"  # ASCII-only main name
    info = parse(blocks)
    assert info.name == "dir/café.txt"
    assert info.mtime == 1704164645.5
    assert info.pax_headers["SCHILY.xattr.user.a"] == "1"


def test_numbers_too_big_for_octal_go_to_pax_records() -> None:
    entry = TarEntry(name="big", typeflag="0", size=9 << 30, uid=1 << 22, mtime=-5)
    blocks = encode_header(entry)
    records = blocks[512:-512].rstrip(b"\0")
    assert b" size=9663676416\n" in records
    assert b" uid=4194304\n" in records
    assert b" mtime=-5\n" in records
    main = blocks[-512:]
    assert main[124:136] == b"00000000000\0"  # zero when it does not fit, as Go


def test_modes_and_devices_that_do_not_fit_are_errors() -> None:
    with pytest.raises(FormatError, match="mode"):
        encode_header(TarEntry(name="m", typeflag="0", mode=1 << 30))
    with pytest.raises(FormatError, match="devminor"):
        encode_header(TarEntry(name="c", typeflag="3", devminor=1 << 30))
