"""LayerReader on hand-built blobs: lookups, TOC semantics, reading paths, formats, extraction."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest
import zstandard

import esgz.estargz.reader as reader_module
from esgz.errors import FormatError, VerificationError
from esgz.estargz.ordering import clean_name
from esgz.estargz.reader import (
    LayerReader,
    is_reusable_layer,
    is_reusable_layer_async,
    open_layer,
    sniff_layer_format,
)
from tests.fixtures.blobcraft import CraftFile, craft_blob
from tests.interop.sourcetar import pattern

DATA = pattern(20_000, 7)


def _files() -> list[CraftFile]:
    return [
        CraftFile("./", "dir", mode=0o755),
        CraftFile("./usr/bin/", "dir", mode=0o755, uid=0),
        CraftFile("./usr/bin/prog", data=DATA, mode=0o755, uid=1000, gid=100),
        CraftFile("./usr/bin/again", data=b"again", uid=1000, gid=100),
        CraftFile("etc/passwd", data=b"root:x:0:0\n", xattrs={"user.k": "v"}),
        CraftFile("etc/link", "hardlink", link="./usr/bin/prog"),
        CraftFile("etc/link2", "hardlink", link="etc/link"),
        CraftFile("etc/sym", "symlink", link="../usr/bin/prog", mode=0o777),
        CraftFile(".prefetch.landmark", data=b"\x0f", mode=0),
        CraftFile("var/empty", data=b""),
    ]


@pytest.fixture
def layer(tmp_path: Path) -> Any:
    blob = craft_blob(tmp_path / "blob", _files(), chunk_size=6000)
    with open_layer(blob.path) as opened:
        yield opened


@pytest.mark.parametrize(
    ("raw", "clean"),
    [("./a/", "a"), ("/a//b", "a/b"), ("./", ""), ("/", ""), ("a/./b/", "a/b"), ("//x", "x")],
)
def test_clean_name(raw: str, clean: str) -> None:
    assert clean_name(raw) == clean


ENTRY_NAMES = [
    "",
    "usr/bin",
    "usr/bin/prog",
    "usr/bin/again",
    "etc/passwd",
    "etc/link",
    "etc/link2",
    "etc/sym",
    ".prefetch.landmark",
    "var/empty",
]
"""The cleaned names of the reader fixture layer, in TOC order."""


def test_entries_lookup_and_tree(layer: LayerReader) -> None:
    names = [e.name for e in layer.entries()]
    assert names == ENTRY_NAMES
    for spelling in ("usr/bin/prog", "/usr/bin/prog", "./usr/bin/prog", "usr//bin/prog"):
        entry = layer.lookup(spelling)
        assert entry is not None
        assert entry.name == "usr/bin/prog"
    assert layer.lookup("nope") is None
    # Implicit parents exist with mode 0755, explicit ones keep theirs.
    usr = layer.lookup("usr")
    assert usr is not None
    assert (usr.type, usr.mode, usr.implicit) == ("dir", 0o755, True)
    etc = layer.lookup("etc")
    assert etc is not None
    assert etc.implicit
    assert layer.listdir() == [".prefetch.landmark", "etc", "usr", "var"]
    assert layer.listdir("/etc") == ["link", "link2", "passwd", "sym"]
    # Hardlink chains resolve to the file; without following they stay links.
    resolved = layer.lookup("etc/link2")
    assert resolved is not None
    assert resolved.name == "usr/bin/prog"
    link = layer.lookup("etc/link2", follow_hardlinks=False)
    assert link is not None
    assert (link.type, link.link_name) == ("hardlink", "etc/link")
    symlink = layer.lookup("etc/sym")
    assert symlink is not None
    assert symlink.link_name == "../usr/bin/prog"


def test_chunks_and_reading(layer: LayerReader) -> None:
    prog = layer.lookup("usr/bin/prog")
    assert prog is not None
    assert [(c.chunk_offset, c.size) for c in prog.chunks] == [
        (0, 6000),
        (6000, 6000),
        (12000, 6000),
        (18000, 2000),
    ]
    offsets = [c.offset for c in prog.chunks]
    assert offsets == sorted(offsets)
    assert all(c.end > c.offset for c in prog.chunks)
    assert layer.read_bytes("usr/bin/prog") == DATA
    assert layer.read_bytes("etc/link2") == DATA
    assert b"".join(layer.read_entry(prog)) == DATA
    assert layer.read_bytes("var/empty") == b""
    with pytest.raises(FileNotFoundError):
        layer.read_bytes("missing")
    with pytest.raises(ValueError, match="not a regular file"):
        layer.read_bytes("etc/sym")


def test_owner_names_are_filled_from_earlier_entries(tmp_path: Path) -> None:
    def edit(entries: list[dict[str, Any]]) -> None:
        entries[0].update(uid=5, gid=6, userName="five", groupName="six")
        entries[1].update(uid=5, gid=6)
        entries[2].update(uid=6, gid=5)

    files = [CraftFile("a", data=b"a"), CraftFile("b", data=b"b"), CraftFile("c", data=b"c")]
    blob = craft_blob(tmp_path / "blob", files, edit_toc=edit)
    with open_layer(blob.path) as layer:
        b = layer.lookup("b")
        c = layer.lookup("c")
        assert b is not None
        assert c is not None
        assert (b.user_name, b.group_name) == ("five", "six")
        # Group names come from the group map (Go 0.12.0 wrongly used the user map).
        assert (c.user_name, c.group_name) == ("", "")


def test_prefetch_landmark_and_prioritized(layer: LayerReader, tmp_path: Path) -> None:
    landmark = layer.prefetch_landmark()
    assert landmark is not None
    assert landmark.name == ".prefetch.landmark"
    # Everything before the landmark is prioritized.
    assert layer.prioritized_names() == ENTRY_NAMES[: ENTRY_NAMES.index(".prefetch.landmark")]
    assert not layer.has_no_prefetch_landmark
    plain = craft_blob(tmp_path / "plain", [CraftFile("a", data=b"a")])
    with open_layer(plain.path) as no_landmark:
        assert no_landmark.prefetch_landmark() is None
        assert no_landmark.prioritized_names() == []
    none = craft_blob(
        tmp_path / "none",
        [CraftFile(".no.prefetch.landmark", data=b"\x0f", mode=0), CraftFile("a", data=b"a")],
    )
    with open_layer(none.path) as no_prefetch:
        assert no_prefetch.has_no_prefetch_landmark
        assert no_prefetch.prioritized_names() == []


def test_duplicate_names_last_one_wins(tmp_path: Path) -> None:
    files = [CraftFile("a", data=b"first"), CraftFile("a", data=b"second!")]
    blob = craft_blob(tmp_path / "blob", files)
    with open_layer(blob.path) as layer:
        assert [e.name for e in layer.entries()] == ["a", "a"]
        assert layer.read_bytes("a") == b"second!"


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_inner_offset_blobs_read_but_fail_verify_toc(tmp_path: Path, compression: str) -> None:
    """HEAD's min-chunk-size layout: readable, but VerifyTOC sees an offset twice (§5.4)."""
    blob = craft_blob(
        tmp_path / "blob", _files(), chunk_size=6000, compression=compression, share_members=True
    )
    with open_layer(blob.path) as layer:
        prog = layer.lookup("usr/bin/prog")
        assert prog is not None
        assert all(c.inner_offset > 0 for c in prog.chunks)
        assert layer.read_bytes("usr/bin/prog", verify=False) == DATA
        assert layer.read_bytes("usr/bin/again", verify=False) == b"again"
        with pytest.raises(VerificationError, match="found twice"):
            layer.verify(blob.toc_digest)
        with pytest.raises(VerificationError, match="found twice"):
            layer.read_bytes("usr/bin/prog")
    assert not is_reusable_layer(blob.path, blob.toc_digest)


def _legacy_footer(toc_offset: int) -> bytes:
    """FORMAT.md §9: the 47-byte CRFS stargz footer."""
    extra = b"%016xSTARGZ" % toc_offset
    header = b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff" + len(extra).to_bytes(2, "little")
    return header + extra + b"\x01\x00\x00\xff\xff" + bytes(8)


def test_legacy_stargz_footer(tmp_path: Path) -> None:
    blob = craft_blob(tmp_path / "blob", _files(), chunk_size=6000)
    data = blob.path.read_bytes()[:-51] + _legacy_footer(blob.toc_offset)
    blob.path.write_bytes(data)
    assert sniff_layer_format(blob.path) == "stargz-legacy"
    with open_layer(blob.path) as layer:
        assert layer.format == "stargz-legacy"
        layer.verify(blob.toc_digest, check_data=True)
        assert layer.read_bytes("usr/bin/prog") == DATA
    assert is_reusable_layer(blob.path, blob.toc_digest)


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_formats_sniff_and_diff_id(tmp_path: Path, compression: str) -> None:
    blob = craft_blob(tmp_path / "blob", _files(), chunk_size=6000, compression=compression)
    expected = "estargz" if compression == "gzip" else "zstdchunked"
    assert sniff_layer_format(blob.path) == expected
    with open_layer(blob.path) as layer:
        assert layer.format == expected
        assert layer.compression == compression
        diff_id, size = layer.uncompressed_digest()
    # The uncompressed stream is a tar whose members are the TOC entries (+ TOC for gzip).
    raw = blob.path.read_bytes()
    if compression == "gzip":
        plain = gzip.decompress(raw)
    else:
        plain = (
            zstandard.ZstdDecompressor()
            .stream_reader(io.BytesIO(raw), read_across_frames=True)
            .read()
        )
    assert diff_id == "sha256:" + hashlib.sha256(plain).hexdigest()
    assert size == len(plain)
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        names = tar.getnames()
    assert names[: len(_files())] == [f.name.rstrip("/") or "." for f in _files()]


def test_sniff_plain_files(tmp_path: Path) -> None:
    path = tmp_path / "plain"
    path.write_bytes(b"not a layer" * 10)
    assert sniff_layer_format(path) is None
    assert sniff_layer_format(tmp_path / "missing") is None


def test_reading_from_a_file_object_without_descriptor(tmp_path: Path) -> None:
    blob = craft_blob(tmp_path / "blob", _files(), chunk_size=6000)
    source = io.BytesIO(blob.path.read_bytes())
    with open_layer(source) as layer:
        layer.verify(blob.toc_digest, check_data=True)
        assert layer.read_bytes("etc/link") == DATA


def test_large_chunks_stream_and_fail_at_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks above the buffering limit are handed out as read and verified at their end."""
    monkeypatch.setattr(reader_module, "VERIFY_BEFORE_YIELD_LIMIT", 1000)

    def edit(entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            if entry["name"] == "./usr/bin/prog":
                entry["chunkDigest"] = "sha256:" + "1" * 64
                entry["digest"] = "sha256:" + "1" * 64

    good = craft_blob(tmp_path / "good", _files())
    with open_layer(good.path) as layer:
        assert layer.read_bytes("usr/bin/prog") == DATA
    bad = craft_blob(tmp_path / "bad", _files(), edit_toc=edit)
    with open_layer(bad.path) as layer:
        received = bytearray()

        def consume() -> None:
            for piece in layer.read_file("usr/bin/prog"):
                received.extend(piece)

        with pytest.raises(VerificationError, match="does not match its digest"):
            consume()
        assert bytes(received) == DATA


@pytest.mark.anyio
async def test_reuse_check_runs_off_the_event_loop(tmp_path: Path) -> None:
    blob = craft_blob(tmp_path / "blob", _files(), chunk_size=6000)
    assert await is_reusable_layer_async(blob.path, blob.toc_digest)
    assert not await is_reusable_layer_async(blob.path, "sha256:" + "2" * 64)


def test_extract_tree(tmp_path: Path) -> None:
    blob = craft_blob(tmp_path / "blob", _files(), chunk_size=6000)
    dest = tmp_path / "out"
    with open_layer(blob.path) as layer:
        layer.extract(dest)
    assert (dest / "usr/bin/prog").read_bytes() == DATA
    assert stat.S_IMODE((dest / "usr/bin/prog").stat().st_mode) == 0o755
    assert (dest / "etc/link").stat().st_ino == (dest / "usr/bin/prog").stat().st_ino
    assert (dest / "etc/link2").stat().st_ino == (dest / "usr/bin/prog").stat().st_ino
    assert os.readlink(dest / "etc/sym") == "../usr/bin/prog"
    assert os.getxattr(dest / "etc/passwd", "user.k") == b"v"
    assert (dest / "var/empty").read_bytes() == b""
    assert not (dest / ".prefetch.landmark").exists()
    assert int((dest / "etc/passwd").stat().st_mtime) == 1_700_000_000
    # A second extraction over the first replaces files and keeps directories.
    with open_layer(blob.path) as layer:
        layer.extract(dest)
    assert (dest / "usr/bin/prog").read_bytes() == DATA


def test_open_errors_name_the_blob(tmp_path: Path) -> None:
    missing = tmp_path / "missing.blob"
    with pytest.raises(FormatError, match=r"missing\.blob"):
        open_layer(missing)
    garbage = tmp_path / "garbage.blob"
    garbage.write_bytes(b"\0" * 100)
    with pytest.raises(FormatError, match=r"garbage\.blob: not an eStargz"):
        open_layer(garbage)


def test_external_toc_layers_are_not_readable_alone(tmp_path: Path) -> None:
    """FORMAT.md §12: data members + 46-byte footer, no TOC member; never reused (§14)."""
    blob = craft_blob(tmp_path / "blob", _files(), chunk_size=6000)
    data = blob.path.read_bytes()[: blob.toc_offset]
    footer = bytes.fromhex(
        "1f8b08040000000000ff15005347110053544152475a45585445524e414c544f43010000ffff0000000000000000"
    )
    blob.path.write_bytes(data + footer)
    assert sniff_layer_format(blob.path) is None
    with pytest.raises(FormatError, match="no footer"):
        open_layer(blob.path)
    assert not is_reusable_layer(blob.path, blob.toc_digest)
