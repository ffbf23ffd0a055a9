from __future__ import annotations

import hashlib
import io
from collections.abc import AsyncIterator

import pytest

from esgz.errors import VerificationError
from esgz.oci.digest import (
    DigestingWriter,
    hasher_for,
    is_digest,
    parse_digest,
    sha256_of,
    sha256_of_async_chunks,
    sha256_of_chunks,
    sha256_of_file,
    validate_digest,
)

DATA = b"some blob content\n" * 1000
DATA_SHA256 = "sha256:" + hashlib.sha256(DATA).hexdigest()
DATA_SHA512 = "sha512:" + hashlib.sha512(DATA).hexdigest()


def test_parse_valid_digests() -> None:
    parsed = parse_digest(DATA_SHA256)
    assert (parsed.algorithm, parsed.hex, str(parsed)) == (
        "sha256",
        DATA_SHA256[7:],
        DATA_SHA256,
    )
    assert parse_digest(DATA_SHA512).algorithm == "sha512"
    assert validate_digest(DATA_SHA256) == DATA_SHA256
    assert is_digest(DATA_SHA512)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "expected <algorithm>:<hex>"),
        ("sha256", "expected <algorithm>:<hex>"),
        ("sha256:", "expected <algorithm>:<hex>"),
        ("sha256:" + "a" * 63, "64 hex"),
        ("sha256:" + "a" * 65, "64 hex"),
        ("sha256:" + "A" * 64, "lowercase"),
        ("sha256:" + "g" * 64, "expected <algorithm>:<hex>"),
        ("md5:" + "a" * 32, "unsupported algorithm"),
        ("sha512:" + "a" * 64, "128 hex"),
        (" sha256:" + "a" * 64, "expected <algorithm>:<hex>"),
    ],
)
def test_parse_invalid_digests(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_digest(text)
    assert not is_digest(text)


def test_hash_helpers_agree_with_hashlib() -> None:
    assert sha256_of(DATA) == DATA_SHA256
    assert sha256_of_file(io.BytesIO(DATA)) == (DATA_SHA256, len(DATA))
    chunks = [DATA[i : i + 777] for i in range(0, len(DATA), 777)]
    assert sha256_of_chunks(chunks) == (DATA_SHA256, len(DATA))
    hasher = hasher_for(DATA_SHA512)
    hasher.update(DATA)
    assert "sha512:" + hasher.hexdigest() == DATA_SHA512


def test_digesting_writer_forwards_and_verifies() -> None:
    sink = io.BytesIO()
    writer = DigestingWriter(sink, expected_digest=DATA_SHA256, expected_size=len(DATA))
    for i in range(0, len(DATA), 1000):
        writer.write(DATA[i : i + 1000])
    assert writer.verify() == DATA_SHA256
    assert sink.getvalue() == DATA
    assert writer.size == len(DATA)


def test_digesting_writer_uses_the_expected_algorithm() -> None:
    writer = DigestingWriter(expected_digest=DATA_SHA512)
    writer.write(DATA)
    assert writer.verify() == DATA_SHA512


def test_digesting_writer_rejects_wrong_digest() -> None:
    writer = DigestingWriter(expected_digest=DATA_SHA256)
    writer.write(DATA[:-1])
    with pytest.raises(VerificationError, match="digest mismatch"):
        writer.verify()


def test_digesting_writer_rejects_wrong_size_at_verify_and_when_too_large() -> None:
    short = DigestingWriter(expected_size=len(DATA))
    short.write(DATA[:10])
    with pytest.raises(VerificationError, match="size mismatch"):
        short.verify()
    sink = io.BytesIO()
    large = DigestingWriter(sink, expected_size=5)
    with pytest.raises(VerificationError, match="larger than the expected 5 bytes"):
        large.write(b"123456")
    assert sink.getvalue() == b""


def test_digesting_writer_checks_arguments_given_to_verify() -> None:
    writer = DigestingWriter()
    writer.write(DATA)
    assert writer.verify(DATA_SHA256, len(DATA)) == DATA_SHA256
    with pytest.raises(VerificationError):
        writer.verify(sha256_of(b"other"))
    with pytest.raises(ValueError, match="unsupported"):
        DigestingWriter(algorithm="md5")


@pytest.mark.anyio
async def test_sha256_of_async_chunks() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(DATA), 4096):
            yield DATA[i : i + 4096]

    assert await sha256_of_async_chunks(chunks()) == (DATA_SHA256, len(DATA))
