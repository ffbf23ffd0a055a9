"""Prioritized-file ordering and landmarks, checked on converted blobs."""

from __future__ import annotations

import gzip
import tarfile

import pytest

from esgz.errors import FormatError
from esgz.estargz.ordering import clean_name, prioritized_order
from tests.estargz.writer_support import (
    Spec,
    convert,
    gzip_members,
    gzip_toc,
    make_tar,
    tar_members,
)

D = tarfile.DIRTYPE


def toc_names(blob: bytes) -> list[str]:
    return [e["name"] for e in gzip_toc(blob)["entries"] if e["type"] != "chunk"]


TREE = [
    Spec("./", D, mode=0o755),
    Spec("./a/", D, mode=0o755),
    Spec("./a/one", data=b"1"),
    Spec("./a/b/", D, mode=0o755),
    Spec("./a/b/two", data=b"22"),
    Spec("./c/", D, mode=0o755),
    Spec("./c/three", data=b"333"),
    Spec("./c/link", tarfile.LNKTYPE, linkname="./a/one"),
    Spec("./sym", tarfile.SYMTYPE, linkname="c/three"),
]


@pytest.mark.parametrize(
    ("prioritized", "expected"),
    [
        # parents (with the root entry) come first, in path order
        (
            ["a/b/two"],
            ["./", "./a/", "./a/b/", "./a/b/two", ".prefetch.landmark",
             "./a/one", "./c/", "./c/three", "./c/link", "./sym"],
        ),
        # the list order is kept; any spelling of a path works; duplicates are harmless
        (
            ["/c/three", "./a/one", "c/three", "a/one"],
            ["./", "./c/", "./c/three", "./a/", "./a/one", ".prefetch.landmark",
             "./a/b/", "./a/b/two", "./c/link", "./sym"],
        ),
        # a hardlink pulls its target (and the target's parents) in front of it
        (
            ["c/link"],
            ["./", "./c/", "./a/", "./a/one", "./c/link", ".prefetch.landmark",
             "./a/b/", "./a/b/two", "./c/three", "./sym"],
        ),
        # symlink targets are not followed; directories move without their children
        (
            ["sym", "a/b"],
            ["./", "./sym", "./a/", "./a/b/", ".prefetch.landmark",
             "./a/one", "./a/b/two", "./c/", "./c/three", "./c/link"],
        ),
        # the root alone
        (
            ["./"],
            ["./", ".prefetch.landmark", "./a/", "./a/one", "./a/b/", "./a/b/two",
             "./c/", "./c/three", "./c/link", "./sym"],
        ),
    ],
)  # fmt: skip
def test_prioritized_entries_move_first_with_parents_and_link_targets(
    prioritized: list[str], expected: list[str]
) -> None:
    blob, result = convert(make_tar(TREE), prioritized_files=tuple(prioritized))
    assert toc_names(blob) == expected
    assert result.missing_prioritized == ()
    # the landmark's data member comes right after the prioritized group
    entries = gzip_toc(blob)["entries"]
    landmark = next(e for e in entries if e["name"] == ".prefetch.landmark")
    member = next(m for m in gzip_members(blob) if m.offset == landmark["offset"])
    assert member.data[:1] == b"\x0f"
    before = [e for e in entries[: entries.index(landmark)] if "offset" in e]
    assert all(e["offset"] < landmark["offset"] for e in before)
    # the uncompressed tar has the same order
    stream_names = [m.name for m in tar_members(gzip.decompress(blob))]
    assert stream_names[:-1] == [name.rstrip("/") for name in expected]


def test_paths_not_found_are_reported_and_a_landmark_is_still_written() -> None:
    blob, result = convert(make_tar(TREE), prioritized_files=("nope", "a/one", "/c/missing"))
    assert result.missing_prioritized == ("nope", "/c/missing")
    assert toc_names(blob)[:4] == ["./", "./a/", "./a/one", ".prefetch.landmark"]
    # only missing paths: the landmark comes first
    blob, result = convert(make_tar(TREE), prioritized_files=("nope",))
    assert toc_names(blob)[0] == ".prefetch.landmark"
    assert result.missing_prioritized == ("nope",)


def test_strict_prioritized_makes_missing_paths_an_error() -> None:
    with pytest.raises(FormatError, match="'nope'"):
        convert(make_tar(TREE), prioritized_files=("a/one", "nope"), strict_prioritized=True)
    blob, _ = convert(make_tar(TREE), prioritized_files=("a/one",), strict_prioritized=True)
    assert toc_names(blob)[:3] == ["./", "./a/", "./a/one"]


def test_missing_parent_directory_entries_do_not_fail() -> None:
    # only a/b/c.txt has an entry (no a/ or a/b/): Go reports "not found", we move the file
    source = make_tar([Spec("x.txt", data=b"x"), Spec("a/b/c.txt", data=b"c")])
    blob, result = convert(source, prioritized_files=("a/b/c.txt",))
    assert result.missing_prioritized == ()
    assert toc_names(blob) == ["a/b/c.txt", ".prefetch.landmark", "x.txt"]
    # an implicit directory itself has no entry: reported missing
    blob, result = convert(source, prioritized_files=("a/b",))
    assert result.missing_prioritized == ("a/b",)


def test_every_occurrence_of_a_duplicate_moves_in_archive_order() -> None:
    source = make_tar([Spec("f", data=b"old"), Spec("g", data=b"g"), Spec("./f", data=b"new")])
    blob, _ = convert(source, prioritized_files=("f",))
    stream = gzip.decompress(blob)
    assert [m.name for m in tar_members(stream)][:3] == ["f", "./f", ".prefetch.landmark"]
    assert toc_names(blob) == ["./f", ".prefetch.landmark", "g"]


def test_hardlink_chains_and_cycles() -> None:
    source = make_tar(
        [
            Spec("t", data=b"target"),
            Spec("l1", tarfile.LNKTYPE, linkname="t"),
            Spec("other", data=b"o"),
            Spec("l2", tarfile.LNKTYPE, linkname="l1"),
        ]
    )
    blob, _ = convert(source, prioritized_files=("l2",))
    assert toc_names(blob) == ["t", "l1", "l2", ".prefetch.landmark", "other"]
    names = ["a", "b"]
    order = prioritized_order(names, lambda i: names[1 - i], ["a"])
    assert order.prioritized == [1, 0]
    assert order.rest == []


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("./a/", "a"),
        ("/a//b", "a/b"),
        ("./", ""),
        ("/", ""),
        ("..", ""),
        ("../a", "a"),
        ("a/./b/", "a/b"),
        ("//a", "a"),
    ],
)
def test_clean_name_is_gos_clean_entry_name(raw: str, cleaned: str) -> None:
    assert clean_name(raw) == cleaned


def test_a_file_below_1200_nested_directories_is_prioritized_without_recursion() -> None:
    """Deeper than Python's recursion limit: the directories move first, top-down."""
    names = ["/".join(["d"] * n) for n in range(1, 1201)]
    deepest = names[-1] + "/f"
    source = make_tar(
        [Spec("other", data=b"o"), *(Spec(n, D, mode=0o755) for n in names), Spec(deepest)]
    )
    blob, result = convert(source, prioritized_files=(deepest,))
    assert result.missing_prioritized == ()
    names_out = toc_names(blob)
    landmark = names_out.index(".prefetch.landmark")
    assert names_out[:landmark] == [*(n + "/" for n in names), deepest]  # tarfile adds "/"
    assert names_out[landmark + 1 :] == ["other"]

    order = prioritized_order([*names, deepest], lambda i: None, [deepest])
    assert order.prioritized == list(range(1201))
