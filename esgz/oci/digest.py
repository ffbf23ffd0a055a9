"""Content digests: parse and validate ``<algorithm>:<hex>`` strings, hash bytes and streams.

esgz writes ``sha256`` digests everywhere; ``sha384`` and ``sha512`` digests are accepted
when parsing (registries and layouts may hold them) and can be verified. A digest string is
valid when its algorithm is known and its hex part is lowercase and of the algorithm's
length, as the OCI image spec and the Distribution ``digest`` package require.

:class:`DigestingWriter` wraps a binary sink, hashes and counts everything written
through it, and :meth:`DigestingWriter.verify` raises :class:`~esgz.errors.VerificationError`
when the content is not what the caller expected.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import anyio.to_thread

from esgz.errors import VerificationError

__all__ = [
    "ALGORITHMS",
    "DigestingWriter",
    "ParsedDigest",
    "hasher_for",
    "is_digest",
    "parse_digest",
    "sha256_of",
    "sha256_of_async_chunks",
    "sha256_of_chunks",
    "sha256_of_file",
    "validate_digest",
]

#: Known digest algorithms and the length of their lowercase hex encoding.
ALGORITHMS: dict[str, int] = {"sha256": 64, "sha384": 96, "sha512": 128}

_DIGEST_RE = re.compile(r"^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([0-9a-fA-F]+)$")
_READ_SIZE = 1 << 20


@dataclass(frozen=True, slots=True)
class ParsedDigest:
    """A validated digest split into its algorithm and hex parts."""

    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def parse_digest(text: str) -> ParsedDigest:
    """Split ``text`` into algorithm and hex; ValueError naming the problem if invalid.

    The error is a plain :class:`ValueError` so that callers can wrap it in the error
    class that fits their context (reference, manifest, layout).
    """
    match = _DIGEST_RE.match(text)
    if match is None:
        raise ValueError(f"invalid digest {text!r}: expected <algorithm>:<hex>")
    algorithm, hex_part = match.groups()
    if algorithm not in ALGORITHMS:
        raise ValueError(f"invalid digest {text!r}: unsupported algorithm {algorithm!r}")
    expected_length = ALGORITHMS[algorithm]
    if len(hex_part) != expected_length:
        raise ValueError(
            f"invalid digest {text!r}: {algorithm} needs {expected_length} hex characters,"
            f" got {len(hex_part)}"
        )
    if hex_part != hex_part.lower():
        raise ValueError(f"invalid digest {text!r}: hex must be lowercase")
    return ParsedDigest(algorithm, hex_part)


def validate_digest(text: str) -> str:
    """Return ``text`` unchanged if it is a valid digest; ValueError otherwise."""
    parse_digest(text)
    return text


def is_digest(text: str) -> bool:
    """Whether ``text`` is a valid digest string."""
    try:
        parse_digest(text)
    except ValueError:
        return False
    return True


class _Hash(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def hexdigest(self) -> str: ...


def hasher_for(digest: str) -> _Hash:
    """A fresh hashlib object for the algorithm of ``digest`` (which must be valid)."""
    return hashlib.new(parse_digest(digest).algorithm)


def sha256_of(data: bytes) -> str:
    """The ``sha256:<hex>`` digest of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_of_file(stream: BinaryIO) -> tuple[str, int]:
    """Read ``stream`` to its end in 1 MiB reads; return ``(sha256 digest, byte count)``.

    Blocking: call it from a worker thread in async code.
    """
    hasher = hashlib.sha256()
    size = 0
    while chunk := stream.read(_READ_SIZE):
        hasher.update(chunk)
        size += len(chunk)
    return "sha256:" + hasher.hexdigest(), size


def sha256_of_chunks(chunks: Iterable[bytes]) -> tuple[str, int]:
    """The ``(sha256 digest, byte count)`` of the concatenation of ``chunks``."""
    hasher = hashlib.sha256()
    size = 0
    for chunk in chunks:
        hasher.update(chunk)
        size += len(chunk)
    return "sha256:" + hasher.hexdigest(), size


async def sha256_of_async_chunks(chunks: AsyncIterable[bytes]) -> tuple[str, int]:
    """The ``(sha256 digest, byte count)`` of an async stream; hashing runs in a thread."""
    hasher = hashlib.sha256()
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        await anyio.to_thread.run_sync(hasher.update, chunk)
    return "sha256:" + hasher.hexdigest(), size


class _Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...


class DigestingWriter:
    """Forward writes to ``sink`` (if any) while hashing and counting them.

    ``algorithm`` is the digest algorithm to compute; give ``expected_digest`` instead to
    hash with that digest's algorithm. :meth:`verify` checks the result against the
    expected digest and size given here or passed to it.
    """

    def __init__(
        self,
        sink: _Sink | None = None,
        *,
        algorithm: str = "sha256",
        expected_digest: str | None = None,
        expected_size: int | None = None,
    ) -> None:
        if expected_digest is not None:
            algorithm = parse_digest(expected_digest).algorithm
        elif algorithm not in ALGORITHMS:
            raise ValueError(f"unsupported digest algorithm {algorithm!r}")
        self._sink = sink
        self._hasher: _Hash = hashlib.new(algorithm)
        self._algorithm = algorithm
        self.expected_digest = expected_digest
        self.expected_size = expected_size
        self.size = 0

    def write(self, data: bytes) -> int:
        """Hash, count and forward ``data``; fail early once past the expected size."""
        self._hasher.update(data)
        self.size += len(data)
        if self.expected_size is not None and self.size > self.expected_size:
            raise VerificationError(
                f"content is larger than the expected {self.expected_size} bytes",
                layer=self.expected_digest,
            )
        if self._sink is not None:
            self._sink.write(data)
        return len(data)

    @property
    def digest(self) -> str:
        """The digest of everything written so far."""
        return f"{self._algorithm}:{self._hasher.hexdigest()}"

    def verify(self, expected_digest: str | None = None, expected_size: int | None = None) -> str:
        """Check digest and size against the expected values; return the digest.

        Arguments override the values given to the constructor; a value left ``None``
        in both places is not checked.
        """
        want_digest = expected_digest if expected_digest is not None else self.expected_digest
        want_size = expected_size if expected_size is not None else self.expected_size
        if want_size is not None and self.size != want_size:
            raise VerificationError(
                f"size mismatch: expected {want_size} bytes, got {self.size}",
                layer=want_digest,
            )
        actual = self.digest
        if want_digest is not None and actual != want_digest:
            raise VerificationError(
                f"digest mismatch: expected {want_digest}, got {actual}", layer=want_digest
            )
        return actual
