"""Hypothesis strategies for random layer trees (every entry type, xattrs, links, unicode)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from hypothesis import strategies as st

from tests.interop.sourcetar import LANDMARKS, TarItem, pattern

CHUNK = 1024
"""Small chunk size so that multi-chunk files stay cheap."""


def examples(count: int) -> int:
    """``count`` scaled by ``ESGZ_PROPERTY_SCALE`` (default 1) for longer local runs."""
    return count * int(os.environ.get("ESGZ_PROPERTY_SCALE", "1"))


_RESERVED_AT_ROOT = {*LANDMARKS, "stargz.index.json"}

components = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs", "Cc", "Zl", "Zp"),
        blacklist_characters="/\\",
    ),
    min_size=1,
    max_size=10,
).filter(lambda s: s not in (".", ".."))

_SIZES = [0, 1, 7, 200, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 5]


@dataclass
class Tree:
    """A random layer: its tar items and a prioritized list (existing and missing paths)."""

    items: list[TarItem]
    prioritized: list[str]


@st.composite
def trees(draw: st.DrawFn, max_entries: int = 14, duplicates: bool = True) -> Tree:
    """A tree whose directories are explicit tar entries that precede their children.

    With ``duplicates`` a regular file may be added a second time at the end.
    """
    dirs = [""]
    regular: list[str] = []
    used: set[str] = set()
    items: list[TarItem] = []
    for _ in range(draw(st.integers(1, max_entries))):
        kind = draw(
            st.sampled_from(
                ["dir", "dir", "reg", "reg", "reg", "symlink", "hardlink", "char", "block", "fifo"]
            )
        )
        parent = draw(st.sampled_from(dirs))
        base = draw(components)
        path = f"{parent}/{base}" if parent else base
        if path in used or (not parent and base in _RESERVED_AT_ROOT):
            continue
        if kind == "hardlink" and not regular:
            continue
        used.add(path)
        common = {
            "mode": draw(st.sampled_from([0o644, 0o755, 0o600, 0o4755, 0o2750, 0o1777])),
            "uid": draw(st.sampled_from([0, 1000, 65534])),
            "gid": draw(st.sampled_from([0, 100, 65534])),
            "uname": draw(st.sampled_from(["root", "", "user-ü"])),
            "gname": draw(st.sampled_from(["root", "", "group"])),
            "mtime": draw(st.one_of(st.just(0), st.integers(1, 2**32))),
            "xattrs": draw(
                st.dictionaries(
                    st.sampled_from(["user.a", "user.long.name", "user.ünï"]),
                    st.text(max_size=12),
                    max_size=2,
                )
            ),
        }
        if kind == "dir":
            items.append(TarItem(path + "/", "dir", **common))
            dirs.append(path)
        elif kind == "reg":
            size = draw(st.sampled_from(_SIZES))
            data = (
                draw(st.binary(min_size=size, max_size=size))
                if size <= 200
                else pattern(size, draw(st.integers(0, 1000)))
            )
            items.append(TarItem(path, "reg", data=data, **common))
            regular.append(path)
        elif kind == "hardlink":
            items.append(TarItem(path, "hardlink", link=draw(st.sampled_from(regular)), **common))
        elif kind == "symlink":
            target = draw(st.one_of(st.sampled_from(sorted(used)), components))
            items.append(TarItem(path, "symlink", link=target, **common))
        elif kind in ("char", "block"):
            dev = (draw(st.integers(0, 4095)), draw(st.integers(0, 255)))
            items.append(TarItem(path, kind, dev=dev, **common))
        else:
            items.append(TarItem(path, "fifo", **common))
    link_targets = {item.link for item in items if item.type == "hardlink"}
    replaceable = [name for name in regular if name not in link_targets]
    if duplicates and replaceable and draw(st.booleans()):
        # A later entry with the same name replaces the earlier one (and moves to its place).
        # Hardlink targets are not replaced: that would put the target after the link.
        again = draw(st.sampled_from(replaceable))
        items.append(TarItem(again, "reg", data=draw(st.binary(max_size=50)), mode=0o640))
    names = [item.name.rstrip("/") for item in items]
    prioritized = draw(st.lists(st.sampled_from(names), max_size=4)) if names else []
    if draw(st.booleans()):
        prioritized.append("does/not/exist")
    return Tree(items, prioritized)
