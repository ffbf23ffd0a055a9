"""Malformed blobs: the Go reader and ours reject the same ones, at the same step.

Where our reader is deliberately stricter than Go (unsafe names, TOC order), the test
pins down that Go accepts the blob, so the difference stays a documented choice.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from esgz.errors import FormatError, VerificationError
from esgz.estargz.reader import open_layer
from tests.fixtures.blobcraft import CraftFile, craft_blob, toc_tar
from tests.fixtures.gotools import go_check
from tests.interop.sourcetar import pattern

Edit = Callable[[list[dict[str, Any]]], None]


def _files() -> list[CraftFile]:
    return [
        CraftFile("dir/", "dir", mode=0o755),
        CraftFile("dir/a.txt", data=b"hello\n"),
        CraftFile("dir/big.bin", data=pattern(12_000, 1)),
        CraftFile("dir/empty", data=b""),
        CraftFile(".no.prefetch.landmark", data=b"\x0f", mode=0),
    ]


def _entry(entries: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(e for e in entries if e["name"] == name)


def _drop_chunk_digest(entries: list[dict[str, Any]]) -> None:
    next(e for e in entries if e["type"] == "chunk").pop("chunkDigest")


def _empty_file_reuses_offset(entries: list[dict[str, Any]]) -> None:
    _entry(entries, "dir/empty")["offset"] = _entry(entries, "dir/a.txt")["offset"]


def _bad_digest(entries: list[dict[str, Any]]) -> None:
    _entry(entries, "dir/a.txt")["chunkDigest"] = "sha256:1234"


def _missing_link_target(entries: list[dict[str, Any]]) -> None:
    entries.append({"name": "dir/hl", "type": "hardlink", "linkName": "dir/nothing"})


# (id, craft kwargs, the Go step that must fail, our exception type)
REJECTED: list[tuple[str, dict[str, Any], str, type[FormatError]]] = [
    ("missing-chunk-digest", {"edit_toc": _drop_chunk_digest}, "VerifyTOC", VerificationError),
    ("offset-found-twice", {"edit_toc": _empty_file_reuses_offset}, "VerifyTOC", VerificationError),
    ("unparseable-digest", {"edit_toc": _bad_digest}, "VerifyTOC", VerificationError),
    ("inner-offsets", {"share_members": True}, "VerifyTOC", VerificationError),
    ("missing-hardlink-target", {"edit_toc": _missing_link_target}, "estargz.Open", FormatError),
    (
        "toc-tar-name",
        {"toc_member": lambda j: toc_tar(j, name="./stargz.index.json")},
        "estargz.Open",
        FormatError,
    ),
    ("bad-json", {"toc_json": b'{"version": 1, "entries": [}'}, "estargz.Open", FormatError),
    (
        "wrong-json-type",
        {"toc_json": b'{"version": 1, "entries": [{"name": "a", "type": "reg", "size": "1"}]}'},
        "estargz.Open",
        FormatError,
    ),
]


@pytest.mark.parametrize(
    ("kwargs", "go_step", "ours"), [r[1:] for r in REJECTED], ids=[r[0] for r in REJECTED]
)
def test_rejected_by_both(
    tmp_path: Path, kwargs: dict[str, Any], go_step: str, ours: type[FormatError]
) -> None:
    blob = craft_blob(tmp_path / "blob", _files(), chunk_size=5000, **kwargs)
    go = go_check(blob.path, blob.toc_digest)
    assert not go.ok
    assert any(error.startswith(go_step + ":") for error in go.errors), go.errors
    with pytest.raises(ours), open_layer(blob.path) as layer:
        layer.verify(blob.toc_digest)


@pytest.mark.parametrize("cut", [1, 30, 52])
def test_truncated_rejected_by_both(tmp_path: Path, cut: int) -> None:
    blob = craft_blob(tmp_path / "blob", _files(), chunk_size=5000)
    data = blob.path.read_bytes()
    blob.path.write_bytes(data[:-cut])
    go = go_check(blob.path, blob.toc_digest)
    assert any(error.startswith("estargz.Open:") for error in go.errors), go.errors
    with pytest.raises(FormatError):
        open_layer(blob.path)


def _absolute_name(entries: list[dict[str, Any]]) -> None:
    _entry(entries, "dir/a.txt")["name"] = "/dir/a.txt"


def _dotdot_name(entries: list[dict[str, Any]]) -> None:
    _entry(entries, "dir/a.txt")["name"] = "../../dir/a.txt"


def _swap_order(entries: list[dict[str, Any]]) -> None:
    a = entries.index(_entry(entries, "dir/a.txt"))
    landmark = entries.index(_entry(entries, ".no.prefetch.landmark"))
    entries[a], entries[landmark] = entries[landmark], entries[a]


@pytest.mark.parametrize(
    "edit", [_absolute_name, _dotdot_name, _swap_order], ids=["absolute", "dotdot", "order"]
)
def test_stricter_than_go(tmp_path: Path, edit: Edit) -> None:
    """Go opens and VerifyTOCs these; we refuse them at open."""
    blob = craft_blob(tmp_path / "blob", _files(), chunk_size=5000, edit_toc=edit)
    go = go_check(blob.path, blob.toc_digest)
    assert not any(e.startswith(("estargz.Open:", "VerifyTOC:")) for e in go.errors), go.errors
    with pytest.raises(FormatError):
        open_layer(blob.path)
