"""The layer formats and their compression levels: the valid ranges and the defaults.

The one place these are declared. The format engine (:mod:`esgz.estargz`) checks
levels against them, the pipeline config takes its range from them and the command line
its flags' ranges and defaults. This module imports nothing, so the config and the CLI
can use it without loading the format engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Literal

__all__ = [
    "DEFAULT_GZIP_LEVEL",
    "DEFAULT_LEVELS",
    "DEFAULT_ZSTD_LEVEL",
    "GZIP_LEVEL_RANGE",
    "LEVEL_RANGES",
    "ZSTD_LEVEL_RANGE",
    "LayerFormat",
]

#: The output layer formats.
LayerFormat = Literal["estargz", "zstdchunked"]

DEFAULT_GZIP_LEVEL: Final = 9
"""gzip level of the reference converter (``gzip.BestCompression``)."""

DEFAULT_ZSTD_LEVEL: Final = 3
"""zstd level of the reference converter (klauspost ``SpeedDefault``)."""

GZIP_LEVEL_RANGE: Final = (-2, 9)
"""Valid gzip levels, inclusive: -2 Huffman only, -1 zlib's default, 0 stored .. 9 best."""

ZSTD_LEVEL_RANGE: Final = (-7, 22)
"""Valid zstd levels, inclusive: negative levels trade ratio for speed (as ``zstd --fast``)."""

#: The valid levels (inclusive) of each layer format (``estargz``, ``zstdchunked``).
LEVEL_RANGES: Mapping[LayerFormat, tuple[int, int]] = MappingProxyType(
    {"estargz": GZIP_LEVEL_RANGE, "zstdchunked": ZSTD_LEVEL_RANGE}
)
#: The level of each layer format when none is given.
DEFAULT_LEVELS: Mapping[LayerFormat, int] = MappingProxyType(
    {"estargz": DEFAULT_GZIP_LEVEL, "zstdchunked": DEFAULT_ZSTD_LEVEL}
)
