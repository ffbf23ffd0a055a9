"""The gzip eStargz writer: member structure, TOC, ordering, inputs, errors."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import zlib

import pytest
import zstandard

from esgz.errors import ConfigError, FormatError
from esgz.estargz import ConvertOptions
from esgz.estargz.deflate import BACKENDS
from esgz.estargz.footer import gzip_footer
from tests.estargz.test_toc import EXAMPLE_JSON
from tests.estargz.writer_support import (
    Spec,
    convert,
    gzip_members,
    gzip_toc,
    make_tar,
    sha256,
    tar_contents,
    tar_members,
    toc_bytes,
)

LANDMARK_DIGEST = "sha256:dc0e9c3658a1a3ed1ec94274d8b19925c93e1abb7ddba294923ad9bde30f8cb8"


def example_tar() -> bytes:
    """The input of the worked example (FORMAT.md §15)."""
    return make_tar(
        [
            Spec("a.txt", data=b"hello\n"),
            Spec("dir/", tarfile.DIRTYPE, mode=0o755),
            Spec("dir/b.bin", data=b"0123456789AB", mode=0o755),
            Spec("dir/c.txt"),
        ],
        fmt=tarfile.USTAR_FORMAT,
    )


def test_spec_example_has_the_documented_member_structure() -> None:
    blob, result = convert(example_tar(), prioritized_files=("/dir/b.bin",))
    members = gzip_members(blob)
    assert len(members) == 6
    data = [member.data for member in members]
    # member 0: headers of dir/ and dir/b.bin; each data member starts with its data
    assert len(data[0]) == 1024
    assert data[0][:4] == b"dir/"
    assert data[0][512:521] == b"dir/b.bin"
    assert data[1].startswith(b"0123456789AB" + bytes(500))
    assert data[1][512:530] == b".prefetch.landmark"
    assert data[2].startswith(b"\x0f" + bytes(511))
    assert data[2][512:517] == b"a.txt"
    assert data[3].startswith(b"hello\n" + bytes(506))
    assert data[3][512:521] == b"dir/c.txt"
    assert [len(d) for d in data] == [1024, 1024, 1024, 1024, 3072, 0]
    for member in members[:5]:
        assert member.compressed[:10] == bytes.fromhex("1f8b08000000000002ff")
    # the footer points at the TOC member
    assert members[5].compressed == gzip_footer(members[4].offset)
    assert members[4].data[:17] == b"stargz.index.json"

    # The TOC is byte-for-byte the Go one, apart from the compressed offsets.
    offsets = {name: members[i].offset for name, i in (("b", 1), ("l", 2), ("a", 3))}
    expected = (
        EXAMPLE_JSON.replace(b'"offset": 123', b'"offset": %d' % offsets["b"])
        .replace(b'"offset": 227', b'"offset": %d' % offsets["l"])
        .replace(b'"offset": 330', b'"offset": %d' % offsets["a"])
    )
    assert toc_bytes(blob) == expected
    assert result.toc_digest == sha256(expected)
    if len(expected) == 1275:  # same length as Go's → the TOC header is Go's too
        header = members[4].data[:512]
        assert header[124:136] == b"00000002373\0"
        assert header[148:156] == b"012507\0 "

    stream = gzip.decompress(blob)
    assert result.diff_id == sha256(stream)
    assert result.uncompressed_size == len(stream) == 7168
    assert result.annotations == {
        "containerd.io/snapshot/stargz/toc.digest": result.toc_digest,
        "io.containers.estargz.uncompressed-size": "7168",
    }
    names = [m.name for m in tar_members(stream)]
    assert names == [
        "dir",
        "dir/b.bin",
        ".prefetch.landmark",
        "a.txt",
        "dir/c.txt",
        "stargz.index.json",
    ]
    landmark = tar_members(stream)[2]
    assert (landmark.mode, landmark.mtime, landmark.uname, landmark.size) == (0, 0, "", 1)
    assert stream.endswith(bytes(1024))
    assert result.missing_prioritized == ()
    assert result.source_compression == "tar"


def test_without_prioritized_files_the_no_prefetch_landmark_comes_first() -> None:
    blob, _ = convert(example_tar())
    names = [entry["name"] for entry in gzip_toc(blob)["entries"]]
    assert names == [".no.prefetch.landmark", "a.txt", "dir/", "dir/b.bin", "dir/c.txt"]
    members = gzip_members(blob)
    assert members[0].data[:21] == b".no.prefetch.landmark"
    assert members[1].data[:1] == b"\x0f"
    landmark = gzip_toc(blob)["entries"][0]
    assert landmark == {
        "name": ".no.prefetch.landmark",
        "type": "reg",
        "size": 1,
        "offset": members[1].offset,
        "digest": LANDMARK_DIGEST,
        "chunkDigest": LANDMARK_DIGEST,
    }


@pytest.mark.parametrize("chunk_size", [1024, 4096])
def test_chunking_follows_the_chunk_size_rules(chunk_size: int) -> None:
    sizes = {
        "exact": chunk_size,
        "double": 2 * chunk_size,
        "plus_one": chunk_size + 1,
        "small": 10,
        "odd": 3 * chunk_size - 7,
    }
    contents = {
        name: bytes((i * 7 + len(name)) % 251 for i in range(n)) for name, n in sizes.items()
    }
    blob, _ = convert(
        make_tar([Spec(name, data=data) for name, data in contents.items()]),
        chunk_size=chunk_size,
    )
    members = {member.offset: member for member in gzip_members(blob)}
    entries = gzip_toc(blob)["entries"][1:]
    by_file: dict[str, list[dict[str, object]]] = {}
    for entry in entries:
        by_file.setdefault(str(entry["name"]), []).append(entry)
    for name, data in contents.items():
        chunks = by_file[name]
        assert chunks[0]["type"] == "reg"
        assert chunks[0]["digest"] == sha256(data)
        assert all(chunk["type"] == "chunk" for chunk in chunks[1:])
        assert len(chunks) == -(-len(data) // chunk_size)
        for chunk in chunks:
            start = int(chunk.get("chunkOffset", 0))  # type: ignore[call-overload]
            piece = data[start : start + chunk_size]
            # chunkSize only when a full chunk remained
            if len(data) - start >= chunk_size:
                assert chunk["chunkSize"] == chunk_size
            else:
                assert "chunkSize" not in chunk
            assert chunk["chunkDigest"] == sha256(piece)
            member = members[int(chunk["offset"])]  # type: ignore[call-overload]
            assert member.data.startswith(piece)  # data at offset 0 of its own member


def test_whole_blob_gunzips_to_the_input_entries_plus_landmark_and_toc() -> None:
    specs = [
        Spec("./", tarfile.DIRTYPE, mode=0o755),
        Spec("./bin/", tarfile.DIRTYPE, mode=0o755),
        Spec("./bin/tool", data=b"\x7fELF" * 3000, mode=0o755, uid=1000, gid=1000, uname="u"),
        Spec("./bin/alias", tarfile.SYMTYPE, linkname="tool"),
        Spec("./bin/hard", tarfile.LNKTYPE, linkname="./bin/tool"),
        Spec("./dev/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3),
        Spec("./dev/sda", tarfile.BLKTYPE, mode=0o660, devmajor=8, devminor=0),
        Spec("./run/fifo", tarfile.FIFOTYPE),
        Spec("./empty", data=b""),
        Spec("./x" * 80, data=b"long name"),
        Spec("./ünïcødé/名前.txt", data=b"unicode"),
        Spec("./attrs", data=b"x", pax={"SCHILY.xattr.user.k": "v", "SCHILY.xattr.a": ""}),
    ]
    source = make_tar(specs)
    blob, result = convert(source, chunk_size=4096)
    stream = gzip.decompress(blob)
    assert result.diff_id == sha256(stream)
    got = tar_members(stream)
    want = tar_members(source)
    assert [m.name for m in got] == [".no.prefetch.landmark"] + [m.name for m in want] + [
        "stargz.index.json"
    ]
    for old, new in zip(want, got[1:-1], strict=True):
        assert (new.type, new.mode, new.uid, new.gid, new.uname, new.gname) == (
            old.type, old.mode, old.uid, old.gid, old.uname, old.gname
        )  # fmt: skip
        assert (new.size, new.mtime, new.linkname, new.devmajor, new.devminor) == (
            old.size, old.mtime, old.linkname, old.devmajor, old.devminor
        )  # fmt: skip
        assert {k: v for k, v in new.pax_headers.items() if k.startswith("SCHILY")} == {
            k: v for k, v in old.pax_headers.items() if k.startswith("SCHILY")
        }
    assert tar_contents(stream) == {**tar_contents(source), ".no.prefetch.landmark": b"\x0f"} | {
        "stargz.index.json": toc_bytes(blob)
    }
    entries = {e["name"]: e for e in gzip_toc(blob)["entries"] if e["type"] != "chunk"}
    assert entries["./dev/null"]["devMajor"] == 1
    assert entries["./dev/null"]["devMinor"] == 3
    assert entries["./bin/hard"]["type"] == "hardlink"
    assert entries["./bin/hard"]["linkName"] == "./bin/tool"
    assert entries["./bin/alias"] == {
        "name": "./bin/alias",
        "type": "symlink",
        "modtime": "2024-01-02T03:04:05Z",
        "linkName": "tool",
        "mode": 420,
    }
    assert entries["./attrs"]["xattrs"] == {"a": "", "user.k": "dg=="}
    assert entries["./run/fifo"]["type"] == "fifo"
    assert entries["./bin/tool"]["uid"] == 1000
    assert entries["./bin/tool"]["userName"] == "u"
    assert entries["./empty"]["digest"] == sha256(b"")
    assert "offset" not in entries["./empty"]


def test_user_and_group_names_are_written_only_when_they_change() -> None:
    specs = [
        Spec("a", data=b"1", uid=1, uname="one"),
        Spec("b", data=b"2", uid=1, uname="one"),
        Spec("c", data=b"3", uid=1, uname="uno"),
        Spec("d", data=b"4", uid=2, uname="one"),
    ]
    blob, _ = convert(make_tar(specs))
    entries = gzip_toc(blob)["entries"][1:]
    assert [e.get("userName") for e in entries] == ["one", None, "uno", "one"]
    assert [e.get("groupName") for e in entries] == ["root", None, None, None]


def test_same_input_as_gzip_zstd_or_plain_tar_gives_the_same_blob() -> None:
    source = example_tar()
    plain, plain_result = convert(source)
    # a multi-member gzip input
    half = len(source) // 2
    multi = gzip.compress(source[:half]) + gzip.compress(source[half:])
    for encoded, kind in (
        (multi, "gzip"),
        (zstandard.ZstdCompressor().compress(source), "zstd"),
    ):
        blob, result = convert(encoded)
        assert blob == plain
        assert result.source_compression == kind
        assert result.diff_id == plain_result.diff_id


def test_reconverting_an_estargz_drops_its_landmark_and_toc() -> None:
    first, first_result = convert(example_tar(), prioritized_files=("dir/b.bin",))
    second, second_result = convert(first, prioritized_files=("dir/b.bin",))
    assert second == first
    assert second_result.toc_digest == first_result.toc_digest


def test_a_user_file_named_like_the_toc_or_a_landmark_is_dropped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = make_tar(
        [
            Spec("stargz.index.json", data=b"{}"),
            Spec(".prefetch.landmark", data=b"not a landmark"),
            Spec("./.no.prefetch.landmark", data=b"\x0f"),
            Spec("sub/stargz.index.json", data=b"kept"),
        ]
    )
    with caplog.at_level("WARNING", logger="esgz.estargz.writer"):
        blob, _ = convert(source)
    names = [e["name"] for e in gzip_toc(blob)["entries"]]
    assert names == [".no.prefetch.landmark", "sub/stargz.index.json"]
    warned = " ".join(record.getMessage() for record in caplog.records)
    assert "'stargz.index.json'" in warned
    assert "'.prefetch.landmark'" in warned
    assert "./.no.prefetch.landmark" not in warned  # a real landmark is dropped quietly


def test_duplicate_names_keep_every_occurrence_in_the_tar_but_only_the_last_in_the_toc() -> None:
    source = make_tar(
        [
            Spec("a", data=b"first"),
            Spec("b", data=b"b"),
            Spec("./a", data=b"second"),
        ]
    )
    blob, _ = convert(source)
    stream = gzip.decompress(blob)
    names = [m.name for m in tar_members(stream)]
    assert names == [".no.prefetch.landmark", "a", "b", "./a", "stargz.index.json"]
    assert tar_contents(stream)["./a"] == b"second"
    entries = gzip_toc(blob)["entries"]
    assert [e["name"] for e in entries] == [".no.prefetch.landmark", "b", "./a"]
    assert entries[2]["digest"] == sha256(b"second")


def test_absolute_names_lose_the_leading_slash() -> None:
    source = make_tar(
        [
            Spec("/", tarfile.DIRTYPE, mode=0o755),
            Spec("/etc/", tarfile.DIRTYPE, mode=0o755),
            Spec("/etc/passwd", data=b"root"),
            Spec("/etc/link", tarfile.LNKTYPE, linkname="/etc/passwd"),
        ]
    )
    blob, _ = convert(source)
    entries = gzip_toc(blob)["entries"]
    assert [e["name"] for e in entries] == [
        ".no.prefetch.landmark", "./", "etc/", "etc/passwd", "etc/link",
    ]  # fmt: skip
    assert entries[-1]["linkName"] == "etc/passwd"
    assert [m.name for m in tar_members(gzip.decompress(blob))][1:4] == [".", "etc", "etc/passwd"]


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ([Spec("../escape", data=b"x")], "'..'"),
        ([Spec("a/../../b", data=b"x")], "'..'"),
        ([Spec("link", tarfile.LNKTYPE, linkname="missing")], "is not in the layer"),
        (
            [Spec("link", tarfile.LNKTYPE, linkname="later"), Spec("later", data=b"x")],
            "not in the layer before it",
        ),
        ([Spec("h", tarfile.LNKTYPE, linkname="../etc/passwd")], "'..'"),
        ([Spec("./", data=b"root as a file")], "root must be a directory"),
    ],
)
def test_unrepresentable_inputs_are_format_errors(specs: list[Spec], message: str) -> None:
    with pytest.raises(FormatError, match=message):
        convert(make_tar(specs))


def test_unsupported_entry_types_are_format_errors() -> None:
    source = bytearray(make_tar([Spec("weird", data=b"abc")], fmt=tarfile.USTAR_FORMAT))
    source[156:157] = b"D"  # GNU dumpdir
    source[148:156] = b"        "
    source[148:156] = b"%06o\0 " % sum(source[:512])
    with pytest.raises(FormatError, match=r"'weird'.*unsupported entry type 'D'"):
        convert(bytes(source))


@pytest.mark.parametrize(
    "damage",
    ["truncated tar", "bad checksum", "corrupt gzip", "truncated gzip", "truncated zstd"],
)
def test_corrupt_or_truncated_inputs_are_format_errors(damage: str) -> None:
    source = make_tar([Spec("f", data=bytes(range(256)) * 40), Spec("g", data=b"x" * 3000)])
    if damage == "truncated tar":
        data = source[:1500]
    elif damage == "bad checksum":
        data = source[:100] + b"\x01" + source[101:]
    elif damage == "corrupt gzip":
        packed = bytearray(gzip.compress(source))
        packed[len(packed) // 2] ^= 0x55
        data = bytes(packed)
    elif damage == "truncated gzip":
        data = gzip.compress(source)[:-20]
    else:
        data = zstandard.ZstdCompressor().compress(source)[:-20]
    with pytest.raises(FormatError):
        convert(data)


def test_output_is_identical_for_any_worker_count() -> None:
    payload = b"".join(bytes([i % 256]) * 1000 + zlib.compress(bytes(i)) for i in range(600))
    specs = [Spec(f"dir{i % 7}/file{i}", data=payload[i * 997 :][: i * 311]) for i in range(80)]
    specs += [Spec(f"dir{i}/", tarfile.DIRTYPE, mode=0o755) for i in range(7)]
    specs.append(Spec("big", data=payload * 3))
    source = make_tar(specs)
    prioritized = ("dir3/file10", "big", "dir1/file57")
    blobs = {
        workers: convert(source, workers=workers, chunk_size=65536, prioritized_files=prioritized)
        for workers in (1, 2, 4)
    }
    assert blobs[1][0] == blobs[2][0] == blobs[4][0]
    assert blobs[1][1] == blobs[2][1] == blobs[4][1]
    plain = {workers: convert(source, workers=workers)[0] for workers in (1, 3)}
    assert plain[1] == plain[3]


def test_compression_level_sets_the_gzip_header_and_stays_readable() -> None:
    source = example_tar()
    for level, xfl in ((9, 2), (1, 4), (6, 0), (0, 0), (-1, 0), (-2, 0)):
        blob, result = convert(source, compression_level=level)
        members = gzip_members(blob)
        assert all(m.compressed[8] == xfl for m in members[:-1])
        assert sha256(gzip.decompress(blob)) == result.diff_id


@pytest.mark.parametrize(
    "options",
    [
        {"compression_level": 10},
        {"compression_level": -3},
        {"format": "zstdchunked", "compression_level": -8},
        {"format": "zstdchunked", "compression_level": 23},
        {"chunk_size": 0},
        {"workers": 0},
        {"format": "lz4"},
        {"prioritized_files": "a/b"},
    ],
)
def test_bad_options_are_config_errors(options: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        ConvertOptions(**options)  # type: ignore[arg-type]


def test_toc_json_is_valid_json_with_go_escaping() -> None:
    name = 'odd <name> & \u2028 \x01 "q".txt'
    blob, _ = convert(make_tar([Spec(name, data=b"z")]))
    raw = toc_bytes(blob)
    assert b'\\u003cname\\u003e \\u0026 \\u2028 \\u0001 \\"q\\".txt' in raw
    assert json.loads(raw)["entries"][1]["name"] == name


def test_empty_archive_converts_to_landmark_only() -> None:
    blob, result = convert(b"")
    assert [e["name"] for e in gzip_toc(blob)["entries"]] == [".no.prefetch.landmark"]
    assert result.uncompressed_size == len(gzip.decompress(blob))
    assert tar_contents(gzip.decompress(blob)) == {
        ".no.prefetch.landmark": b"\x0f",
        "stargz.index.json": toc_bytes(blob),
    }


def test_large_file_is_streamed_in_chunks() -> None:
    data = bytes(range(256)) * (9 * 4096 + 3)  # a bit more than 9 MiB
    blob, _ = convert(make_tar([Spec("big", data=data)]))
    entries = gzip_toc(blob)["entries"][1:]
    assert [e["type"] for e in entries] == ["reg", "chunk", "chunk"]
    assert entries[0]["digest"] == sha256(data)
    assert entries[2]["chunkOffset"] == 2 * 4 * 1024 * 1024
    assert "chunkSize" not in entries[2]
    assert tar_contents(gzip.decompress(blob))["big"] == data


def test_dst_receives_exactly_the_blob() -> None:
    source = example_tar()
    out = io.BytesIO()
    from esgz.estargz import convert_layer

    result = convert_layer(io.BytesIO(source), out)
    assert result.size == len(out.getvalue())


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_deflate_backend_writes_valid_reproducible_members(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ESGZ_DEFLATE_BACKEND", backend)
    big = b"".join(zlib.compress(bytes([i]) * 5000) + bytes([i]) * 3000 for i in range(256))
    source = make_tar([Spec("small", data=b"s" * 100), Spec("big", data=big * 2)])
    blob, result = convert(source, workers=1, chunk_size=1 << 20)
    assert convert(source, workers=3, chunk_size=1 << 20)[0] == blob
    stream = gzip.decompress(blob)
    assert sha256(stream) == result.diff_id
    assert tar_contents(stream)["big"] == big * 2
    members = {m.offset: m for m in gzip_members(blob)}
    for entry in gzip_toc(blob)["entries"]:
        if "offset" in entry:
            member = members[entry["offset"]]
            start = entry.get("chunkOffset", 0)
            data = (big * 2)[start : start + (1 << 20)] if entry["name"] == "big" else None
            if data is not None:
                assert member.data.startswith(data)
                assert entry["chunkDigest"] == sha256(data)


def test_unknown_deflate_backend_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESGZ_DEFLATE_BACKEND", "pigz")
    with pytest.raises(ConfigError, match="pigz"):
        convert(example_tar())
