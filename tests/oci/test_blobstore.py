from __future__ import annotations

import hashlib
import os
from pathlib import Path

import anyio
import pytest

from esgz.errors import VerificationError
from esgz.oci.blobstore import BlobStore

pytestmark = pytest.mark.anyio


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob(".*") if p.is_file())


async def test_ingest_verifies_and_stores_under_digest(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    data = os.urandom(3 * 1024 * 1024 + 7)
    digest = _sha256(data)
    async with store.ingest(digest, len(data)) as blob:
        for start in range(0, len(data), 65536):
            await blob.write(data[start : start + 65536])
    assert (blob.digest, blob.size) == (digest, len(data))
    assert store.path(digest) == tmp_path / "store" / "sha256" / digest[7:]
    assert store.path(digest).read_bytes() == data
    assert await store.has(digest)
    assert await store.size_of(digest) == len(data)
    assert _leftovers(tmp_path) == []


async def test_ingest_without_expected_digest_uses_computed_one(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    digest = await store.put_bytes(b"hello")
    assert digest == _sha256(b"hello")
    assert store.path(digest).read_bytes() == b"hello"


@pytest.mark.parametrize(
    ("expected_digest", "expected_size", "problem"),
    [
        (_sha256(b"something else"), None, "digest mismatch"),
        (None, 4, "larger than the expected 4 bytes"),
        (None, 100, "size mismatch"),
    ],
)
async def test_mismatch_stores_nothing(
    tmp_path: Path, expected_digest: str | None, expected_size: int | None, problem: str
) -> None:
    store = BlobStore(tmp_path)
    with pytest.raises(VerificationError, match=problem):
        async with store.ingest(expected_digest, expected_size) as blob:
            await blob.write(b"hello")
    assert not await store.has(_sha256(b"hello"))
    if expected_digest:
        assert not await store.has(expected_digest)
    assert _leftovers(tmp_path) == []
    assert await store.blobs() == []


async def test_error_in_body_removes_temp_file(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)

    async def failing_source() -> None:
        async with store.ingest() as blob:
            await blob.write(b"partial")
            assert _leftovers(tmp_path)  # the temp file exists while writing
            raise RuntimeError("source failed")

    with pytest.raises(RuntimeError, match="source failed"):
        await failing_source()
    assert _leftovers(tmp_path) == []
    assert await store.blobs() == []


async def test_cancellation_removes_temp_file(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    started = anyio.Event()

    async def slow_ingest() -> None:
        async with store.ingest() as blob:
            await blob.write(b"partial")
            started.set()
            await anyio.sleep_forever()

    async with anyio.create_task_group() as group:
        group.start_soon(slow_ingest)
        await started.wait()
        group.cancel_scope.cancel()
    assert _leftovers(tmp_path) == []
    assert await store.blobs() == []


async def test_reingest_keeps_existing_blob_and_marks_it_used(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    digest = await store.put_bytes(b"same")
    os.utime(store.path(digest), (1000, 1000))
    assert await store.put_bytes(b"same", digest) == digest
    assert store.path(digest).stat().st_mtime > 1000
    assert len(await store.blobs()) == 1


async def test_put_file_and_move_in(tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(b"x" * 5000)
    store = BlobStore(tmp_path / "store")
    digest = await store.put_file(source, _sha256(b"x" * 5000), 5000)
    assert store.path(digest).read_bytes() == source.read_bytes()
    with pytest.raises(VerificationError):
        await store.put_file(source, _sha256(b"y"))
    # A file whose writer computed its digest is moved in; a second copy is dropped.
    other = tmp_path / "other.bin"
    other.write_bytes(b"z" * 10)
    moved = await store.move_in(other, _sha256(b"z" * 10))
    assert moved == store.path(_sha256(b"z" * 10))
    assert moved.read_bytes() == b"z" * 10
    assert not other.exists()
    again = tmp_path / "again.bin"
    again.write_bytes(b"z" * 10)
    assert await store.move_in(again, _sha256(b"z" * 10)) == moved
    assert not again.exists()
    assert {info.digest for info in await store.blobs()} == {digest, _sha256(b"z" * 10)}


async def test_evict_to_removes_least_recently_used(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    digests = []
    for age, size in enumerate([100, 200, 300, 400]):
        digest = await store.put_bytes(bytes([age]) * size)
        os.utime(store.path(digest), (10_000 + age, 10_000 + age))
        digests.append(digest)
    assert sum(info.size for info in await store.blobs()) == 1000
    # Using the oldest blob makes it the most recently used.
    assert await store.get(digests[0]) == store.path(digests[0])
    # LRU order now: 1 (kept), 2, 3, 0.
    assert await store.evict_to(600, keep=[digests[1]]) == [digests[2], digests[3]]
    assert sum(info.size for info in await store.blobs()) == 300
    # The kept blob stays even though the budget cannot be met.
    assert await store.evict_to(150, keep=[digests[1]]) == [digests[0]]
    assert [info.digest for info in await store.blobs()] == [digests[1]]
    assert await store.evict_to(0) == [digests[1]]
    assert await store.blobs() == []


async def test_concurrent_ingests_of_the_same_blob(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = os.urandom(200_000)

    async def ingest() -> None:
        await store.put_bytes(data, _sha256(data))

    async with anyio.create_task_group() as group:
        for _ in range(8):
            group.start_soon(ingest)
    assert store.path(_sha256(data)).read_bytes() == data
    assert _leftovers(tmp_path) == []


def test_path_rejects_invalid_digest(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid digest"):
        BlobStore(tmp_path).path("sha256:../../etc/passwd")
