"""Map accessed paths to the layer that serves them, as overlayfs does.

A path is served by the **topmost** layer whose tar has an entry with exactly that cleaned
name. Scanning downwards from the top, a layer that deletes the path (or one of its
parents) with a whiteout, or that makes one of its parent directories opaque, ends the
search: the path then comes from no layer (it was created at run time). Paths found in no
layer are dropped, so files the workload created do not end up prioritized. Unlike the
reference recorder, a path whose parent directory has no explicit tar entry is fine.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Iterable, Sequence

from esgz.errors import FormatError
from esgz.estargz.layerindex import LayerIndex, entry_path

__all__ = ["cleaned_names", "layer_of", "prioritized_by_layer"]

log = logging.getLogger(__name__)


def _ancestors(path: str) -> list[str]:
    """``a/b/c`` → ``["a/b", "a", ""]`` (the root is ``""``)."""
    result = []
    while path:
        path = posixpath.dirname(path)
        result.append(path)
    return result


def cleaned_names(paths: Iterable[str]) -> list[str]:
    """``paths`` as entry names (no leading ``/``), each once, first one first.

    The root itself and paths no layer entry can have (a ``..`` component, a NUL byte)
    are dropped; names are cleaned as tar names are (:func:`entry_path`).
    """
    names: dict[str, None] = {}
    for path in paths:
        try:
            name = entry_path(path)
        except FormatError:
            continue
        if name:
            names[name] = None
    return list(names)


def layer_of(path: str, layers: Sequence[LayerIndex]) -> int | None:
    """Index (bottom = 0) of the layer serving ``path``, or None if no layer does."""
    try:
        name = entry_path(path)
    except FormatError:
        return None
    return _serving_layer(name, layers) if name else None


def _serving_layer(name: str, layers: Sequence[LayerIndex]) -> int | None:
    """:func:`layer_of` for a cleaned, non-empty entry name."""
    ancestors: list[str] | None = None  # computed once, and only if a layer deletes things
    for index in range(len(layers) - 1, -1, -1):
        layer = layers[index]
        if name in layer.entries:
            return index
        if not layer.whiteouts and not layer.opaque_dirs:
            continue
        if ancestors is None:
            ancestors = _ancestors(name)
        if name in layer.whiteouts or any(a in layer.whiteouts for a in ancestors if a):
            log.debug("%s: deleted in layer %d", name, index)
            return None
        if any(a in layer.opaque_dirs for a in ancestors):
            log.debug("%s: parent made opaque in layer %d", name, index)
            return None
    return None


def prioritized_by_layer(paths: Iterable[str], layers: Sequence[LayerIndex]) -> list[list[str]]:
    """Per layer (bottom = 0), its paths in first-access order, cleaned and de-duplicated."""
    result: list[list[str]] = [[] for _ in layers]
    for name in cleaned_names(paths):
        index = _serving_layer(name, layers)
        if index is None:
            log.debug("%s: not in any layer (created at run time?); dropped", name)
            continue
        result[index].append(name)
    return result
