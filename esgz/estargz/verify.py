"""TOC verification exactly as the Go reader's ``VerifyTOC`` / ``Verifiers`` do it.

:func:`verify_toc` checks the TOC digest against the expected one, then walks the
``reg`` and ``chunk`` entries in TOC order and builds the map from compressed offset to
the digest that the bytes decoded from that offset must have:

* an offset may be registered once (empty regular files are checked, never registered);
* ``digest`` / ``chunkDigest`` must parse as ``<algorithm>:<hex>`` (sha256, sha384, sha512,
  lowercase hex of the right length, as ``go-digest`` requires);
* every non-empty ``reg`` and every ``chunk`` needs a ``chunkDigest``, unless the TOC has no
  ``chunk`` entry at all and every non-empty ``reg`` has a ``digest`` (then those are used).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from esgz.errors import VerificationError
from esgz.estargz.toc import TOC
from esgz.estargz.tocindex import Chunk

__all__ = [
    "DIGEST_ALGORITHMS",
    "ChunkVerifier",
    "check_digest",
    "parse_digest",
    "verify_toc",
]

DIGEST_ALGORITHMS: Final = {"sha256": 64, "sha384": 96, "sha512": 128}
"""Algorithms ``go-digest`` accepts, with the length of their hex encoding."""

_LOWER_HEX: Final = re.compile(r"[a-f0-9]+")


def parse_digest(text: str) -> tuple[str, str]:
    """``(algorithm, hex)`` of a digest string; ValueError saying why it does not parse."""
    algorithm, sep, encoded = text.partition(":")
    if not sep or not algorithm or not encoded:
        raise ValueError(f"invalid digest {text!r}: expected <algorithm>:<hex>")
    length = DIGEST_ALGORITHMS.get(algorithm)
    if length is None:
        raise ValueError(f"invalid digest {text!r}: unsupported algorithm {algorithm!r}")
    if len(encoded) != length or _LOWER_HEX.fullmatch(encoded) is None:
        raise ValueError(f"invalid digest {text!r}: needs {length} lowercase hex characters")
    return algorithm, encoded


def check_digest(data: bytes, expected: str, what: str) -> None:
    """Raise VerificationError unless ``data`` hashes to ``expected``."""
    try:
        algorithm, encoded = parse_digest(expected)
    except ValueError as err:
        raise VerificationError(f"{what}: {err}") from None
    actual = hashlib.new(algorithm, data).hexdigest()
    if actual != encoded:
        raise VerificationError(f"{what}: content digest {algorithm}:{actual}, TOC says {expected}")


@dataclass(frozen=True, slots=True)
class ChunkVerifier:
    """The digest every chunk must have, keyed by its compressed offset (Go's verifier)."""

    digests: Mapping[int, str]

    def digest_for(self, chunk: Chunk) -> str:
        """The expected digest of ``chunk``; VerificationError if none was registered."""
        digest = self.digests.get(chunk.offset)
        if digest is None:
            raise VerificationError(
                f"no digest is registered for the chunk at offset {chunk.offset}"
            )
        return digest


def verify_toc(toc: TOC, toc_digest: str, expected_toc_digest: str | None) -> ChunkVerifier:
    """Go's ``VerifyTOC``: check the TOC digest (unless ``None``) and collect chunk digests."""
    if expected_toc_digest is not None and toc_digest != expected_toc_digest:
        raise VerificationError(
            f"TOC digest {toc_digest} does not match the expected {expected_toc_digest}"
        )
    chunk_digests: dict[int, str] = {}
    reg_digests: dict[int, str] = {}
    chunk_digests_incomplete = False
    reg_digests_incomplete = False
    contains_chunk = False
    for entry in toc.entries:
        if entry.type not in ("reg", "chunk"):
            continue
        if entry.offset in chunk_digests or entry.offset in reg_digests:
            raise VerificationError(f"offset {entry.offset} found twice in the TOC")
        if entry.type == "reg":
            if entry.size == 0:
                continue
            if entry.digest:
                _parse_or_fail(entry.digest, "regular file digest")
                reg_digests[entry.offset] = entry.digest
            else:
                reg_digests_incomplete = True
        else:
            contains_chunk = True
        if entry.chunk_digest:
            _parse_or_fail(entry.chunk_digest, "chunk digest")
            chunk_digests[entry.offset] = entry.chunk_digest
        else:
            chunk_digests_incomplete = True
    if chunk_digests_incomplete:
        if not contains_chunk and not reg_digests_incomplete:
            return ChunkVerifier(reg_digests)
        raise VerificationError("some chunkDigest not found in the TOC JSON")
    return ChunkVerifier(chunk_digests)


def _parse_or_fail(text: str, what: str) -> None:
    try:
        parse_digest(text)
    except ValueError as err:
        raise VerificationError(f"failed to parse {what}: {err}") from None
