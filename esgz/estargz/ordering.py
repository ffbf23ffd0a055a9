"""Entry names and the prioritized-file ordering.

:func:`clean_name` is Go's ``cleanEntryName``: ``path.Clean("/" + name)`` without the
leading ``/`` (``./a/`` → ``a``, ``/a//b`` → ``a/b``, ``./`` → ``""``).

:func:`prioritized_order` reproduces ``sortEntries``/``moveRec`` of the Go builder
(FORMAT.md §3) with these deliberate differences (docs/format.md, "Writer decisions"):

* An ancestor directory without an explicit tar entry is skipped, not an error: the file
  still moves (Go reports the whole path as not found and leaves it where it was).
* Duplicate names: every occurrence of a name moves together, in archive order, so the
  last occurrence still wins when the tar is extracted; the TOC lists only the last one.
* A hardlink's target (followed through chains, cycles stopped) moves before the link.
  Symlink targets are not followed. Directories move without their children.
* A path without an entry of its own is reported missing (also when it is the parent
  directory of other entries: nothing is synthesized). The root (``/``, ``./``) is never
  missing; its entry moves if the archive has one.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["OrderResult", "clean_name", "parent_name", "prioritized_order"]


def clean_name(name: str) -> str:
    """Go's ``cleanEntryName``: the name as used for matching (no ``/`` or ``./`` prefix).

    The writer cleans every tar name and the reader every TOC name with this one function.
    """
    if name and name[0] not in "./" and name[-1] != "/" and "//" not in name and "/." not in name:
        return name  # already clean (the common case)
    return posixpath.normpath("/" + name).lstrip("/")


def parent_name(cleaned: str) -> str:
    """The cleaned parent of a cleaned name (``""`` for top-level names)."""
    return cleaned.rpartition("/")[0]


@dataclass
class OrderResult:
    """Indices of entries in output order around the landmark, and paths not found."""

    prioritized: list[int] = field(default_factory=list)
    rest: list[int] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def prioritized_order(
    cleaned_names: Sequence[str],
    hardlink_target: Callable[[int], str | None],
    prioritized: Sequence[str],
) -> OrderResult:
    """Split entries (given by cleaned name, in archive order) into moved and remaining.

    ``hardlink_target(i)`` is the cleaned link target of entry ``i`` if it is a hardlink.
    """
    occurrences: dict[str, list[int]] = {}
    for index, name in enumerate(cleaned_names):
        occurrences.setdefault(name, []).append(index)

    moved: set[str] = set()
    in_progress: set[str] = set()
    order: list[int] = []

    def move(start: str) -> bool:
        """Move ``start`` after its nearest ancestor entry and its hardlink target.

        Iterative (an explicit stack), so the depth of the tree does not matter.
        """
        if start not in occurrences:
            return start == "" or start in moved  # no root entry is fine
        stack: list[tuple[str, int]] = [(start, 0)]
        while stack:
            name, step = stack.pop()
            if step == 0:
                if name in moved or name in in_progress or name not in occurrences:
                    continue
                in_progress.add(name)
                stack.append((name, 1))
                if name:
                    parent = parent_name(name)
                    while parent and parent not in occurrences:
                        parent = parent_name(parent)  # skip ancestors without an entry
                    stack.append((parent, 0))
            elif step == 1:
                stack.append((name, 2))
                target = hardlink_target(occurrences[name][-1]) if name else None
                if target is not None:
                    stack.append((target, 0))
            else:
                in_progress.discard(name)
                moved.add(name)
                order.extend(occurrences[name])
        return True

    result = OrderResult()
    for path in prioritized:
        if not move(clean_name(path)):
            result.missing.append(path)
    moved_set = set(order)
    result.prioritized = order
    result.rest = [i for i in range(len(cleaned_names)) if i not in moved_set]
    return result
