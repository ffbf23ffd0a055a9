"""The input tar parser, on archives written by GNU tar and Python's tarfile."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from esgz.errors import FormatError
from esgz.estargz.source import TarStream
from esgz.estargz.tarheader import encode_header
from esgz.estargz.tarinput import TarEntry, TarReader
from tests.estargz.writer_support import (
    Spec,
    convert,
    gzip_toc,
    make_tar,
    tar_contents,
    tar_members,
)


def read_all(data: bytes) -> list[tuple[TarEntry, bytes]]:
    reader = TarReader(TarStream(io.BytesIO(data)))
    out = []
    for entry in reader:
        payload = b"".join(reader.payload(entry)) if entry.typeflag == "0" else b""
        out.append((entry, payload))
    return out


def gnu_tar() -> str:
    tar = shutil.which("tar")
    if tar is None:
        pytest.skip("needs GNU tar on PATH (apt-get install tar)")
    version = subprocess.run([tar, "--version"], capture_output=True, text=True).stdout
    if "GNU tar" not in version:
        pytest.skip("needs GNU tar (found another tar)")
    return tar


FILES = ("holes.bin", "after.txt")


def make_sparse_file(path: Path) -> bytes:
    with open(path, "wb") as handle:
        handle.truncate(3 * 1024 * 1024 + 100)
        handle.seek(4096)
        handle.write(b"A" * 5000)
        handle.seek(2 * 1024 * 1024)
        handle.write(b"B" * 123)
    return path.read_bytes()


@pytest.mark.parametrize(
    "tar_args",
    [
        ["--format=gnu"],
        ["--format=pax", "--sparse-version=0.0"],
        ["--format=pax", "--sparse-version=0.1"],
        ["--format=pax", "--sparse-version=1.0"],
    ],
)
def test_sparse_files_are_expanded(tmp_path: Path, tar_args: list[str]) -> None:
    tar = gnu_tar()
    content = make_sparse_file(tmp_path / "holes.bin")
    (tmp_path / "after.txt").write_bytes(b"after")
    archive = tmp_path / "a.tar"
    subprocess.run(
        [
            tar,
            "-c",
            "--sparse",
            *tar_args,
            "-f",
            str(archive),
            "-C",
            str(tmp_path),
            "holes.bin",
            "after.txt",
        ],
        check=True,
    )
    data = archive.read_bytes()
    entries = read_all(data)
    assert [(e.name, e.typeflag, e.size) for e, _ in entries] == [
        ("holes.bin", "0", len(content)),
        ("after.txt", "0", 5),
    ]
    assert entries[0][1] == content
    assert entries[1][1] == b"after"
    blob, _ = convert(data, chunk_size=1 << 20)
    stream = gzip.decompress(blob)
    assert tar_contents(stream)["holes.bin"] == content
    assert not any(m.issparse() for m in tar_members(stream))


def test_gnu_long_names_and_links(tmp_path: Path) -> None:
    tar = gnu_tar()
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    target = deep / ("f" * 90)
    target.write_bytes(b"long")
    os.link(target, deep / ("g" * 90))
    os.symlink("x" * 150, deep / "sym")
    archive = tmp_path / "a.tar"
    subprocess.run(
        [tar, "-c", "--format=gnu", "-f", str(archive), "-C", str(tmp_path), "d" * 60],
        check=True,
    )
    ours = {e.name: (e, payload) for e, payload in read_all(archive.read_bytes())}
    with tarfile.open(archive) as reference:
        for member in reference:
            entry, _ = ours[member.name + ("/" if member.isdir() else "")]
            assert entry.linkname == member.linkname
            assert entry.size == member.size
            assert entry.mtime == member.mtime
    blob, _ = convert(archive.read_bytes())
    names = {e["name"] for e in gzip_toc(blob)["entries"]}
    assert f"{'d' * 60}/{'e' * 60}/{'f' * 90}" in names
    links = [e for e in gzip_toc(blob)["entries"] if e["type"] in ("hardlink", "symlink")]
    assert {len(e["linkName"]) for e in links} == {150, len(f"{'d' * 60}/{'e' * 60}/{'f' * 90}")}


def test_pax_global_headers_apply_to_following_entries() -> None:
    buf = io.BytesIO()
    with tarfile.open(
        fileobj=buf,
        mode="w",
        format=tarfile.PAX_FORMAT,
        pax_headers={"uname": "globaluser", "SCHILY.xattr.user.g": "G"},
    ) as archive:
        for name in ("a", "b"):
            info = tarfile.TarInfo(name)
            info.size = 1
            info.mtime = 1000
            if name == "b":
                info.pax_headers = {"uname": "local"}
            archive.addfile(info, io.BytesIO(b"x"))
    entries = [e for e, _ in read_all(buf.getvalue())]
    assert [(e.name, e.uname, e.xattrs) for e in entries] == [
        ("a", "globaluser", {"user.g": b"G"}),
        ("b", "local", {"user.g": b"G"}),
    ]
    blob, _ = convert(buf.getvalue())
    stream = gzip.decompress(blob)
    assert [m.name for m in tar_members(stream)] == [
        ".no.prefetch.landmark", "a", "b", "stargz.index.json",
    ]  # fmt: skip
    assert tar_members(stream)[1].uname == "globaluser"


def test_pax_records_xattrs_times_and_big_numbers_survive() -> None:
    specs = [
        Spec(
            "f",
            data=b"data",
            uid=3_000_000,
            gid=5,
            uname="ü" * 40,
            pax={
                "SCHILY.xattr.security.capability": "\x01\x02",
                "mtime": "1704164645.25",
                "atime": "1704164600.5",
                "LIBARCHIVE.creationtime": "12",
            },
        )
    ]
    source = make_tar(specs)
    entry, payload = read_all(source)[0]
    assert (entry.uid, entry.mtime, entry.mtime_ns) == (3_000_000, 1704164645, 250_000_000)
    assert entry.xattrs == {"security.capability": b"\x01\x02"}
    assert entry.extra_pax == {"atime": "1704164600.5", "LIBARCHIVE.creationtime": "12"}
    again = read_all(encode_header(entry) + payload + bytes(508) + bytes(1024))[0][0]
    assert again == entry
    blob, _ = convert(source)
    toc_entry = gzip_toc(blob)["entries"][1]
    assert toc_entry["uid"] == 3_000_000
    assert toc_entry["modtime"] == "2024-01-02T03:04:05Z"
    member = tar_members(gzip.decompress(blob))[1]
    assert member.pax_headers["mtime"] == "1704164645.25"
    assert member.uname == "ü" * 40


def test_non_utf8_names_keep_their_bytes_in_tar_and_become_replacement_chars_in_the_toc() -> None:
    source = make_tar([Spec("caf\udce9.txt", data=b"latin1")], fmt=tarfile.GNU_FORMAT)
    assert b"caf\xe9.txt" in source
    entry, _ = read_all(source)[0]
    assert entry.name == "caf\udce9.txt"
    blob, _ = convert(source)
    assert gzip_toc(blob)["entries"][1]["name"] == "caf\ufffd.txt"
    assert b"caf\xe9.txt" in gzip.decompress(blob)


def test_v7_and_legacy_typeflags() -> None:
    source = bytearray(make_tar([Spec("dir/", tarfile.DIRTYPE), Spec("f", data=b"v7")]))
    for start in (0, 512):
        block = source[start : start + 512]
        if start == 0:
            block[156] = 0  # legacy typeflag with a trailing slash → directory
        block[257:265] = bytes(8)  # no magic: V7
        block[148:156] = b"        "
        block[148:156] = b"%06o\0 " % sum(block)
        source[start : start + 512] = block
    entries = [e for e, _ in read_all(bytes(source))]
    assert [(e.name, e.typeflag) for e in entries] == [("dir/", "5"), ("f", "0")]


def test_base256_numbers_are_read() -> None:
    block = bytearray(make_tar([Spec("f", data=b"x")], fmt=tarfile.GNU_FORMAT)[:512])
    block[108:116] = b"\x80" + (2**40).to_bytes(7, "big")  # uid in base-256
    block[148:156] = b"        "
    block[148:156] = b"%06o\0 " % sum(block)
    entry = read_all(bytes(block) + b"x" + bytes(511) + bytes(1024))[0][0]
    assert entry.uid == 2**40


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (make_tar([Spec("f", data=b"x" * 600)])[:1100], "truncated"),
        (b"\x01" * 512, "checksum"),
        (make_tar([Spec("f", data=b"x", pax={"path": "a" * 200})])[:512], "truncated|ends"),
    ],
)
def test_broken_archives_are_format_errors(data: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        read_all(data)


def test_a_clean_end_of_stream_without_zero_blocks_ends_the_archive() -> None:
    source = make_tar([Spec("a", data=b"1"), Spec("b", data=b"2")])
    end = 4 * 512  # 2 × (header + data block), no end-of-archive marker
    assert [e.name for e, _ in read_all(source[:end])] == ["a", "b"]


def test_signed_header_checksum_is_accepted() -> None:
    """Old writers summed header bytes as signed chars; readers (Go, tarfile) accept both."""
    data = bytearray(make_tar([Spec("caf\u00e9-\u00fc.txt", data=b"x")], fmt=tarfile.GNU_FORMAT))
    header = data[:512]
    assert any(byte > 127 for byte in header)
    signed = sum(b - 256 if b > 127 else b for b in header[:148] + b" " * 8 + header[156:])
    data[148:156] = b"%06o\0 " % signed
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as reference:
        assert reference.getnames() == ["caf\u00e9-\u00fc.txt"]  # tarfile takes it as valid
    [(entry, payload)] = read_all(bytes(data))
    assert (entry.name, payload) == ("caf\u00e9-\u00fc.txt", b"x")


def _pax_1_0_sparse(name: str, spans: list[tuple[int, bytes]], real_size: int) -> bytes:
    """A PAX 1.0 sparse entry (the map in the data area, as GNU tar writes it)."""
    lines = [str(len(spans))] + [f"{offset}\n{len(data)}" for offset, data in spans]
    sparse_map = ("\n".join(lines) + "\n").encode()
    sparse_map += bytes(-len(sparse_map) % 512)
    payload = sparse_map + b"".join(data for _, data in spans)
    pax = {
        "GNU.sparse.major": "1",
        "GNU.sparse.minor": "0",
        "GNU.sparse.name": name,
        "GNU.sparse.realsize": str(real_size),
    }
    spec = Spec(f"GNUSparseFile.0/{name}", data=payload, pax=pax)
    return make_tar([spec, Spec("after", data=b"after")])


def test_a_large_pax_1_0_sparse_map_is_read_in_one_pass() -> None:
    """40,000 spans (an 83 KB map): read once, not re-parsed for every block of it."""
    spans = [(index * 4096, b"%d" % (index % 10)) for index in range(40_000)]
    real_size = 40_000 * 4096
    [(entry, content), (after, _)] = read_all(_pax_1_0_sparse("holes", spans, real_size))
    assert (entry.name, entry.size, after.name) == ("holes", real_size, "after")
    assert entry.sparse is not None
    assert len(entry.sparse) == 40_000
    assert entry.sparse_map_size > 80_000
    assert content[4096 * 12_345] == ord("5")
    assert content.count(0) == real_size - 40_000


@pytest.mark.parametrize(
    ("pax", "message"),
    [
        ({"uid": "99999999999999999999"}, r"'f'.*uid.*out of range"),
        ({"gid": "9223372036854775808"}, r"'f'.*gid.*out of range"),
        ({"uid": "1e20"}, r"'f'.*bad PAX uid"),
        ({"uid": "+5"}, r"'f'.*bad PAX uid"),
        ({"uid": "-1"}, r"'f'.*negative PAX uid"),
        ({"mtime": "1e300"}, r"'f'.*bad PAX time"),
        ({"mtime": "9" * 30}, r"'f'.*PAX time.*out of range"),
        ({"mtime": "-9223372036854775809"}, r"'f'.*PAX time.*out of range"),
        ({"size": "9223372036854775808"}, r"'f'.*size.*out of range"),
        ({"GNU.sparse.map": "0,0", "GNU.sparse.size": "1" * 25}, r"'f'.*out of range"),
    ],
)
def test_numbers_beyond_int64_or_not_decimal_are_format_errors(
    pax: dict[str, str], message: str
) -> None:
    """As Go's reader refuses them: no Python number may reach the output or a syscall."""
    with pytest.raises(FormatError, match=message):
        read_all(make_tar([Spec("f", data=b"", pax=pax)]))


def test_base256_numbers_beyond_int64_are_format_errors() -> None:
    data = bytearray(make_tar([Spec("f", data=b"")], fmt=tarfile.GNU_FORMAT))
    data[108:116] = b"\x80" + b"\xff" * 7  # uid: 2**56 - 1 fits
    data[124:136] = b"\x80\x00\x00\x01" + bytes(8)  # size: 2**64
    data[148:156] = b"        "
    data[148:156] = b"%06o\0 " % sum(data[:512])
    with pytest.raises(FormatError, match=r"'f'.*size 18446744073709551616 is out of range"):
        read_all(bytes(data))


def test_regions_leave_the_holes_out() -> None:
    spans = [(0, b"head"), (1 << 30, b"middle")]
    reader = TarReader(TarStream(io.BytesIO(_pax_1_0_sparse("bomb", spans, 2 << 30))))
    entry = reader.next()
    assert entry is not None
    assert entry.size == 2 << 30
    assert list(reader.regions(entry)) == spans
    after = reader.next()
    assert after is not None
    assert b"".join(reader.payload(after)) == b"after"
