"""What a layer's tar means as a directory tree: entry names, whiteouts and hard links.

The writer (:mod:`esgz.estargz.writer`), the profiler's unpacker
(:mod:`esgz.runtime.unpack`) and the prefetch-list mapper (:mod:`esgz.stages.layerindex`)
read layers with one parser (:class:`~esgz.estargz.tarinput.TarReader`) and feed its
entries, in archive order, to one :class:`LayerIndexBuilder`. So they see the same paths
and accept, or refuse with the same :class:`~esgz.errors.FormatError`, the same layers.

The rules (docs/format.md, "Layer entries"):

* **Names** (:func:`entry_path`): a leading ``/`` or ``./`` is dropped, ``//`` and
  ``/./`` collapse, a trailing ``/`` is dropped; ``""`` is the root. Only ``/`` separates
  components (a ``\\`` is part of a name, as on Linux). A ``..`` component or a NUL byte
  is refused, whatever it would resolve to.
* **Whiteouts**: ``.wh..wh..opq`` makes its directory opaque (the directory is implied if
  the layer has no entry for it); other ``.wh..wh.*`` names (aufs metadata) are skipped;
  ``.wh.<name>`` deletes ``<name>`` from the lower layers and, if this layer added it
  earlier, from this layer (with everything below it). ``.wh.`` alone, ``.wh..`` and a
  marker used as a parent directory (``a/.wh.b/c``) are refused.
* **The tree**: later entries win. An entry replaces the one of the same name; a directory
  replacing a directory keeps its children, anything else replacing a directory drops
  them. Parents without an entry are implied directories. An entry below a non-directory
  of the same layer (a file, a symlink, a whiteout) is refused: extracting it would write
  through a symlink or fail. The root entry, if any, must be a directory.
* **Hard links**: the target is cleaned like a name; it must be an entry of this layer
  that comes before the link, is not a directory, and is still that same entry at the end
  of the layer (not replaced or deleted after the link). Symlink targets are not checked:
  they are data.

Everything is linear in the size of the names: nothing walks the tree recursively, and
the deepest trees cost no more than their names do.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, NamedTuple

from esgz.errors import FormatError
from esgz.estargz.ordering import clean_name
from esgz.estargz.source import open_tar_stream
from esgz.estargz.tarinput import TarEntry, TarReader

__all__ = [
    "OPAQUE_MARKER",
    "WHITEOUT_META_PREFIX",
    "WHITEOUT_PREFIX",
    "LayerChange",
    "LayerIndex",
    "LayerIndexBuilder",
    "entry_path",
    "read_layer_index",
]

WHITEOUT_PREFIX: Final = ".wh."
OPAQUE_MARKER: Final = ".wh..wh..opq"
WHITEOUT_META_PREFIX: Final = ".wh..wh."


def _name_problem(name: str) -> str | None:
    if "\0" in name:
        return "has a NUL byte"
    if ".." in name and ".." in name.split("/"):
        return "has a '..' component"
    return None


def entry_path(name: str) -> str:
    """The path a tar entry name stands for: ``./usr/bin/`` → ``usr/bin``, ``/`` → ``""``.

    The one normalisation every reader of a layer applies (see the module docstring).
    Raises FormatError for a name with a ``..`` component or a NUL byte.
    """
    problem = _name_problem(name)
    if problem is not None:
        raise FormatError(f"tar entry {name!r}: the name {problem}")
    return clean_name(name)


@dataclass(frozen=True, slots=True)
class LayerIndex:
    """What a layer's tar holds, by :func:`entry_path` (no leading ``/``, no ``./``).

    ``entries`` are the real entries left at the end of the layer (files, directories,
    links, devices), ``whiteouts`` the paths the layer deletes from lower layers (``a/b``
    for ``a/.wh.b``), ``opaque_dirs`` the directories whose lower contents it hides
    (``""`` is the root).
    """

    entries: frozenset[str] = frozenset()
    whiteouts: frozenset[str] = frozenset()
    opaque_dirs: frozenset[str] = frozenset()

    def to_json(self) -> str:
        """Serialize (sorted, so the cache file is reproducible)."""
        return json.dumps(
            {
                "entries": sorted(self.entries),
                "whiteouts": sorted(self.whiteouts),
                "opaque_dirs": sorted(self.opaque_dirs),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> LayerIndex:
        """Read back what :meth:`to_json` wrote."""
        data = json.loads(text)
        return cls(
            entries=frozenset(data["entries"]),
            whiteouts=frozenset(data["whiteouts"]),
            opaque_dirs=frozenset(data["opaque_dirs"]),
        )


class LayerChange(NamedTuple):
    """What one tar entry does to the layer (returned by :meth:`LayerIndexBuilder.add`).

    ``name`` is the entry's own :func:`entry_path`. By ``kind``:

    * ``"entry"``: ``name`` is (re)created from the entry (a directory already there is
      kept for a directory entry, removed for anything else); ``target`` is the cleaned
      target of a hard link, else ``""``.
    * ``"whiteout"``: ``target`` is deleted (a whiteout is left in its place).
    * ``"opaque"``: directory ``target`` is made opaque.
    * ``"skip"``: nothing (aufs metadata).
    """

    kind: Literal["entry", "whiteout", "opaque", "skip"]
    name: str
    target: str = ""


_DIR: Final = 0
_OTHER: Final = 1
_WHITEOUT: Final = 2


class _Node:
    __slots__ = ("children", "explicit", "kind", "seq")

    def __init__(self, kind: int, seq: int, explicit: bool) -> None:
        self.kind = kind
        self.seq = seq
        self.explicit = explicit
        self.children: list[str] | None = [] if kind == _DIR else None


class LayerIndexBuilder:
    """Interprets a layer's tar entries in archive order; refuses what cannot be extracted.

    Call :meth:`add` for every entry, then :meth:`finish` for the :class:`LayerIndex`.
    Every refusal is a FormatError naming the entry (the caller adds the layer).
    """

    def __init__(self) -> None:
        self._nodes: dict[str, _Node] = {"": _Node(_DIR, 0, False)}
        self._whiteouts: set[str] = set()
        self._opaque: set[str] = set()
        self._links: list[tuple[str, int, str, int]] = []
        """(link path, its seq, target path, the target's seq when linked)."""
        self._seq = 0

    # -- the tree ------------------------------------------------------------------------

    def _parent_dir(self, path: str, shown: str) -> None:
        """Make sure every ancestor of ``path`` is a directory (implying missing ones)."""
        missing: list[str] = []
        parent = path.rpartition("/")[0] if path else None
        while parent is not None:
            node = self._nodes.get(parent)
            if node is not None:
                if node.kind != _DIR:
                    what = "a whiteout" if node.kind == _WHITEOUT else "not a directory"
                    raise FormatError(
                        f"tar entry {shown!r}: its parent {parent!r} is {what} in this layer"
                    )
                break
            if posixpath.basename(parent).startswith(WHITEOUT_PREFIX):
                raise FormatError(f"tar entry {shown!r}: a whiteout marker used as a directory")
            missing.append(parent)
            parent = parent.rpartition("/")[0] if parent else None
        for name in reversed(missing):  # top-down, so each parent exists first
            self._link_child(name, _Node(_DIR, self._seq, False))

    def _link_child(self, path: str, node: _Node) -> None:
        self._nodes[path] = node
        parent = self._nodes[path.rpartition("/")[0]]
        assert parent.children is not None
        parent.children.append(path)

    def _remove_subtree(self, path: str) -> None:
        """Forget ``path`` and everything below it (iteratively)."""
        stack = [path]
        while stack:
            name = stack.pop()
            node = self._nodes.pop(name, None)
            if node is None:
                continue
            self._opaque.discard(name)
            if node.children:
                stack.extend(node.children)
        # The parent's children list keeps the stale name; lookups go through _nodes.

    def _place(self, path: str, kind: int, explicit: bool) -> None:
        """Put a node at ``path``, replacing what is there (a directory kept for a directory)."""
        self._seq += 1
        old = self._nodes.get(path)
        if old is None:
            self._link_child(path, _Node(kind, self._seq, explicit))
        elif old.kind == _DIR and kind == _DIR:
            old.explicit = old.explicit or explicit
            old.seq = self._seq
        else:
            self._remove_subtree(path)  # the parent still lists the name
            self._nodes[path] = _Node(kind, self._seq, explicit)

    # -- entries -------------------------------------------------------------------------

    def add(self, entry: TarEntry) -> LayerChange:
        """Apply one entry; what it does to the tree. FormatError for a refused entry."""
        shown = entry.name
        path = entry_path(entry.name)
        parent, _, base = path.rpartition("/")
        if base.startswith(WHITEOUT_PREFIX):
            return LayerChange(*self._whiteout(path, parent, base, shown))
        is_dir = entry.typeflag == "5"
        if not path:
            if not is_dir:
                raise FormatError(f"tar entry {shown!r}: the root must be a directory")
            self._place("", _DIR, True)
            return LayerChange("entry", "")
        self._parent_dir(path, shown)
        link, link_seq = "", 0
        if entry.typeflag == "1":
            link, link_seq = self._hardlink_target(entry, path)
        self._place(path, _DIR if is_dir else _OTHER, True)
        self._whiteouts.discard(path)
        if link:
            self._links.append((path, self._seq, link, link_seq))
        return LayerChange("entry", path, link)

    def _hardlink_target(self, entry: TarEntry, path: str) -> tuple[str, int]:
        """The cleaned target of a hard link and the seq of the entry it points at."""
        problem = _name_problem(entry.linkname)
        if problem is not None:
            raise FormatError(f"hardlink {entry.name!r}: its target {entry.linkname!r} {problem}")
        target = clean_name(entry.linkname)
        node = self._nodes.get(target)
        if target == path:
            raise FormatError(f"hardlink {entry.name!r}: it points at itself")
        if node is None or not node.explicit or node.kind == _WHITEOUT:
            raise FormatError(
                f"hardlink {entry.name!r}: its target {entry.linkname!r} is not in the layer "
                "before it"
            )
        if node.kind == _DIR:
            raise FormatError(
                f"hardlink {entry.name!r}: its target {entry.linkname!r} is a directory"
            )
        return target, node.seq

    def _whiteout(
        self, path: str, parent: str, base: str, shown: str
    ) -> tuple[Literal["whiteout", "opaque", "skip"], str, str]:
        if base == OPAQUE_MARKER:
            self._parent_dir(path, shown)
            self._opaque.add(parent)
            return "opaque", path, parent
        if base.startswith(WHITEOUT_META_PREFIX):
            return "skip", path, ""
        target = base[len(WHITEOUT_PREFIX) :]
        if target in ("", ".", ".."):
            raise FormatError(f"tar entry {shown!r}: a whiteout of nothing")
        self._parent_dir(path, shown)
        deleted = f"{parent}/{target}" if parent else target
        self._place(deleted, _WHITEOUT, False)
        self._whiteouts.add(deleted)
        return "whiteout", path, deleted

    def finish(self) -> LayerIndex:
        """The index of the layer; FormatError if a hard link lost its target."""
        nodes = self._nodes
        for link, link_seq, target, target_seq in self._links:
            node = nodes.get(link)
            if node is None or node.seq != link_seq:
                continue  # the link itself was replaced: nothing refers to the target
            current = nodes.get(target)
            if current is None or current.seq != target_seq:
                raise FormatError(
                    f"hardlink {link!r}: its target {target!r} is replaced or deleted after it"
                )
        entries = frozenset(name for name, node in nodes.items() if name and node.explicit)
        return LayerIndex(entries, frozenset(self._whiteouts), frozenset(self._opaque))


def read_layer_index(path: Path) -> LayerIndex:
    """Index the layer blob at ``path`` (gzip, zstd or plain tar) from its headers. Blocking.

    Payloads are skipped, nothing is written. FormatError names the entry, not the layer
    (the caller knows which layer it is).
    """
    with path.open("rb") as file:
        stream = open_tar_stream(file)
        try:
            builder = LayerIndexBuilder()
            for entry in TarReader(stream):
                builder.add(entry)
            return builder.finish()
        finally:
            stream.close()
