"""Malformed blobs: every one must fail with FormatError / VerificationError and a clear message."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esgz.errors import FormatError, VerificationError
from esgz.estargz.reader import is_reusable_layer, open_layer
from tests.fixtures.blobcraft import CraftedBlob, CraftFile, craft_blob, toc_tar
from tests.interop.trees import examples

BIG = bytes(range(256)) * 64  # 16 KiB, several chunks with chunk_size=5000


def _files() -> list[CraftFile]:
    return [
        CraftFile("dir/", "dir", mode=0o755),
        CraftFile("dir/a.txt", data=b"hello\n"),
        CraftFile("dir/big.bin", data=BIG),
        CraftFile("dir/empty", data=b""),
        CraftFile("link", "symlink", link="dir/a.txt", mode=0o777),
        CraftFile(".no.prefetch.landmark", data=b"\x0f", mode=0),
    ]


def _craft(tmp_path: Path, name: str = "blob", **kwargs: Any) -> CraftedBlob:
    kwargs.setdefault("chunk_size", 5000)
    return craft_blob(tmp_path / name, _files(), **kwargs)


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_crafted_baseline_is_valid(tmp_path: Path, compression: str) -> None:
    """The unmodified crafted blob is valid, so the failures below mean something."""
    blob = _craft(tmp_path, compression=compression)
    with open_layer(blob.path) as layer:
        layer.verify(blob.toc_digest, check_data=True)
        assert layer.read_bytes("dir/big.bin") == BIG
    assert is_reusable_layer(blob.path, blob.toc_digest)


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
@pytest.mark.parametrize("keep", [0, 10, 39, -1, -30])
def test_truncated_blob(tmp_path: Path, compression: str, keep: int) -> None:
    blob = _craft(tmp_path, compression=compression)
    size = blob.path.stat().st_size
    _truncate(blob.path, keep if keep >= 0 else size + keep)
    with pytest.raises(FormatError, match="blob"):
        open_layer(blob.path)
    assert not is_reusable_layer(blob.path, blob.toc_digest)


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_chunk_longer_than_its_member(tmp_path: Path, compression: str) -> None:
    """The TOC claims more bytes than the member/frame up to the next one decompresses to."""

    def edit(entries: list[dict[str, Any]]) -> None:
        entry = next(e for e in entries if e["name"] == "dir/a.txt")
        entry["size"] = 100_000

    blob = _craft(tmp_path, compression=compression, edit_toc=edit)
    with open_layer(blob.path) as layer:
        with pytest.raises(FormatError, match="stream ended"):
            layer.read_bytes("dir/a.txt", verify=False)
        with pytest.raises(FormatError):
            layer.verify(blob.toc_digest, check_data=True)


def test_flipped_byte_in_chunk_fails_verification(tmp_path: Path) -> None:
    blob = _craft(tmp_path, level=0)  # stored deflate blocks: the flip hits file bytes
    data = bytearray(blob.path.read_bytes())
    target = blob.data_offsets[2] + 10 + 5 + 100  # gzip header + stored block header + 100
    data[target] ^= 0x55
    blob.path.write_bytes(bytes(data))
    with open_layer(blob.path) as layer:
        layer.verify(blob.toc_digest)  # TOC intact: VerifyTOC alone passes
        assert layer.read_bytes("dir/a.txt") == b"hello\n"
        with pytest.raises(FormatError, match=r"big.bin"):
            layer.read_bytes("dir/big.bin")
        with pytest.raises(FormatError):
            layer.verify(blob.toc_digest, check_data=True)


def test_flipped_byte_in_chunk_detected_without_gzip_crc(tmp_path: Path) -> None:
    """A chunk whose bytes differ from its chunkDigest although the member itself is valid."""
    wrong = "sha256:" + "ab" * 32

    def edit(entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            if entry["name"] == "dir/big.bin" and entry["type"] == "chunk":
                entry["chunkDigest"] = wrong
                break

    blob = _craft(tmp_path, edit_toc=edit)
    with open_layer(blob.path) as layer:
        layer.verify(blob.toc_digest)
        with pytest.raises(VerificationError, match=r"big.bin.*chunk at file offset 5000"):
            layer.read_bytes("dir/big.bin")
        assert layer.read_bytes("dir/big.bin", verify=False) == BIG


def test_whole_file_digest_mismatch(tmp_path: Path) -> None:
    def edit(entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            if entry["name"] == "dir/a.txt":
                entry["digest"] = "sha256:" + "00" * 32

    blob = _craft(tmp_path, edit_toc=edit)
    with open_layer(blob.path) as layer, pytest.raises(VerificationError, match=r"a.txt"):
        layer.read_bytes("dir/a.txt")


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_wrong_toc_digest(tmp_path: Path, compression: str) -> None:
    blob = _craft(tmp_path, compression=compression)
    other = "sha256:" + "0" * 64
    with open_layer(blob.path) as layer:
        with pytest.raises(VerificationError, match=r"TOC digest .* does not match"):
            layer.verify(other)
        assert layer.toc_digest == blob.toc_digest
    assert not is_reusable_layer(blob.path, other)
    assert not is_reusable_layer(blob.path, None)
    assert not is_reusable_layer(blob.path, "sha256:nothex")


def test_corrupt_gzip_toc_member(tmp_path: Path) -> None:
    blob = _craft(tmp_path)
    data = bytearray(blob.path.read_bytes())
    for i in range(blob.toc_offset + 12, blob.toc_offset + 40):
        data[i] ^= 0xFF
    blob.path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match=r"TOC|gzip"):
        open_layer(blob.path)


def test_corrupt_zstd_frame(tmp_path: Path) -> None:
    blob = _craft(tmp_path, compression="zstd")
    data = bytearray(blob.path.read_bytes())
    data[blob.data_offsets[1] + 6] ^= 0xFF  # inside big.bin's first frame
    data[blob.data_offsets[1] + 12] ^= 0xFF
    blob.path.write_bytes(bytes(data))
    with open_layer(blob.path) as layer, pytest.raises(FormatError, match=r"big.bin|zstd"):
        layer.read_bytes("dir/big.bin")


def test_corrupt_zstd_toc(tmp_path: Path) -> None:
    blob = _craft(tmp_path, compression="zstd")
    data = bytearray(blob.path.read_bytes())
    start = blob.toc_offset + 8
    data[start : start + 4] = b"\0\0\0\0"  # destroy the zstd frame magic of the TOC
    blob.path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="zstd"):
        open_layer(blob.path)


@pytest.mark.parametrize(
    ("bad_name", "reason"),
    [
        ("../etc/passwd", "'..' component"),
        ("dir/../../x", "'..' component"),
        ("/etc/passwd", "absolute"),
        ("a\0b", "NUL"),
    ],
)
def test_unsafe_names_rejected(tmp_path: Path, bad_name: str, reason: str) -> None:
    def edit(entries: list[dict[str, Any]]) -> None:
        entries[1]["name"] = bad_name

    blob = _craft(tmp_path, edit_toc=edit)
    with pytest.raises(FormatError, match=reason):
        open_layer(blob.path)


def test_unsafe_hardlink_target_rejected(tmp_path: Path) -> None:
    def edit(entries: list[dict[str, Any]]) -> None:
        entries.insert(2, {"name": "hl", "type": "hardlink", "linkName": "../../etc/shadow"})

    blob = _craft(tmp_path, edit_toc=edit)
    with pytest.raises(FormatError, match="hardlink target"):
        open_layer(blob.path)


def test_missing_hardlink_target(tmp_path: Path) -> None:
    def edit(entries: list[dict[str, Any]]) -> None:
        entries.append({"name": "hl", "type": "hardlink", "linkName": "nowhere"})

    blob = _craft(tmp_path, edit_toc=edit)
    with pytest.raises(FormatError, match="hardlink but the linkname 'nowhere' isn't found"):
        open_layer(blob.path)


def test_hardlink_cycle(tmp_path: Path) -> None:
    def edit(entries: list[dict[str, Any]]) -> None:
        entries.append({"name": "h1", "type": "hardlink", "linkName": "h2"})
        entries.append({"name": "h2", "type": "hardlink", "linkName": "h1"})

    blob = _craft(tmp_path, edit_toc=edit)
    with pytest.raises(FormatError, match="cycle"):
        open_layer(blob.path)


def test_huge_toc_pax_header(tmp_path: Path) -> None:
    def member(json_bytes: bytes) -> bytes:
        return toc_tar(json_bytes, pax={"comment": "x" * (2 * 1024 * 1024)})

    blob = _craft(tmp_path, toc_member=member)
    with pytest.raises(FormatError, match=r"extension header of .* bytes is too large"):
        open_layer(blob.path)


def test_toc_json_larger_than_limit(tmp_path: Path) -> None:
    blob = _craft(tmp_path)
    with pytest.raises(FormatError, match="exceeds the limit"):
        open_layer(blob.path, max_toc_size=1000)
    zblob = _craft(tmp_path, "zblob", compression="zstd")
    with pytest.raises(FormatError, match="exceeds the limit"):
        open_layer(zblob.path, max_toc_size=1000)


def test_huge_number_in_toc(tmp_path: Path) -> None:
    def edit(entries: list[dict[str, Any]]) -> None:
        entries[1]["size"] = 1 << 70

    blob = _craft(tmp_path, edit_toc=edit)
    with pytest.raises(FormatError, match="out of range"):
        open_layer(blob.path)


@pytest.mark.parametrize(
    ("toc_json", "match"),
    [
        (b"{", "malformed"),
        (b"[]", "not an object"),
        (b'{"version": 1, "entries": {}}', "array"),
        (b'{"version": 1, "entries": [{"name": 5, "type": "reg"}]}', "string"),
        (b'{"version": 1, "entries": [{"name": "a", "type": "socket"}]}', "unknown type"),
        (b'{"version": 1, "entries": [{"name": "a", "type": "reg", "size": -1}]}', "negative"),
    ],
)
def test_malformed_toc_json(tmp_path: Path, toc_json: bytes, match: str) -> None:
    blob = _craft(tmp_path, toc_json=toc_json)
    with pytest.raises(FormatError, match=match):
        open_layer(blob.path)


def test_toc_entry_with_wrong_tar_name(tmp_path: Path) -> None:
    blob = _craft(tmp_path, toc_member=lambda j: toc_tar(j, name="./stargz.index.json"))
    with pytest.raises(FormatError, match=r"expected 'stargz.index.json'"):
        open_layer(blob.path)


def test_offset_out_of_range(tmp_path: Path) -> None:
    def edit(entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            if entry["name"] == ".no.prefetch.landmark":
                entry["offset"] = 10**9

    blob = _craft(tmp_path, edit_toc=edit)
    with pytest.raises(FormatError, match="outside the data region"):
        open_layer(blob.path)


def test_negative_offset(tmp_path: Path) -> None:
    def edit(entries: list[dict[str, Any]]) -> None:
        entries[1]["offset"] = -5

    blob = _craft(tmp_path, edit_toc=edit)
    with pytest.raises(FormatError, match="negative offset"):
        open_layer(blob.path)


def test_toc_order_not_blob_order(tmp_path: Path) -> None:
    def edit(entries: list[dict[str, Any]]) -> None:
        a = next(i for i, e in enumerate(entries) if e["name"] == "dir/a.txt")
        landmark = next(i for i, e in enumerate(entries) if e["name"] == ".no.prefetch.landmark")
        entries[a], entries[landmark] = entries[landmark], entries[a]

    blob = _craft(tmp_path, edit_toc=edit)
    with pytest.raises(FormatError, match="TOC order is not blob order"):
        open_layer(blob.path)


def test_chunk_not_following_its_file(tmp_path: Path) -> None:
    def edit(entries: list[dict[str, Any]]) -> None:
        chunk = next(i for i, e in enumerate(entries) if e["type"] == "chunk")
        entries.insert(chunk, {"name": "dir/sub", "type": "dir"})

    blob = _craft(tmp_path, edit_toc=edit)
    with pytest.raises(FormatError, match="chunk that does not follow"):
        open_layer(blob.path)


def test_chunks_not_covering_the_file(tmp_path: Path) -> None:
    def edit(entries: list[dict[str, Any]]) -> None:
        chunks = [i for i, e in enumerate(entries) if e["type"] == "chunk"]
        del entries[chunks[0]]

    blob = _craft(tmp_path, edit_toc=edit)
    with pytest.raises(FormatError, match=r"chunk of 'dir/big.bin' starts at"):
        open_layer(blob.path)


def test_missing_chunk_digest_fails_verify_toc(tmp_path: Path) -> None:
    def edit(entries: list[dict[str, Any]]) -> None:
        next(e for e in entries if e["type"] == "chunk").pop("chunkDigest")

    blob = _craft(tmp_path, edit_toc=edit)
    with open_layer(blob.path) as layer:
        with pytest.raises(VerificationError, match="some chunkDigest not found"):
            layer.verify(blob.toc_digest)
        with pytest.raises(VerificationError):
            layer.read_bytes("dir/a.txt")
    assert not is_reusable_layer(blob.path, blob.toc_digest)


def test_reg_digests_used_when_no_chunks(tmp_path: Path) -> None:
    """Go's fallback: no chunk entries and all regs have digests → reg digests verify."""

    def edit(entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            entry.pop("chunkDigest", None)

    blob = _craft(tmp_path, chunk_size=0, edit_toc=edit)
    with open_layer(blob.path) as layer:
        layer.verify(blob.toc_digest, check_data=True)
    assert is_reusable_layer(blob.path, blob.toc_digest)


def test_offset_found_twice(tmp_path: Path) -> None:
    """An empty file claiming a data offset is checked against registered offsets (Go)."""

    def edit(entries: list[dict[str, Any]]) -> None:
        a = next(e for e in entries if e["name"] == "dir/a.txt")
        empty = next(e for e in entries if e["name"] == "dir/empty")
        empty["offset"] = a["offset"]

    blob = _craft(tmp_path, edit_toc=edit)
    with open_layer(blob.path) as layer, pytest.raises(VerificationError, match="found twice"):
        layer.verify(blob.toc_digest)


@pytest.mark.parametrize("bad", ["sha256:XYZ", "md5:" + "0" * 32, "sha256:" + "A" * 64, "nocolon"])
def test_unparseable_chunk_digest(tmp_path: Path, bad: str) -> None:
    def edit(entries: list[dict[str, Any]]) -> None:
        next(e for e in entries if e["name"] == "dir/a.txt")["chunkDigest"] = bad

    blob = _craft(tmp_path, edit_toc=edit)
    with open_layer(blob.path) as layer, pytest.raises(VerificationError, match="parse"):
        layer.verify(blob.toc_digest)


@pytest.mark.parametrize(
    "content",
    [b"", b"\x1f\x8b", os.urandom(4096), gzip.compress(b"just a gzip file" * 100)],
    ids=["empty", "tiny", "random", "plain-gzip"],
)
def test_not_an_estargz(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "blob"
    path.write_bytes(content)
    with pytest.raises(FormatError, match="not an eStargz or zstd:chunked blob"):
        open_layer(path)
    assert not is_reusable_layer(path, "sha256:" + "0" * 64)


def test_plain_tar_gz_layer(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("a")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"a"))
    path = tmp_path / "layer.tar.gz"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(FormatError, match="no footer"):
        open_layer(path)


def test_footer_pointing_past_the_blob(tmp_path: Path) -> None:
    from esgz.estargz.footer import gzip_footer

    blob = _craft(tmp_path)
    data = blob.path.read_bytes()
    blob.path.write_bytes(data[:-51] + gzip_footer(len(data) + 100))
    with pytest.raises(FormatError, match="not inside the blob"):
        open_layer(blob.path)


def test_extract_refuses_symlink_escape(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    files = [
        CraftFile("evil", "symlink", link=str(outside)),
        CraftFile("evil/pwned", data=b"owned"),
        CraftFile(".no.prefetch.landmark", data=b"\x0f", mode=0),
    ]
    blob = craft_blob(tmp_path / "blob", files)
    dest = tmp_path / "dest"
    with open_layer(blob.path) as layer, pytest.raises(FormatError, match="symlink"):
        layer.extract(dest)
    assert list(outside.iterdir()) == []
    assert (dest / "evil").is_symlink()


def test_extract_refuses_dotdot_symlink_chain(tmp_path: Path) -> None:
    files = [
        CraftFile("a/", "dir", mode=0o755),
        CraftFile("a/up", "symlink", link="../.."),
        CraftFile("a/up/escaped", data=b"x"),
    ]
    blob = craft_blob(tmp_path / "blob", files)
    with open_layer(blob.path) as layer, pytest.raises(FormatError, match="symlink"):
        layer.extract(tmp_path / "dest")
    assert not (tmp_path / "escaped").exists()


def _exercise(path: Path, toc_digest: str, dest: Path) -> None:
    with open_layer(path) as layer:
        layer.verify(toc_digest, check_data=True)
        for entry in layer.entries():
            layer.lookup(entry.name)
        layer.uncompressed_digest()
        layer.extract(dest)


@pytest.fixture(scope="module")
def fuzz_seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CraftedBlob]:
    base = tmp_path_factory.mktemp("fuzz")
    return {
        compression: craft_blob(
            base / compression, _files(), chunk_size=5000, compression=compression
        )
        for compression in ("gzip", "zstd")
    }


@settings(max_examples=examples(150), deadline=None)
@given(
    compression=st.sampled_from(["gzip", "zstd"]),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), max_size=4),
    cut=st.one_of(st.none(), st.floats(0, 1)),
    tail_focus=st.booleans(),
)
def test_mutated_blobs_only_raise_format_errors(
    fuzz_seeds: dict[str, CraftedBlob],
    compression: str,
    flips: list[tuple[float, int]],
    cut: float | None,
    tail_focus: bool,
) -> None:
    """Random byte flips and truncations: the reader either works or raises FormatError."""
    seed = fuzz_seeds[compression]
    data = bytearray(seed.path.read_bytes())
    # Half of the flips land in the TOC and footer, where parsing is most involved.
    start = seed.toc_offset if tail_focus else 0
    for where, mask in flips:
        data[start + int(where * (len(data) - start))] ^= mask
    if cut is not None:
        del data[int(cut * len(data)) :]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "blob"
        path.write_bytes(bytes(data))
        with contextlib.suppress(FormatError):
            _exercise(path, seed.toc_digest, Path(tmp) / "out")


_JSON_TOKENS = [b"-1", b"0", b"1e3", b"null", b"true", b'"x"', b"[]", b"{}", b'"../a"', b'"/"']


@settings(max_examples=examples(150), deadline=None)
@given(
    compression=st.sampled_from(["gzip", "zstd"]),
    edits=st.lists(
        st.tuples(
            st.floats(0, 1, exclude_max=True), st.integers(0, 4), st.sampled_from(_JSON_TOKENS)
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_mutated_toc_json_only_raises_format_errors(
    fuzz_seeds: dict[str, CraftedBlob],
    compression: str,
    edits: list[tuple[float, int, bytes]],
) -> None:
    """Edits inside the TOC JSON of an otherwise consistent blob (TOC digest recomputed)."""
    seed = fuzz_seeds[compression]
    text = bytearray(seed.toc_json)
    for where, length, token in edits:
        position = int(where * len(text))
        text[position : position + length] = token
    with tempfile.TemporaryDirectory() as tmp:
        blob = craft_blob(
            Path(tmp) / "blob",
            _files(),
            chunk_size=5000,
            compression=compression,
            toc_json=bytes(text),
        )
        with contextlib.suppress(FormatError):
            _exercise(blob.path, blob.toc_digest, Path(tmp) / "out")
