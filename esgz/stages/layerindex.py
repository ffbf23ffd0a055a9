"""The names a layer blob holds, as the path → layer mapping needs them.

Reads the layer's tar headers once (payloads skipped) with the format engine's tar reader
and returns the runtime's :class:`~esgz.runtime.unpack.LayerIndex`: real entries,
whiteouts (``a/.wh.b`` → ``a/b``) and opaque directories (``a/.wh..wh..opq`` → ``a``).
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from esgz.estargz.source import open_tar_stream
from esgz.estargz.tarinput import TarReader
from esgz.runtime.unpack import LayerIndex, clean_entry_name

__all__ = ["index_layer_file"]

_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"


def index_layer_file(path: Path) -> LayerIndex:
    """Index the layer blob at ``path`` (gzip, zstd or plain tar). Blocking."""
    entries: set[str] = set()
    whiteouts: set[str] = set()
    opaque: set[str] = set()
    with path.open("rb") as file:
        for entry in TarReader(open_tar_stream(file)):
            try:
                name = clean_entry_name(entry.name)
            except ValueError:
                continue
            parent, base = posixpath.split(name)
            if base == _OPAQUE:
                opaque.add(parent)
            elif base.startswith(_WHITEOUT):
                whiteouts.add(posixpath.join(parent, base[len(_WHITEOUT) :]))
            elif name:
                entries.add(name)
    return LayerIndex(frozenset(entries), frozenset(whiteouts), frozenset(opaque))
