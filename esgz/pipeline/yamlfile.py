"""Load YAML while remembering the line of every key and list item.

:func:`load_yaml_with_lines` returns plain Python data (dicts, lists, scalars) plus a
:class:`LineMap` from key paths (``("images", 1, "target")``) to 1-based line numbers, so
that validation errors found later on the data can point back at the file. Duplicate
keys, which PyYAML would silently overwrite, are reported as errors.

Anchors, aliases and merge keys (``<<: *defaults``) work, within bounds checked on the
event stream before anything is built, so that no document can exhaust the stack or the
memory: an alias inside the collection it names (``a: &a [*a]``) is refused, aliases may
add at most :data:`MAX_ALIAS_VALUES` values in all (a few hundred bytes of nested
aliases would otherwise expand to gigabytes), collections may nest at most
:data:`MAX_DEPTH` levels deep, and a document may be at most :data:`MAX_YAML_CHARS`
characters long. Each is a :class:`YamlProblem` naming the line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

__all__ = [
    "MAX_ALIAS_VALUES",
    "MAX_DEPTH",
    "MAX_YAML_CHARS",
    "KeyPath",
    "LineMap",
    "YamlProblem",
    "format_key_path",
    "load_yaml_with_lines",
    "read_yaml_text",
]

#: How many values (scalars and collections) aliases may add to a document, in all.
MAX_ALIAS_VALUES = 100_000
#: How deep collections may nest (aliases included).
MAX_DEPTH = 64
#: The longest document accepted, in characters.
MAX_YAML_CHARS = 16 * 1024 * 1024

#: Where a value sits in a document: mapping keys and list indexes from the root.
KeyPath = tuple[str | int, ...]


class YamlProblem(Exception):
    """The text is not valid YAML (or has duplicate keys); ``line`` is 1-based or None."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass
class LineMap:
    """Line numbers (1-based) of the values and keys of a loaded document."""

    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, path: Sequence[str | int]) -> int | None:
        """The line of ``path``, or of its nearest ancestor that is known."""
        key = tuple(path)
        while True:
            if key in self.lines:
                return self.lines[key]
            if not key:
                return None
            key = key[:-1]


def format_key_path(path: Sequence[str | int]) -> str:
    """``("images", 1, "target")`` → ``images[1].target``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def read_yaml_text(path: str | os.PathLike[str]) -> str:
    """The text of the file ``path`` (UTF-8), read up to one character past the limit.

    Blocking. A longer file (or an endless one, like ``/dev/zero``) is then refused by
    :func:`load_yaml_with_lines` without being read whole.
    """
    with open(path, encoding="utf-8") as handle:
        return handle.read(MAX_YAML_CHARS + 1)


def load_yaml_with_lines(text: str) -> tuple[Any, LineMap]:
    """Parse one YAML document into plain data and the lines of its keys.

    Raises :class:`YamlProblem` for syntax errors, duplicate keys, and documents beyond
    the bounds of the module docstring.
    """
    if len(text) > MAX_YAML_CHARS:
        raise YamlProblem(
            f"the document is longer than {MAX_YAML_CHARS // (1024 * 1024)} MiB", None
        )
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:
        where = text.count("\n", 0, exc.position) + 1
        raise YamlProblem(f"invalid YAML: {exc.reason} (#x{exc.character:04x})", where) from None
    try:
        _check_bounds(text)
        node = loader.get_single_node()
        if node is None:
            return None, LineMap()
        line_map = LineMap()
        data = _build(loader, node, (), line_map)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlProblem(f"invalid YAML: {problem}", line) from None
    except yaml.YAMLError as exc:
        raise YamlProblem(f"invalid YAML: {exc}", None) from None
    finally:
        loader.dispose()
    return data, line_map


@dataclass
class _Frame:
    """An open collection while checking the event stream."""

    anchor: str | None
    values: int = 0  # values inside it, aliases expanded
    height: int = 0  # levels of collections inside it


def _check_bounds(text: str) -> None:
    """Refuse recursive aliases, too much alias expansion and too deep nesting.

    One pass over the parser's events (no recursion, nothing built), tracking for each
    anchor how many values and levels it stands for.
    """
    anchors: dict[str, tuple[int, int]] = {}
    open_anchors: set[str] = set()
    frames: list[_Frame] = [_Frame(None)]
    added = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        line = event.start_mark.line + 1 if event.start_mark is not None else None
        if isinstance(event, yaml.AliasEvent):
            name = str(event.anchor)
            if name in open_anchors:
                raise YamlProblem(
                    f"invalid YAML: alias *{name} refers to a collection that contains it", line
                )
            if name not in anchors:
                continue  # the composer reports the undefined alias
            values, height = anchors[name]
            added += values
            if added > MAX_ALIAS_VALUES:
                raise YamlProblem(
                    f"invalid YAML: aliases expand to more than {MAX_ALIAS_VALUES} values"
                    f" (at *{name})",
                    line,
                )
            if len(frames) - 1 + height > MAX_DEPTH:
                raise YamlProblem(
                    f"invalid YAML: nested more than {MAX_DEPTH} levels deep (at *{name})", line
                )
            frames[-1].values += values
            frames[-1].height = max(frames[-1].height, height)
        elif isinstance(event, yaml.ScalarEvent):
            if event.anchor is not None:
                anchors[str(event.anchor)] = (1, 0)
            frames[-1].values += 1
        elif isinstance(event, yaml.CollectionStartEvent):
            if len(frames) > MAX_DEPTH:
                raise YamlProblem(f"invalid YAML: nested more than {MAX_DEPTH} levels deep", line)
            anchor = str(event.anchor) if event.anchor is not None else None
            if anchor is not None:
                open_anchors.add(anchor)
            frames.append(_Frame(anchor))
        elif isinstance(event, yaml.CollectionEndEvent):
            frame = frames.pop()
            values, height = frame.values + 1, frame.height + 1
            if frame.anchor is not None:
                open_anchors.discard(frame.anchor)
                anchors[frame.anchor] = (values, height)
            frames[-1].values += values
            frames[-1].height = max(frames[-1].height, height)


def _build(loader: yaml.SafeLoader, node: yaml.Node, path: KeyPath, line_map: LineMap) -> Any:
    line_map.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise YamlProblem(
                    f"invalid YAML: unsupported mapping key {key!r}", key_node.start_mark.line + 1
                )
            if key in result:
                raise YamlProblem(
                    f"duplicate key {format_key_path((*path, str(key)))}",
                    key_node.start_mark.line + 1,
                )
            child: KeyPath = (*path, str(key))
            line_map.lines[child] = key_node.start_mark.line + 1
            result[key] = _build(loader, value_node, child, line_map)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(loader, item, (*path, index), line_map) for index, item in enumerate(node.value)
        ]
    return loader.construct_object(node, deep=True)
