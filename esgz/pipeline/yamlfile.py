"""Load YAML while remembering the line of every key and list item.

:func:`load_yaml_with_lines` returns plain Python data (dicts, lists, scalars) plus a
:class:`LineMap` from key paths (``("images", 1, "target")``) to 1-based line numbers, so
that validation errors found later on the data can point back at the file. Duplicate
keys, which PyYAML would silently overwrite, are reported as errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

__all__ = ["KeyPath", "LineMap", "YamlProblem", "format_key_path", "load_yaml_with_lines"]

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


def load_yaml_with_lines(text: str) -> tuple[Any, LineMap]:
    """Parse one YAML document into plain data and the lines of its keys.

    Raises :class:`YamlProblem` for syntax errors and duplicate keys.
    """
    loader = yaml.SafeLoader(text)
    try:
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
