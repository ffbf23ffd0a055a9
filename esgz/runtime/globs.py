"""Doublestar globs of prefetch lists, matched in linear time.

A pattern is split at ``/`` (leading, trailing, empty and ``.`` segments dropped). A
segment ``**`` matches zero or more whole directories (as the last segment: the
directory itself and everything below it). Any other segment matches one path segment:
``*`` any run of characters, ``?`` one character, ``[abc]`` / ``[a-z]`` / ``[!a]`` (or
``[^a]``) a class (a ``]`` right after ``[`` or ``[!`` is a member; a reversed range
matches nothing, as in Go), ``\\x`` the character ``x``; a ``[`` without its ``]`` is
itself.

Nothing here backtracks: a segment matches in O(pattern × name) steps (consecutive ``*``
are one), a path in O(pattern segments × name segments), whatever the pattern — a
prefetch list is outside input, and a regex translation of ``*a*a*a…b`` takes
exponential time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["Glob", "is_glob"]

_GLOB_CHARS: Final = frozenset("*?[")
_SPECIAL: Final = "*?[]\\"


def is_glob(line: str) -> bool:
    """Whether a prefetch-list line is a glob pattern."""
    return any(char in _GLOB_CHARS for char in line)


class _Star:
    """``*``: any run of characters within a segment."""


class _Any:
    """``?``: one character."""


@dataclass(frozen=True, slots=True)
class _Class:
    """``[...]``: one character in (or, negated, not in) the ranges."""

    negate: bool
    ranges: tuple[tuple[str, str], ...]

    def has(self, char: str) -> bool:
        inside = any(low <= char <= high for low, high in self.ranges)
        return inside != self.negate


_STAR: Final = _Star()
_ANY: Final = _Any()


class _DoubleStar:
    """A ``**`` segment: zero or more whole directories."""


_DOUBLE_STAR: Final = _DoubleStar()
_Token = _Star | _Any | _Class | str
#: A compiled segment: ``**``, a literal name, or tokens to match.
_Segment = _DoubleStar | str | tuple[_Token, ...]


def _segment(text: str) -> _Segment:
    if text == "**":
        return _DOUBLE_STAR
    tokens = _tokens(text)
    if all(isinstance(token, str) for token in tokens):
        return "".join(str(token) for token in tokens)
    return tokens


def _class_ranges(body: str) -> tuple[tuple[str, str], ...]:
    ranges: list[tuple[str, str]] = []
    i = 0
    while i < len(body):
        low = body[i]
        if low == "\\" and i + 1 < len(body):
            i += 1
            low = body[i]
        if body[i + 1 : i + 2] == "-" and i + 2 < len(body):
            high = body[i + 2]
            if high == "\\" and i + 3 < len(body):
                i += 1
                high = body[i + 2]
            ranges.append((low, high))
            i += 3
        else:
            ranges.append((low, low))
            i += 1
    return tuple(ranges)


def _tokens(segment: str) -> tuple[_Token, ...]:
    out: list[_Token] = []
    i = 0
    while i < len(segment):
        char = segment[i]
        if char == "*":
            if not out or out[-1] is not _STAR:
                out.append(_STAR)
        elif char == "?":
            out.append(_ANY)
        elif char == "[":
            negate = segment[i + 1 : i + 2] in ("!", "^")
            first = i + 2 if negate else i + 1
            end = segment.find("]", first + 1)
            if end < 0:
                out.append(char)
            else:
                out.append(_Class(negate, _class_ranges(segment[first:end])))
                i = end
        elif char == "\\" and i + 1 < len(segment):
            i += 1
            out.append(segment[i])
        else:
            out.append(char)
        i += 1
    return tuple(out)


def _one(token: _Token, char: str) -> bool:
    if token is _ANY:
        return True
    if isinstance(token, _Class):
        return token.has(char)
    return token == char


def _segment_matches(tokens: tuple[_Token, ...], text: str) -> bool:
    """Wildcard match with the last ``*`` as the only resumption point: O(len × tokens)."""
    t = s = 0
    star = -1
    resume = 0
    while s < len(text):
        if t < len(tokens) and tokens[t] is _STAR:
            star, resume = t, s
            t += 1
        elif t < len(tokens) and _one(tokens[t], text[s]):
            t += 1
            s += 1
        elif star >= 0:
            t = star + 1
            resume += 1
            s = resume
        else:
            return False
    while t < len(tokens) and tokens[t] is _STAR:
        t += 1
    return t == len(tokens)


class Glob:
    """One compiled prefetch-list glob; :meth:`matches` tests a cleaned entry name."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        segments = [s for s in pattern.strip("/").split("/") if s not in ("", ".")]
        self._segments = tuple(_segment(segment) for segment in segments)
        # Literal text every match starts / ends with: a check in C before the walk.
        text = "/".join(segments)
        special = [text.find(char) for char in _SPECIAL if char in text]
        self._prefix = text[: min(special)] if special else text
        self._suffix = text[max(text.rfind(char) for char in _SPECIAL) + 1 :] if special else ""
        # ``dir/sub/**``: the prefix decides alone.
        *leading, last = self._segments or (None,)
        self._prefix_decides = last is _DOUBLE_STAR and all(isinstance(s, str) for s in leading)

    def _closure(self, states: set[int]) -> set[int]:
        """Add the positions after each ``**`` (which may match zero directories)."""
        pending = list(states)
        while pending:
            i = pending.pop()
            if (
                i < len(self._segments)
                and self._segments[i] == _DOUBLE_STAR
                and i + 1 not in states
            ):
                states.add(i + 1)
                pending.append(i + 1)
        return states

    def matches(self, name: str) -> bool:
        """Whether ``name`` (no leading ``/``, no ``./``) matches the pattern."""
        if not (name + "/").startswith(self._prefix) or not ("/" + name).endswith(self._suffix):
            return False
        if self._prefix_decides:
            return True
        states = self._closure({0})
        for part in name.split("/") if name else ():
            following: set[int] = set()
            for i in states:
                if i == len(self._segments):
                    continue
                segment = self._segments[i]
                if segment is _DOUBLE_STAR:
                    following.add(i)
                elif (
                    segment == part
                    if isinstance(segment, str)
                    else (isinstance(segment, tuple) and _segment_matches(segment, part))
                ):
                    following.add(i + 1)
            if not following:
                return False
            states = self._closure(following)
        return len(self._segments) in states
