"""Options of the ``esgz`` commands (asyncclick decorators).

The conversion and workload flags are built from the fields of the settings models
(:class:`~esgz.pipeline.config.ImageSpec`, :class:`~esgz.runtime.workload.WorkloadOptions`):
a field's :class:`~esgz.spelling.Flag` metadata gives the flag names, its description the
help, its type and ``ge``/``le`` the value type and range, its default the shown default.
A flag the user leaves out is not passed on, so the model's default applies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin

import annotated_types
import asyncclick as click
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from esgz.pipeline.config import CacheConfig
from esgz.spelling import Flag, flag_of

__all__ = [
    "DIR",
    "FILE",
    "SettingFlag",
    "flag_fields",
    "given_settings",
    "image_options",
    "output_options",
    "setting_flag",
    "setting_flags",
    "was_given",
    "with_flags",
]

F = TypeVar("F", bound=Callable[..., Any])


class _PathType(click.ParamType[Path]):
    """A path argument, converted to :class:`Path` without touching the file system.

    (``click.Path`` stats the path while parsing, a blocking call in the event loop;
    the commands check files when they use them.)
    """

    def __init__(self, metavar: str) -> None:
        self.name = metavar.lower()
        self._metavar = metavar

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str:
        """Shown in help texts."""
        return self._metavar

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        """The value as a Path."""
        if isinstance(value, Path):
            return value
        if not value:
            self.fail("a path is required", param, ctx)
        return Path(value)


#: A file path flag value.
FILE = _PathType("FILE")
#: A directory path flag value.
DIR = _PathType("DIR")


def _apply(function: F, decorators: list[Callable[[F], F]]) -> F:
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


def _unwrap_optional(annotation: Any) -> Any:
    args = [arg for arg in get_args(annotation) if arg is not type(None)]
    if get_origin(annotation) in (Union, UnionType) and len(args) == 1:
        return args[0]
    return annotation


def _bounds(info: FieldInfo) -> tuple[Any, Any]:
    low = high = None
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            low = item.ge
        elif isinstance(item, annotated_types.Le):
            high = item.le
    return low, high


def _shown_default(info: FieldInfo, flag: Flag) -> str | None:
    """The model's default as the help shows it (None: nothing to show)."""
    default = info.get_default(call_default_factory=True)
    if default is None or isinstance(default, bool):
        return None
    if isinstance(default, list):
        return flag.separator.join(str(item) for item in default) or None
    return str(default)


@dataclass(frozen=True, slots=True)
class SettingFlag:
    """The command-line flag built from one model field."""

    field: str
    names: tuple[str, ...]
    is_flag: bool
    multiple: bool
    type: click.ParamType[Any] | None
    default: str | None
    help: str
    metavar: str | None

    @property
    def label(self) -> str:
        """How error messages name the flag (``-t/--terminal``)."""
        if not self.names[0].startswith("--"):
            return "/".join(self.names[:2])
        return self.names[0]

    def option(self) -> Callable[[F], F]:
        """The click option (its default is the model's, shown in the help)."""
        if self.is_flag:
            return click.option(*self.names, self.field, is_flag=True, help=self.help)
        if self.multiple:
            return click.option(
                *self.names,
                self.field,
                multiple=True,
                type=self.type,
                metavar=self.metavar,
                help=self.help,
            )
        return click.option(
            *self.names,
            self.field,
            type=self.type,
            default=self.default,
            metavar=self.metavar,
            show_default=self.default is not None,
            help=self.help,
        )


def setting_flag(model: type[BaseModel], name: str) -> SettingFlag:
    """The flag of field ``name`` of ``model``: names, help (the field's description),
    type and range (its annotation and ``ge``/``le``) and shown default (its default)."""
    info = model.model_fields[name]
    flag = flag_of(info.metadata)
    if not flag.cli:
        raise ValueError(f"{model.__name__}.{name} has no flag")
    annotation = _unwrap_optional(info.annotation)
    origin = get_origin(annotation)
    param_type: click.ParamType[Any] | None = None
    is_flag = annotation is bool
    if is_flag and info.default is not False:
        raise ValueError(f"{model.__name__}.{name}: an on/off flag needs the default False")
    if annotation is int:
        low, high = _bounds(info)
        param_type = click.IntRange(low, high)
    elif annotation is float:
        low, high = _bounds(info)
        param_type = click.FloatRange(low, high)
    elif annotation is Path:
        param_type = DIR if flag.path == "dir" else FILE
    elif flag.multiple and origin is list and get_args(annotation)[0] is Path:
        param_type = FILE
    return SettingFlag(
        field=name,
        names=flag.names(name),
        is_flag=is_flag,
        multiple=flag.multiple,
        type=param_type,
        default=_shown_default(info, flag),
        help=info.description or "",
        metavar=flag.metavar,
    )


def setting_flags(model: type[BaseModel], names: Sequence[str]) -> list[SettingFlag]:
    """The flags of the fields ``names`` of ``model``, in that order."""
    return [setting_flag(model, name) for name in names]


def flag_fields(model: type[BaseModel], *, exclude: Sequence[str] = ()) -> list[str]:
    """The fields of ``model`` that have a flag, in declaration order."""
    return [
        name
        for name, info in model.model_fields.items()
        if flag_of(info.metadata).cli and name not in exclude
    ]


def with_flags(flags: Sequence[SettingFlag]) -> Callable[[F], F]:
    """A decorator adding the options of ``flags``."""

    def decorate(function: F) -> F:
        return _apply(function, [flag.option() for flag in flags])

    return decorate


def was_given(name: str) -> bool:
    """Whether the user gave the option ``name`` of the running command."""
    source = click.get_current_context().get_parameter_source(name)
    return source is not None and source is not click.ParameterSource.DEFAULT


def given_settings(flags: Sequence[SettingFlag], values: Mapping[str, Any]) -> dict[str, Any]:
    """The settings the user gave on the command line (flags left out keep the model's
    defaults): ``{field: value}``, lists as lists, paths as strings."""
    given: dict[str, Any] = {}
    for flag in flags:
        value = values[flag.field]
        if not was_given(flag.field):
            continue
        if isinstance(value, tuple):
            value = [str(v) if isinstance(v, Path) else v for v in value]
        elif isinstance(value, Path):
            value = str(value)
        given[flag.field] = value
    return given


def output_options(function: F) -> F:
    """``--cache-dir``, ``--no-cache``, ``--cache-registry``, ``--log-format``, ``--quiet``."""
    return _apply(
        function,
        [
            click.option(
                "--cache-dir",
                type=DIR,
                default=None,
                help="Blob and conversion cache directory. Default: $XDG_CACHE_HOME/esgz.",
            ),
            click.option(
                "--no-cache",
                is_flag=True,
                help="Do not read or write the persistent cache (use a temporary one).",
            ),
            click.option(
                "--cache-registry",
                metavar="REPO",
                default=None,
                help=CacheConfig.model_fields["registry"].description,
            ),
            click.option(
                "--log-format",
                type=click.Choice(["text", "json"]),
                default="text",
                show_default=True,
                help="text: progress bars on a terminal, log lines otherwise;"
                " json: one JSON object per event on stdout (for CI).",
            ),
            click.option(
                "-q",
                "--quiet",
                is_flag=True,
                help="Print only errors and the resulting digests.",
            ),
        ],
    )


def image_options(function: F) -> F:
    """``--plain-http``, ``--platform`` (repeatable) and ``--cache-dir`` of inspect and verify."""
    return _apply(
        function,
        [
            click.option("--plain-http", is_flag=True, help="Allow an http:// registry reference."),
            click.option(
                "--platform",
                "platforms",
                multiple=True,
                metavar="PLATFORM",
                help="Only this platform's manifest (repeatable). Default: all.",
            ),
            click.option(
                "--cache-dir",
                type=DIR,
                default=None,
                help="Blob cache to fetch layers into. Default: $XDG_CACHE_HOME/esgz.",
            ),
        ],
    )
