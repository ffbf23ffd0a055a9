"""Options of a layer conversion and the description of its result."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from esgz.errors import ConfigError
from esgz.estargz.constants import DEFAULT_CHUNK_SIZE
from esgz.levels import DEFAULT_LEVELS, LEVEL_RANGES, LayerFormat

__all__ = ["DEFAULT_LEVELS", "LEVEL_RANGES", "ConvertOptions", "LayerFormat", "LayerResult"]


@dataclass(frozen=True)
class ConvertOptions:
    """How to convert one layer. Every field but ``workers`` and ``temp_dir`` can change
    the output bytes; ``workers`` and ``temp_dir`` never do.

    * ``format``: ``"estargz"`` (gzip members) or ``"zstdchunked"`` (zstd frames).
    * ``compression_level``: gzip -2..9 (default 9, -1 = library default, -2 = Huffman
      only) or zstd -7..22 (default 3; negative levels are faster), see
      :data:`esgz.levels.LEVEL_RANGES`.
    * ``chunk_size``: files larger than this are split into chunks of this size (> 0).
    * ``prioritized_files``: paths (``a/b``, ``/a/b`` or ``./a/b``) written first, in
      this order, with their parent directories and hardlink targets, followed by
      ``.prefetch.landmark``; without any, ``.no.prefetch.landmark`` comes first.
    * ``strict_prioritized``: a prioritized path missing from the layer is an error
      (:class:`~esgz.errors.FormatError`) instead of being reported in the result.
    * ``workers``: compression threads (default: the CPU count).
    * ``temp_dir``: where the spool file goes (default: the system temp directory).
    """

    format: LayerFormat = "estargz"
    compression_level: int | None = None
    chunk_size: int = DEFAULT_CHUNK_SIZE
    prioritized_files: tuple[str, ...] = ()
    strict_prioritized: bool = False
    workers: int | None = None
    temp_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.format not in ("estargz", "zstdchunked"):
            raise ConfigError(f"unknown layer format {self.format!r}")
        level = self.compression_level
        if level is not None:
            low, high = LEVEL_RANGES[self.format]
            if isinstance(level, bool) or not isinstance(level, int) or not low <= level <= high:
                raise ConfigError(
                    f"compression level {level!r} is out of range for {self.format} ({low}..{high})"
                )
        if isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, int):
            raise ConfigError(f"chunk size must be an integer, got {self.chunk_size!r}")
        if self.chunk_size <= 0:
            raise ConfigError(f"chunk size must be positive, got {self.chunk_size}")
        if isinstance(self.prioritized_files, str):
            raise ConfigError("prioritized_files must be a sequence of paths, not a string")
        if not isinstance(self.prioritized_files, tuple):
            object.__setattr__(self, "prioritized_files", tuple(self.prioritized_files))
        if self.workers is not None and (
            isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1
        ):
            raise ConfigError(f"workers must be a positive integer, got {self.workers!r}")

    @property
    def level(self) -> int:
        """The effective compression level."""
        if self.compression_level is not None:
            return self.compression_level
        return DEFAULT_LEVELS[self.format]

    @property
    def worker_count(self) -> int:
        """The effective number of compression threads."""
        return self.workers if self.workers is not None else max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class LayerResult:
    """What a conversion produced.

    ``digest``/``size`` describe the output blob, ``diff_id``/``uncompressed_size`` its
    uncompressed tar stream, ``toc_digest`` the TOC JSON. ``annotations`` are the layer
    descriptor annotations to add (TOC digest, uncompressed size, and for zstd:chunked the
    manifest checksum and position). ``missing_prioritized`` lists the prioritized paths
    that are not in the layer, in the order given. ``source_compression`` is what the
    input was (``gzip``, ``zstd`` or ``tar``).
    """

    format: LayerFormat
    digest: str
    size: int
    diff_id: str
    toc_digest: str
    uncompressed_size: int
    annotations: dict[str, str] = field(default_factory=dict)
    missing_prioritized: tuple[str, ...] = ()
    source_compression: str = "tar"
