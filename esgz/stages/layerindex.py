"""The names a layer blob holds, as the path → layer mapping needs them.

Reads the layer's tar headers once (payloads skipped) with the format engine's parser and
its :class:`~esgz.estargz.layerindex.LayerIndexBuilder` — the interpretation the writer
and the profiler's unpacker use too — and returns the
:class:`~esgz.estargz.layerindex.LayerIndex`: real entries, whiteouts (``a/.wh.b`` →
``a/b``) and opaque directories (``a/.wh..wh..opq`` → ``a``). A layer they would refuse
is refused here too, with the same FormatError.
"""

from __future__ import annotations

from pathlib import Path

from esgz.errors import FormatError
from esgz.estargz.layerindex import LayerIndex, read_layer_index

__all__ = ["index_layer_file"]


def index_layer_file(path: Path, digest: str | None = None) -> LayerIndex:
    """Index the layer blob at ``path`` (gzip, zstd or plain tar). Blocking.

    A FormatError names the entry, and the layer when its ``digest`` is given.
    """
    try:
        return read_layer_index(path)
    except FormatError as err:
        if err.layer is None:
            err.layer = digest
        raise
