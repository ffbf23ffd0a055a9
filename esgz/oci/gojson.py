"""JSON text the way Go's ``encoding/json`` writes it (the reference tools are Go).

* :func:`dumps` — ``json.Marshal``: compact, UTF-8, object keys in the given order
  (or sorted, for Go maps), strings escaped like Go 1.19 (``"``, ``\\``, ``\\n``,
  ``\\r``, ``\\t``, other control characters as ``\\u00XX``, ``<``, ``>``, ``&``,
  U+2028 and U+2029 as ``\\u…``, lone surrogates as U+FFFD), integers as integers and
  floats in Go's shortest form (``1`` not ``1.0``; exponent form below 1e-6 and from
  1e21, ``1e-7`` not ``1e-07``).
* :func:`compact` — ``json.Compact`` with HTML escaping, as ``json.Marshal`` applies to
  a ``json.RawMessage``: whitespace outside strings removed, HTML characters escaped,
  everything else (number spellings, other escapes) kept as written.
* :func:`raw_members` — the members of a JSON object as ``key → raw value text``, the
  equivalent of decoding into ``map[string]*json.RawMessage``; :func:`decoded_members`
  gives each member's decoded value beside its text, from the same single pass.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

__all__ = ["compact", "decoded_members", "dumps", "quote", "raw_members"]

_HTML = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_SHORT = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def quote(text: str, *, lone_surrogate: str = "\ufffd") -> str:
    """``text`` as a Go-encoded JSON string literal, quotes included.

    A lone surrogate is written as ``lone_surrogate``: by default U+FFFD, which is what
    Go's decoder makes of a ``\\ud800``-style escape in the JSON it read.
    """
    out = ['"']
    for char in text:
        if char in _SHORT:
            out.append(_SHORT[char])
        elif char < " ":
            out.append(f"\\u{ord(char):04x}")
        elif char in _HTML:
            out.append(_HTML[char])
        elif "\ud800" <= char <= "\udfff":
            out.append(lone_surrogate)
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _number(value: float) -> str:
    if not math.isfinite(value):
        raise ValueError(f"JSON cannot encode {value}")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    magnitude = abs(value)
    if 1e-6 <= magnitude < 1e21:
        text = format(Decimal(repr(value)), "f")
        return text[:-2] if text.endswith(".0") else text
    mantissa, exponent = repr(value).split("e")
    return f"{mantissa}e{exponent[0]}{int(exponent[1:])}"


def _encode(value: Any, sort_keys: bool, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(quote(value))
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_number(value))
    elif isinstance(value, Mapping):
        keys = sorted(value) if sort_keys else list(value)
        out.append("{")
        for position, key in enumerate(keys):
            if position:
                out.append(",")
            out.append(quote(str(key)))
            out.append(":")
            _encode(value[key], sort_keys, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for position, item in enumerate(value):
            if position:
                out.append(",")
            _encode(item, sort_keys, out)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def dumps(value: Any, *, sort_keys: bool = False) -> bytes:
    """``value`` encoded like Go's ``json.Marshal`` (see the module docs), as UTF-8."""
    out: list[str] = []
    _encode(value, sort_keys, out)
    return "".join(out).encode("utf-8")


def compact(raw: str) -> str:
    """Go's ``json.Compact`` with HTML escaping, on valid JSON text."""
    out: list[str] = []
    in_string = False
    escaped = False
    for char in raw:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            out.append(_HTML.get(char, char))
        elif char in " \t\r\n":
            continue
        else:
            if char == '"':
                in_string = True
            out.append(char)
    return "".join(out)


def raw_members(text: str) -> dict[str, str]:
    """The members of the JSON object ``text`` as ``key → raw value text``.

    A repeated key keeps its last value. ValueError if ``text`` is not one JSON object.
    """
    return {key: raw for key, (raw, _) in decoded_members(text).items()}


def decoded_members(text: str) -> dict[str, tuple[str, Any]]:
    """The members of the JSON object ``text`` as ``key → (raw value text, value)``.

    One pass decodes every value and keeps its text. A repeated key keeps its last value
    (as ``json.loads`` does). ValueError if ``text`` is not one JSON object.
    """
    decoder = json.JSONDecoder()
    members: dict[str, tuple[str, Any]] = {}
    position = _skip_space(text, 0)
    if text[position : position + 1] != "{":
        raise ValueError("not a JSON object")
    position = _skip_space(text, position + 1)
    if text[position : position + 1] == "}":
        position += 1
    else:
        while True:
            if text[position : position + 1] != '"':
                raise ValueError(f"expected a key at offset {position}")
            key, position = json.decoder.scanstring(text, position + 1)  # type: ignore[attr-defined]
            position = _skip_space(text, position)
            if text[position : position + 1] != ":":
                raise ValueError(f"expected ':' at offset {position}")
            start = _skip_space(text, position + 1)
            value, position = decoder.raw_decode(text, start)
            members[key] = (text[start:position], value)
            position = _skip_space(text, position)
            separator = text[position : position + 1]
            position += 1
            if separator == "}":
                break
            if separator != ",":
                raise ValueError(f"expected ',' or '}}' at offset {position - 1}")
            position = _skip_space(text, position)
    if text[position:].strip(" \t\r\n"):
        raise ValueError("data after the JSON object")
    return members


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position
