"""How settings are spelled to the user: command-line flags, YAML keys, Python names.

Every setting is declared once, as a field of a pydantic model (the pipeline config, the
workload options). This module holds what those declarations need besides pydantic:

* :class:`Flag`, ``Annotated`` metadata saying how a field is spelled on the command
  line (the CLI builds its options from the fields; a field without it becomes
  ``--field-name``);
* rule messages that name other settings, written as templates — ``"requires
  {interactive=true}"`` — and rendered for the reader by a :class:`Vocabulary`:
  ``interactive: true`` in a YAML file, ``interactive=True`` in Python, ``-i`` on the
  command line.

It imports nothing but the standard library, so the format engine and the runtime can
use it without the pipeline.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "IMAGE_KEYWORDS",
    "KEYWORDS",
    "NO_FLAG",
    "YAML",
    "Flag",
    "Vocabulary",
    "cli_vocabulary",
    "flag_of",
    "render",
]


@dataclass(frozen=True, slots=True)
class Flag:
    """How a model field is spelled on the command line (``Annotated`` metadata).

    ``decls``: the flag names (default: ``--`` + the field name with ``-`` for ``_``);
    ``metavar``: the value's name in the help; ``multiple``: the flag is repeated, one
    list item each (otherwise a list is given as one string the field parses, such as a
    comma-separated list or a JSON array); ``path``: the value is a file or a directory;
    ``separator``: how the help shows a list default; ``cli``: False for a setting that
    has no flag.
    """

    decls: tuple[str, ...] = ()
    metavar: str | None = None
    multiple: bool = False
    path: Literal["file", "dir"] | None = None
    separator: str = ","
    cli: bool = True

    def names(self, field: str) -> tuple[str, ...]:
        """The flag names of ``field``."""
        return self.decls or ("--" + field.replace("_", "-"),)


#: Metadata of a setting that has no command-line flag.
NO_FLAG = Flag(cli=False)


def flag_of(metadata: list[object]) -> Flag:
    """The :class:`Flag` among a field's metadata (a default one if there is none)."""
    for item in metadata:
        if isinstance(item, Flag):
            return item
    return Flag()


_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{(\w+)(?:=([^}]*))?\}")


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """Spells a setting the way the reader wrote it.

    ``setting(name, value)`` renders a setting (with the value a rule is about, as a YAML
    scalar such as ``true`` or ``zstdchunked``, or None); ``label(path)`` names the
    setting at a key path (``("images", 0, "format")``), or returns None to use the key
    path itself.
    """

    setting: Callable[[str, str | None], str]
    label: Callable[[tuple[str | int, ...]], str | None] = lambda path: None


def _yaml_setting(name: str, value: str | None) -> str:
    return name if value is None else f"{name}: {value}"


def _python_value(value: str) -> str:
    if value in ("true", "false"):
        return value.capitalize()
    if re.fullmatch(r"-?\d+(\.\d+)?", value):
        return value
    return repr(value)


def _keyword_setting(name: str, value: str | None) -> str:
    return name if value is None else f"{name}={_python_value(value)}"


def _image_keyword_label(path: tuple[str | int, ...]) -> str | None:
    if path[:2] != ("images", 0) or len(path) < 3:
        return None
    text = ""
    for part in path[2:]:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


#: Settings as YAML keys: ``oci: true``.
YAML = Vocabulary(_yaml_setting)
#: Settings as Python keyword arguments: ``oci=True``.
KEYWORDS = Vocabulary(_keyword_setting)
#: As :data:`KEYWORDS`, for a one-image config built from keyword arguments (such as
#: ``esgz.convert(...)``): the settings of ``images[0]`` are named without that prefix
#: (``format``, ``workload.period``).
IMAGE_KEYWORDS = Vocabulary(_keyword_setting, _image_keyword_label)


def render(template: str, vocabulary: Vocabulary) -> str:
    """Fill the ``{name}`` / ``{name=value}`` placeholders of a rule message (``{{`` and
    ``}}`` stand for literal braces)."""

    def fill(match: re.Match[str]) -> str:
        if match.group(1) is None:
            return match.group(0)[0]
        return vocabulary.setting(match.group(1), match.group(2))

    return _PLACEHOLDER.sub(fill, template)


def cli_vocabulary(flags: Mapping[str, str], values: Mapping[tuple[str, str], str]) -> Vocabulary:
    """Settings as flags: ``flags`` maps a setting to its flag, ``values`` a setting with a
    value to a flag of its own (``("format", "zstdchunked")`` → ``--zstdchunked``)."""

    def setting(name: str, value: str | None) -> str:
        if value is not None and (name, value) in values:
            return values[name, value]
        flag = flags.get(name, "--" + name.replace("_", "-"))
        return flag if value in (None, "true") else f"{flag} {value}"

    def label(path: tuple[str | int, ...]) -> str | None:
        names = [part for part in path if isinstance(part, str)]
        return flags.get(names[-1]) if names else None

    return Vocabulary(setting, label)
