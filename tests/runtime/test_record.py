"""Record files (checked against the reference recorder package) and prefetch lists."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from esgz.errors import FormatError
from esgz.runtime.record import (
    RecordEntry,
    encode_record,
    expand_prefetch_list,
    layer_lists_from_records,
    parse_prefetch_list,
    parse_records,
    prefetch_list_by_layer,
    read_prefetch_list,
    read_record_file,
    record_paths,
    write_record_file,
)
from esgz.runtime.unpack import unpack_layer_sync
from tests.fixtures.cache import cache_dir
from tests.fixtures.images import SampleImage
from tests.runtime.conftest import layer_sources

GO_SOURCE = Path(__file__).parent / "go" / "recordenc" / "main.go"
GOPATH = Path("/usr/share/gocode")
RECORDER_PACKAGE = GOPATH / "src/github.com/containerd/stargz-snapshotter/recorder/recorder.go"

ENTRIES = [
    RecordEntry("bin/busybox", "sha256:" + "a" * 64, 0),
    RecordEntry("etc/<weird> & name", "sha256:" + "a" * 64, 1),
    RecordEntry('tab\there\nnewline\x01\x08\x0c\x1f\u2028\u2029"quote\\', None, 2),
    RecordEntry("unicode/é/日本/🙂", "", None),
    RecordEntry("no-layer", "sha256:" + "b" * 64, None),
]


@pytest.fixture(scope="session")
def go_record_encoder() -> Path:
    """The reference recorder package wrapped in a tiny Go program (built once, cached)."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("needs Go: `go` is not on PATH (apt-get install golang-go)")
    if not RECORDER_PACKAGE.is_file():
        pytest.skip(
            "needs the reference recorder sources "
            "(apt-get install golang-github-containerd-stargz-snapshotter-dev)"
        )
    key = hashlib.sha256(GO_SOURCE.read_bytes() + RECORDER_PACKAGE.read_bytes()).hexdigest()
    binary = cache_dir("runtime-go") / f"recordenc-{key[:16]}"
    if not binary.is_file():
        env = {
            **os.environ,
            "GO111MODULE": "off",
            "GOPATH": str(GOPATH),
            "GOCACHE": str(cache_dir("runtime-go", "gocache")),
        }
        temp = binary.with_suffix(f".tmp{os.getpid()}")
        subprocess.run([go, "build", "-o", str(temp), str(GO_SOURCE)], env=env, check=True)
        temp.rename(binary)
    return binary


def go_encode(binary: Path, entries: list[RecordEntry]) -> bytes:
    """What the reference recorder writes for ``entries``."""
    feed = "".join(
        json.dumps(
            {
                "rawPath": base64.b64encode(os.fsencode(e.path)).decode(),
                **({"manifestDigest": e.manifest_digest} if e.manifest_digest else {}),
                **({"layerIndex": e.layer_index} if e.layer_index is not None else {}),
            }
        )
        for e in entries
    )
    return subprocess.run([binary], input=feed.encode(), capture_output=True, check=True).stdout


def test_encoding_matches_the_reference_recorder(go_record_encoder: Path) -> None:
    expected = go_encode(go_record_encoder, ENTRIES)
    assert "".join(encode_record(e) for e in ENTRIES).encode() == expected


def test_written_file_matches_the_reference_and_reads_back(
    go_record_encoder: Path, tmp_path: Path
) -> None:
    path = tmp_path / "out" / "record.json"
    write_record_file(path, ENTRIES)
    assert path.read_bytes() == go_encode(go_record_encoder, ENTRIES)
    assert read_record_file(path) == [
        RecordEntry(e.path, e.manifest_digest or None, e.layer_index) for e in ENTRIES
    ]
    assert os.listdir(path.parent) == ["record.json"]  # no temp file left


def test_invalid_utf8_becomes_escaped_replacement_character() -> None:
    name = b"bad-\xff-name".decode("utf-8", "surrogateescape")
    assert encode_record(RecordEntry(name)) == '{"path":"bad-\\ufffd-name"}\n'


def test_invalid_utf8_matches_the_reference_recorder(go_record_encoder: Path) -> None:
    """Go writes the text ``\\ufffd`` for each byte that is not UTF-8, U+FFFD itself as is."""
    entries = [
        RecordEntry(os.fsdecode(b"bad-\xff-name"), None, 0),
        RecordEntry(os.fsdecode(b"cut-\xe2\x82-euro"), None, 1),
        RecordEntry(os.fsdecode(b"lone-\x80\x80<&>"), "sha256:" + "c" * 64, 2),
        RecordEntry("kept-\ufffd-as-is", None, 3),
        RecordEntry("joined-" + os.fsdecode(b"\xe2") + os.fsdecode(b"\x82\xac"), None, 4),
    ]
    expected = go_encode(go_record_encoder, entries)
    assert "".join(encode_record(e) for e in entries).encode() == expected


def test_reader_accepts_any_whitespace_between_objects() -> None:
    text = '{"path":"a","layerIndex":0}  {"path":"b"}\n\n\t{"path":"a","manifestDigest":"d"}'
    entries = parse_records(text)
    assert entries == [RecordEntry("a", None, 0), RecordEntry("b"), RecordEntry("a", "d")]
    assert record_paths(entries) == ["a", "b"]


@pytest.mark.parametrize(
    "text", ['{"path":1}', '["path"]', '{"path":"a"} {', '{"path":"a","layerIndex":"0"}']
)
def test_reader_rejects_what_is_not_a_record(text: str) -> None:
    with pytest.raises(FormatError):
        parse_records(text)


def test_prefetch_list_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "list"
    path.write_text("  # comment\n\n  /bin/busybox  \netc/passwd\n#another\n")
    assert read_prefetch_list(path) == ["/bin/busybox", "etc/passwd"]
    path.write_text("# only comments\n\n")
    with caplog.at_level("WARNING"):
        assert read_prefetch_list(path) == []
    assert "prefetch list is empty" in caplog.text


def test_prefetch_globs_against_image_entries(
    busybox_image: SampleImage, caplog: pytest.LogCaptureFixture
) -> None:
    names = [name for layer in busybox_image.layers for name in layer.files]
    lines = parse_prefetch_list(
        "/data/small.txt\nbin/[cl]?\nopt/**\n/etc/pass*\ndata/small.txt\nnothing/*.here\n"
    )
    with caplog.at_level("WARNING"):
        paths = expand_prefetch_list(lines, names)
    applets = sorted(n for n in names if n.startswith("bin/") and len(n) == 6 and n[4] in "cl")
    opt = sorted({n for n in names if n == "opt" or n.startswith("opt/")})
    assert paths == ["data/small.txt", *applets, *opt, "etc/passwd"]
    assert "bin/ls" in applets
    assert "glob pattern 'nothing/*.here' matched no files" in caplog.text
    # Deterministic: the same result whatever order the entry names come in.
    assert expand_prefetch_list(lines, reversed(names)) == paths


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("**/new.txt", "opt/replaced/new.txt", True),
        ("**/new.txt", "new.txt", True),
        ("opt/**/new.txt", "opt/new.txt", True),
        ("opt/*/new.txt", "opt/replaced/new.txt", True),
        ("opt/*", "opt/replaced/new.txt", False),
        ("bin/?", "bin/ls", False),
        ("bin/[!a-k]s", "bin/ls", True),
        ("bin/[a-k]s", "bin/ls", False),
        ("*", "bin/ls", False),
        ("bin/[[]s", "bin/[s", True),
        ("bin/[!]]s", "bin/ls", True),
        ("bin/[\\Z]s", "bin/Zs", True),
        ("bin/[.-z]s", "bin/ls", True),
        ("bin/[z-a]s", "bin/ls", False),  # a reversed range matches nothing, as in Go
        ("bin/l[s", "bin/l[s", True),  # a '[' without ']' is itself
        ("**", "", True),
        ("opt/**", "opt", True),
        ("opt/**", "opt/a/b", True),
        ("a/**/b/**/c", "a/x/b/y/z/c", True),
        ("a/**/b/**/c", "a/x/y/z/c", False),
        ("b*n/l**s", "bin/ls", True),
    ],
)
def test_glob_semantics(pattern: str, name: str, matches: bool) -> None:
    assert (expand_prefetch_list([pattern], [name]) == [name]) is matches


def test_glob_matching_does_not_backtrack() -> None:
    """Patterns a regex translation takes exponential time on (found by fuzzing)."""
    stars = "*" * 120 + "/s\xff"
    deep = "/".join(["d"] * 2000)
    names = ["s=h", "a" * 5000, deep, f"{deep}/x"]
    patterns = ["/**/s=h", f"**/{stars}", "*a" * 60 + "b", "**/" * 50 + "x"]
    assert expand_prefetch_list(patterns, names) == ["s=h", f"{deep}/x"]


def test_layer_lists_from_records() -> None:
    manifest = "sha256:" + "a" * 64
    entries = [
        RecordEntry("bin/busybox", manifest, 0),
        RecordEntry("/data/small.txt", manifest, 1),
        RecordEntry("bin/busybox", manifest, 0),  # duplicate (0.12 writes every event)
        RecordEntry("other/manifest", "sha256:" + "b" * 64, 0),
        RecordEntry("out/of/range", manifest, 2),
        RecordEntry("no/index", manifest, None),
        RecordEntry("etc/passwd", None, 0),  # no digest: kept
    ]
    assert layer_lists_from_records(entries, manifest, 2) == [
        ["bin/busybox", "etc/passwd"],
        ["data/small.txt"],
    ]


def test_prefetch_list_by_layer(busybox_image: SampleImage, tmp_path: Path) -> None:
    layers = [unpack_layer_sync(s, tmp_path / "cache").index for s in layer_sources(busybox_image)]
    lines = ["data/small.txt", "/etc/motd", "opt/replaced/*", "bin/busybox", "created/later"]
    # etc/motd is deleted by layer 1, old*.txt hidden by the opaque dir: dropped.
    assert prefetch_list_by_layer(lines, layers) == [
        ["bin/busybox"],
        ["data/small.txt", "opt/replaced/new.txt"],
    ]
