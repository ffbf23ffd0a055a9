"""Build the one-image pipeline config the ``optimize`` and ``convert`` flags describe."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asyncclick as click

from esgz.errors import ConfigError
from esgz.pipeline.config import PipelineConfig, config_from_data
from esgz.pipeline.yamlfile import KeyPath, format_key_path

__all__ = ["FLAG_OF_KEY", "build_config", "conversion_settings", "flag_label"]

#: Config key → the flag that sets it (for messages about flag values).
FLAG_OF_KEY: dict[str, str] = {
    "source": "SRC",
    "target": "DST",
    "format": "--zstdchunked",
    "chunk_size": "--estargz-chunk-size",
    "platforms": "--platform",
    "interactive": "-i",
    "terminal": "-t/--terminal",
    "mount": "--mount",
    "dir": "--cache-dir",
}


def flag_label(path: KeyPath) -> str:
    """``("images", 0, "workload", "dns_nameservers")`` → ``--dns-nameservers``."""
    names = [part for part in path if isinstance(part, str)]
    if not names:
        return format_key_path(path)
    last = names[-1]
    if last in FLAG_OF_KEY:
        return FLAG_OF_KEY[last]
    if last in ("images", "defaults", "workload", "cache"):
        return ""
    return "--" + last.replace("_", "-")


def conversion_settings(flags: Mapping[str, Any]) -> dict[str, Any]:
    """The image settings of the conversion, source and platform flags.

    Raises ``click.UsageError`` for ``--zstdchunked`` without ``--oci``.
    """
    zstd = flags["zstdchunked"]
    if zstd and not flags["oci"]:
        raise click.UsageError("option --zstdchunked must be used in conjunction with --oci")
    return {
        "format": "zstdchunked" if zstd else "estargz",
        "oci": flags["oci"],
        "compression_level": flags[
            "zstdchunked_compression_level" if zstd else "estargz_compression_level"
        ],
        "chunk_size": flags["estargz_chunk_size"],
        "reuse": flags["reuse"],
        "platforms": list(flags["platforms"]),
        "all_platforms": flags["all_platforms"],
        "plain_http": flags["plain_http"],
    }


def build_config(
    source: str,
    target: str,
    *,
    image: Mapping[str, Any],
    cache_dir: Path | None,
    no_cache: bool,
) -> PipelineConfig:
    """A validated one-image config; flag problems become ``click.UsageError`` (exit 2)."""
    data: dict[str, Any] = {
        "images": [{"source": source, "target": target, **image}],
        "cache": {"enabled": not no_cache},
    }
    if cache_dir is not None:
        data["cache"]["dir"] = str(cache_dir)
    try:
        return config_from_data(data, source="", label=flag_label)
    except ConfigError as exc:
        raise click.UsageError(exc.message) from None
