"""Names, sizes and magic numbers of the eStargz and zstd:chunked formats."""

from __future__ import annotations

from typing import Final

# The compression levels are declared with the settings' other limits, outside the engine.
from esgz.levels import (  # noqa: F401  (re-exported)
    DEFAULT_GZIP_LEVEL,
    DEFAULT_ZSTD_LEVEL,
    GZIP_LEVEL_RANGE,
    ZSTD_LEVEL_RANGE,
)

TOC_TAR_NAME: Final = "stargz.index.json"
"""Name of the tar entry that holds the TOC JSON in a gzip eStargz blob."""

PREFETCH_LANDMARK: Final = ".prefetch.landmark"
"""Root entry after the prioritized files; everything before it is prefetched."""

NO_PREFETCH_LANDMARK: Final = ".no.prefetch.landmark"
"""Root entry that tells the snapshotter not to prefetch anything."""

LANDMARK_CONTENTS: Final = b"\x0f"
"""The single payload byte of either landmark file."""

LANDMARK_DIGEST: Final = "sha256:dc0e9c3658a1a3ed1ec94274d8b19925c93e1abb7ddba294923ad9bde30f8cb8"
"""sha256 of :data:`LANDMARK_CONTENTS`."""

EMPTY_DIGEST: Final = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
"""sha256 of no bytes: the ``digest`` of an empty regular file."""

DEFAULT_CHUNK_SIZE: Final = 4 * 1024 * 1024
"""Chunk size used when none (or a non-positive one) is given."""


GZIP_FOOTER_SIZE: Final = 51
LEGACY_FOOTER_SIZE: Final = 47
EXTERNAL_TOC_FOOTER_SIZE: Final = 46
ZSTD_FOOTER_SIZE: Final = 40
"""Footer lengths in bytes (zstd: the 40 payload bytes after the skippable-frame header)."""

ZSTD_FRAME_MAGIC: Final = b"\x28\xb5\x2f\xfd"
ZSTD_SKIPPABLE_MAGIC: Final = b"\x50\x2a\x4d\x18"
ZSTD_CHUNKED_MAGIC: Final = b"GnUlInUx"
ZSTD_CHUNKED_MANIFEST_TYPE: Final = 1

GZIP_MAGIC: Final = b"\x1f\x8b\x08"

# Layer descriptor annotations.
TOC_DIGEST_ANNOTATION: Final = "containerd.io/snapshot/stargz/toc.digest"
UNCOMPRESSED_SIZE_ANNOTATION: Final = "io.containers.estargz.uncompressed-size"
ZSTD_MANIFEST_CHECKSUM_ANNOTATION: Final = "io.containers.zstd-chunked.manifest-checksum"
ZSTD_MANIFEST_POSITION_ANNOTATION: Final = "io.containers.zstd-chunked.manifest-position"
