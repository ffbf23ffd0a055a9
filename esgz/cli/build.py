"""The one-image pipeline config that the ``optimize`` and ``convert`` flags describe.

The flags come from the settings models (see :mod:`esgz.cli.options`); the only ones
spelled here are those that do not map one to one onto a field: ``--zstdchunked`` /
``--estargz`` (the ``format`` field) and the two level flags (``compression_level``, with
the ranges and defaults of :data:`esgz.levels.LEVEL_RANGES`). The config model
checks everything, cross-field rules included; its errors name the flags and become
usage errors (exit 2) before any network or disk work.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import asyncclick as click

from esgz.cli.options import (
    SettingFlag,
    flag_fields,
    given_settings,
    setting_flags,
    was_given,
    with_flags,
)
from esgz.errors import ConfigError
from esgz.levels import DEFAULT_LEVELS, LEVEL_RANGES, LayerFormat
from esgz.pipeline.config import ImageSpec, PipelineConfig, config_from_data
from esgz.runtime.workload import WorkloadOptions
from esgz.spelling import Vocabulary, cli_vocabulary

__all__ = [
    "COMMON_FIELDS",
    "CONVERT_FIELDS",
    "LEVEL_FLAGS",
    "OPTIMIZE_FIELDS",
    "WORKLOAD_FIELDS",
    "CommandFlags",
    "build_config",
    "format_options",
]

F = TypeVar("F", bound=Callable[..., Any])

#: Image settings with a flag on both commands.
COMMON_FIELDS = ("oci", "chunk_size", "reuse", "platforms", "all_platforms", "plain_http")
#: Image settings with a flag on ``optimize`` only.
OPTIMIZE_FIELDS = ("no_optimize", "no_emulation", "record_out", "prefetch_list")
#: Image settings with a flag on ``convert`` only.
CONVERT_FIELDS = ("record_in", "prefetch_list")
#: Workload settings (flags of ``optimize``).
WORKLOAD_FIELDS = tuple(flag_fields(WorkloadOptions))
#: The compression level flag of each format.
LEVEL_FLAGS: dict[LayerFormat, str] = {
    "estargz": "--estargz-compression-level",
    "zstdchunked": "--zstdchunked-compression-level",
}
_FORMAT_NAMES: dict[LayerFormat, str] = {"estargz": "eStargz (gzip)", "zstdchunked": "zstd:chunked"}


def format_options(*, estargz_flag: bool) -> Callable[[F], F]:
    """``--zstdchunked`` (and ``--estargz``) and the compression level of each format."""
    options = []
    if estargz_flag:
        options.append(
            click.option(
                "--estargz",
                is_flag=True,
                help="Produce eStargz layers (the default unless --zstdchunked).",
            )
        )
    options.append(
        click.option(
            "--zstdchunked",
            is_flag=True,
            help="Produce zstd:chunked layers instead of eStargz (requires --oci).",
        )
    )
    for fmt, flag in LEVEL_FLAGS.items():
        low, high = LEVEL_RANGES[fmt]
        options.append(
            click.option(
                flag,
                type=click.IntRange(low, high),
                default=DEFAULT_LEVELS[fmt],
                show_default=True,
                help=f"Compression level of {_FORMAT_NAMES[fmt]} layers.",
            )
        )

    def decorate(function: F) -> F:
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


class CommandFlags:
    """The setting flags of one command: its options, and its flag values as a config."""

    def __init__(self, image_fields: Sequence[str], workload_fields: Sequence[str]) -> None:
        self.image = setting_flags(ImageSpec, image_fields)
        self.workload = setting_flags(WorkloadOptions, workload_fields)

    @property
    def all(self) -> list[SettingFlag]:
        """Every generated flag, image settings first."""
        return [*self.image, *self.workload]

    def options(self) -> Callable[[F], F]:
        """Decorator adding the generated options."""
        return with_flags(self.all)

    def image_settings(self, flags: Mapping[str, Any]) -> dict[str, Any]:
        """The image settings (workload included) of the given flag values."""
        image = given_settings(self.image, flags)
        fmt: LayerFormat = "zstdchunked" if flags["zstdchunked"] else "estargz"
        if flags["zstdchunked"]:
            image["format"] = fmt
        level = LEVEL_FLAGS[fmt].removeprefix("--").replace("-", "_")
        if was_given(level):
            image["compression_level"] = flags[level]
        workload = given_settings(self.workload, flags)
        if workload:
            image["workload"] = workload
        return image

    def vocabulary(self, flags: Mapping[str, Any]) -> Vocabulary:
        """Settings spelled as this command's flags."""
        fmt: LayerFormat = "zstdchunked" if flags["zstdchunked"] else "estargz"
        names = {flag.field: flag.label for flag in self.all}
        names |= {
            "source": "SRC",
            "target": "DST",
            "format": "--zstdchunked",
            "compression_level": LEVEL_FLAGS[fmt],
            "dir": "--cache-dir",
            "enabled": "--no-cache",
            "registry": "--cache-registry",
        }
        return cli_vocabulary(names, {("format", "zstdchunked"): "--zstdchunked"})


def build_config(
    source: str,
    target: str,
    *,
    image: Mapping[str, Any],
    cache_dir: Path | None,
    no_cache: bool,
    vocabulary: Vocabulary,
    cache_registry: str | None = None,
) -> PipelineConfig:
    """A validated one-image config; its problems become ``click.UsageError`` (exit 2)
    naming the flags."""
    data: dict[str, Any] = {
        "images": [{"source": source, "target": target, **image}],
        "cache": {"enabled": not no_cache},
    }
    if cache_dir is not None:
        data["cache"]["dir"] = str(cache_dir)
    if cache_registry is not None:
        data["cache"]["registry"] = cache_registry
    try:
        return config_from_data(data, source="", vocabulary=vocabulary)
    except ConfigError as exc:
        raise click.UsageError(exc.message) from None
