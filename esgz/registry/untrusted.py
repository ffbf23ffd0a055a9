"""Reading what a registry, a token endpoint or a credential helper says, trusting none of it.

JSON is parsed strictly: ``NaN`` / ``Infinity`` (not JSON) make a document unreadable, and
so do nesting deep enough to exhaust the parser and bytes that are not UTF-8. A number too
large for a float (``1e999``) or an integer of thousands of digits reads as an infinity,
which :func:`finite_number` then refuses like any other unusable value.
Header numbers are ASCII digits only (``"²".isdigit()`` is true in Python). Text that ends
up in an error message is cut to one short printable line.
"""

from __future__ import annotations

import json
import math
import re

__all__ = ["finite_number", "header_int", "json_object", "one_line", "parse_json"]

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\s]+")
_DIGITS_RE = re.compile(r"[0-9]{1,19}")


_MAX_INT_DIGITS = 4000  # below Python's own limit on int() of a string (4300)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _int_or_infinity(text: str) -> int | float:
    if len(text.lstrip("-")) <= _MAX_INT_DIGITS:
        return int(text)
    return -math.inf if text.startswith("-") else math.inf


def parse_json(data: bytes | str) -> object | None:
    """The JSON document in ``data``, or ``None`` if it is not strict, readable JSON."""
    try:
        document: object = json.loads(
            data, parse_constant=_reject_constant, parse_int=_int_or_infinity
        )
    except (ValueError, RecursionError):
        # ValueError covers bad JSON, bad UTF-8, NaN / Infinity.
        return None
    return document


def json_object(data: bytes | str) -> dict[str, object] | None:
    """The JSON object in ``data``; ``None`` if it is unreadable or not an object."""
    document = parse_json(data)
    return document if isinstance(document, dict) else None


def finite_number(value: object, *, minimum: float, maximum: float) -> float | None:
    """``value`` clamped to ``[minimum, maximum]`` if it is a real, finite number; else ``None``.

    Booleans are not numbers here, and neither are strings.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return float(min(max(value, minimum), maximum))


def header_int(value: str | None) -> int | None:
    """A non-negative integer header value (``Content-Length``, ``Retry-After``) or ``None``."""
    if value is None:
        return None
    text = value.strip()
    return int(text) if _DIGITS_RE.fullmatch(text) else None


def one_line(text: object, limit: int = 200) -> str:
    """``text`` as one printable line of at most ``limit`` characters."""
    line = _CONTROL_RE.sub(" ", str(text)).strip()
    return line if len(line) <= limit else line[: limit - 1] + "…"
