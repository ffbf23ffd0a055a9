"""The fetch stage's hash of a blob's uncompressed stream."""

from __future__ import annotations

import gzip
import hashlib
import os
import sys
import time
from pathlib import Path
from types import FrameType

import anyio
import pytest

from esgz.errors import FormatError
from esgz.stages.fetch import uncompressed_digest, uncompressed_digest_sync

DATA = os.urandom(3 << 20)


@pytest.fixture
def layer(tmp_path: Path) -> Path:
    path = tmp_path / "layer.gz"
    path.write_bytes(gzip.compress(DATA, compresslevel=1, mtime=0))
    return path


@pytest.fixture
def big_layer(tmp_path: Path) -> Path:
    path = tmp_path / "big.gz"
    path.write_bytes(gzip.compress(bytes(256 << 20), compresslevel=1, mtime=0))
    return path


def test_digest_of_a_plain_or_truncated_stream(tmp_path: Path, layer: Path) -> None:
    plain = tmp_path / "layer.tar"
    plain.write_bytes(DATA)
    assert uncompressed_digest_sync(plain) == "sha256:" + hashlib.sha256(DATA).hexdigest()
    layer.write_bytes(layer.read_bytes()[: 1 << 19])
    with pytest.raises(FormatError, match="truncated"):
        uncompressed_digest_sync(layer)


@pytest.mark.anyio
async def test_digest_of_the_uncompressed_stream(layer: Path) -> None:
    assert await uncompressed_digest(layer) == "sha256:" + hashlib.sha256(DATA).hexdigest()
    assert await uncompressed_digest(layer, "sha512") == (
        "sha512:" + hashlib.sha512(DATA).hexdigest()
    )


def hashing_threads() -> list[int]:
    """Threads currently inside uncompressed_digest_sync."""
    found = []
    for ident, frame in sys._current_frames().items():
        current: FrameType | None = frame
        while current is not None:
            if current.f_code.co_name == "uncompressed_digest_sync":
                found.append(ident)
                break
            current = current.f_back
    return found


@pytest.mark.anyio
async def test_cancelling_stops_the_thread(big_layer: Path) -> None:
    started = time.monotonic()
    with anyio.move_on_after(0.02):
        await uncompressed_digest(big_layer)
    assert time.monotonic() - started < 5
    assert hashing_threads() == []
    # Cancelled before its thread even runs: returns at once too.
    with anyio.CancelScope() as scope:
        scope.cancel()
        await uncompressed_digest(big_layer)
    assert hashing_threads() == []
