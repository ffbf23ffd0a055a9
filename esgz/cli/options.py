"""Option groups shared by the ``esgz`` commands (asyncclick decorators)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncclick as click

__all__ = [
    "DIR",
    "FILE",
    "conversion_options",
    "image_options",
    "output_options",
    "platform_options",
    "source_options",
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


def source_options(function: F) -> F:
    """``--plain-http`` and ``--reuse``."""
    return _apply(
        function,
        [
            click.option(
                "--plain-http",
                is_flag=True,
                help="Allow plain-HTTP registries; name them with an http:// prefix"
                " (http://host:5000/repo:tag).",
            ),
            click.option(
                "--reuse",
                is_flag=True,
                help="Pass layers that are already valid eStargz / zstd:chunked (and were not"
                " accessed by the workload) through without converting them.",
            ),
        ],
    )


def platform_options(function: F) -> F:
    """``--platform`` (repeatable) and ``--all-platforms`` (alias ``--all-platform``)."""
    return _apply(
        function,
        [
            click.option(
                "--platform",
                "platforms",
                multiple=True,
                metavar="PLATFORM",
                help="Convert the image of this platform (<os>|<arch>|<os>/<arch>[/<variant>]);"
                " repeatable. Default: the host platform.",
            ),
            click.option(
                "--all-platforms",
                "--all-platform",
                "all_platforms",
                is_flag=True,
                help="Convert the images of all platforms (only the host's is optimized).",
            ),
        ],
    )


def conversion_options(function: F) -> F:
    """Output format: ``--oci``, eStargz / zstd:chunked levels and chunk size."""
    return _apply(
        function,
        [
            click.option(
                "--oci",
                is_flag=True,
                help="Convert Docker media types to OCI (keeps the TOC-digest annotations).",
            ),
            click.option(
                "--estargz-compression-level",
                type=click.IntRange(-2, 9),
                default=9,
                show_default=True,
                help="gzip compression level of eStargz layers.",
            ),
            click.option(
                "--estargz-chunk-size",
                type=click.IntRange(min=0),
                default=0,
                show_default=True,
                help="Chunk size of large files in bytes (0: 4 MiB).",
            ),
            click.option(
                "--zstdchunked",
                is_flag=True,
                help="Produce zstd:chunked layers instead of eStargz (requires --oci).",
            ),
            click.option(
                "--zstdchunked-compression-level",
                type=click.IntRange(-7, 22),
                default=3,
                show_default=True,
                help="zstd compression level of zstd:chunked layers.",
            ),
        ],
    )


def output_options(function: F) -> F:
    """``--cache-dir``, ``--no-cache``, ``--log-format``, ``--quiet``."""
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
