"""TOC model and its Go-compatible JSON encoding/decoding."""

from __future__ import annotations

import hashlib

import pytest

from esgz.errors import FormatError
from esgz.estargz.constants import EMPTY_DIGEST, LANDMARK_DIGEST
from esgz.estargz.toc import TOC, TOCEntry, format_modtime, go_json_string
from tests.interop.spec_example import example_toc_json

# The worked example of FORMAT.md §15 with the offsets FORMAT.md prints (HEAD Go).
EXAMPLE_JSON = example_toc_json(b_offset=123, landmark_offset=227, a_offset=330)
EXAMPLE_TOC_DIGEST = "sha256:643a0ae6d9b564d70a295b87d1723b23a1c062696922c950d860d28062047631"


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def example_entries() -> list[TOCEntry]:
    mtime = format_modtime(1704164645)
    b_digest = _sha256(b"0123456789AB")
    a_digest = _sha256(b"hello\n")
    return [
        TOCEntry("dir/", "dir", modtime=mtime, mode=0o755, user_name="root", group_name="root"),
        TOCEntry(
            "dir/b.bin",
            "reg",
            size=12,
            modtime=mtime,
            mode=0o755,
            offset=123,
            digest=b_digest,
            chunk_digest=b_digest,
        ),
        TOCEntry(
            ".prefetch.landmark",
            "reg",
            size=1,
            offset=227,
            digest=LANDMARK_DIGEST,
            chunk_digest=LANDMARK_DIGEST,
        ),
        TOCEntry(
            "a.txt",
            "reg",
            size=6,
            modtime=mtime,
            mode=0o644,
            offset=330,
            digest=a_digest,
            chunk_digest=a_digest,
        ),
        TOCEntry("dir/c.txt", "reg", modtime=mtime, mode=0o644, digest=EMPTY_DIGEST),
    ]


def test_example_toc_encodes_to_the_go_bytes() -> None:
    data = TOC(1, example_entries()).to_json()
    assert len(data) == 1275
    assert data == EXAMPLE_JSON
    assert _sha256(data) == EXAMPLE_TOC_DIGEST


def test_example_toc_decodes_to_the_same_entries() -> None:
    toc = TOC.from_json(EXAMPLE_JSON)
    assert toc.version == 1
    assert toc.entries == example_entries()
    assert toc.to_json() == EXAMPLE_JSON


def test_empty_toc_is_an_empty_list() -> None:
    assert TOC(1, []).to_json() == b'{\n\t"version": 1,\n\t"entries": []\n}'
    assert TOC.from_json(b'{"version": 1, "entries": null}').entries == []


def test_strings_are_escaped_like_go_1_19() -> None:
    # Expected output taken from Go 1.19 json.MarshalIndent of the same bytes.
    raw = (
        'a<b>&c\b\f\x01\x7f\u2028\u2029"\\\n\r\t'
        + b"\xff\xed\xa0\x80".decode("utf-8", "surrogateescape")
        + "é€😀"
    )
    expected = (
        '"a\\u003cb\\u003e\\u0026c\\u0008\\u000c\\u0001\x7f\\u2028\\u2029\\"\\\\\\n\\r\\t'
        '\\ufffd\\ufffd\\ufffd\\ufffdé€😀"'
    )
    assert go_json_string(raw) == expected
    assert go_json_string("plain/name.txt") == '"plain/name.txt"'


def test_xattrs_are_base64_with_keys_sorted_bytewise() -> None:
    entry = TOCEntry(
        "f",
        "reg",
        xattrs={"user.b": b"v\x00\xff", "user.a": b"", "security.capability": b"\x01\x02\x03"},
    )
    text = TOC(1, [entry]).to_json().decode()
    assert (
        '"xattrs": {\n\t\t\t\t"security.capability": "AQID",\n\t\t\t\t"user.a": "",'
        '\n\t\t\t\t"user.b": "dgD/"\n\t\t\t}' in text
    )
    assert TOC.from_json(text.encode()).entries[0].xattrs == entry.xattrs


def test_all_fields_round_trip_in_go_key_order() -> None:
    entry = TOCEntry(
        name="x",
        type="chunk",
        size=5,
        modtime="2000-01-01T00:00:00Z",
        link_name="l",
        mode=0o4755,
        uid=1,
        gid=2,
        user_name="u",
        group_name="g",
        offset=10,
        inner_offset=11,
        dev_major=3,
        dev_minor=4,
        xattrs={"k": b"v"},
        digest="d",
        chunk_offset=7,
        chunk_size=8,
        chunk_digest="c",
    )
    text = TOC(1, [entry]).to_json().decode()
    keys = [line.split('"')[1] for line in text.splitlines() if line.startswith('\t\t\t"')]
    assert keys == [
        "name", "type", "size", "modtime", "linkName", "mode", "uid", "gid", "userName",
        "groupName", "offset", "innerOffset", "devMajor", "devMinor", "xattrs", "digest",
        "chunkOffset", "chunkSize", "chunkDigest",
    ]  # fmt: skip
    assert TOC.from_json(text.encode()).entries == [entry]


def test_decoding_ignores_unknown_keys_and_matches_case_insensitively() -> None:
    toc = TOC.from_json(
        b'{"version": 1, "entries": [{"NAME": "a", "type": "reg", "NumLink": 0,'
        b' "Size": 3, "mode": null, "extra": {"x": [1]}}]}'
    )
    assert toc.entries == [TOCEntry("a", "reg", size=3)]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b"[]",
        b'{"version": "1", "entries": []}',
        b'{"version": 1, "entries": {}}',
        b'{"version": 1, "entries": [1]}',
        b'{"version": 1, "entries": [{"name": 1}]}',
        b'{"version": 1, "entries": [{"size": 1.5}]}',
        b'{"version": 1, "entries": [{"size": 1e3}]}',
        b'{"version": 1, "entries": [{"size": true}]}',
        b'{"version": 1, "entries": [{"size": 9223372036854775808}]}',
        b'{"version": 1, "entries": [{"size": NaN}]}',
        b'{"version": 1, "entries": [{"xattrs": {"a": "***"}}]}',
        b'{"version": 1, "entries": [{"xattrs": []}]}',
        b'{"version": 1, "entries": []} trailing',
    ],
)
def test_malformed_toc_json_is_a_format_error(data: bytes) -> None:
    with pytest.raises(FormatError):
        TOC.from_json(data)


def test_invalid_utf8_in_toc_json_decodes_to_replacement_characters() -> None:
    toc = TOC.from_json(b'{"version": 1, "entries": [{"name": "a\xffb", "type": "reg"}]}')
    assert toc.entries[0].name == "a\ufffdb"


@pytest.mark.parametrize(
    ("seconds", "nanos", "expected"),
    [
        (0, 0, ""),
        (0, 600_000_000, ""),
        (1704164645, 0, "2024-01-02T03:04:05Z"),
        (1704164645, 499_999_999, "2024-01-02T03:04:05Z"),
        (1704164645, 500_000_000, "2024-01-02T03:04:06Z"),
        (-1, 0, "1969-12-31T23:59:59Z"),
        (-62135596800, 0, ""),
    ],
)
def test_modtime_is_rounded_rfc3339_utc(seconds: int, nanos: int, expected: str) -> None:
    assert format_modtime(seconds, nanos) == expected
