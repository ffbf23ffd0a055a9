"""A content-addressed blob store on the local disk (the pipeline's blob cache).

Blobs live at ``<root>/<algorithm>/<hex>`` — the same shape as the ``blobs`` directory of
an OCI image layout, which :mod:`esgz.oci.layout` builds on. A blob only ever appears
under its digest name complete and verified: :meth:`BlobStore.ingest` writes to a hidden
temp file next to it (``.<random>.partial``) through a
:class:`~esgz.oci.digest.DigestingWriter` (the one verify-while-writing helper), checks
digest and size at the end, then renames atomically; on error or cancellation the temp
file is removed. A file whose writer already computed its digest (a converter's output)
is moved in with :meth:`BlobStore.move_in`. Hidden files are ignored by listings and
size accounting.

Use is tracked by modification time: :meth:`BlobStore.get` and a re-ingest of a present
blob touch it, and :meth:`BlobStore.evict_to` deletes least recently used blobs until
the store fits a size budget.

All methods are async (file I/O in worker threads); :meth:`BlobStore.path` is pure.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import anyio
import anyio.to_thread

from esgz.oci.digest import ALGORITHMS, DigestingWriter, parse_digest

__all__ = ["BlobInfo", "BlobIngest", "BlobStore"]

_COPY_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """A stored blob: its digest, size in bytes and last-use time (epoch seconds)."""

    digest: str
    size: int
    last_used: float


class BlobIngest:
    """The writer handed out by :meth:`BlobStore.ingest`: an async DigestingWriter."""

    def __init__(self, writer: DigestingWriter) -> None:
        self._writer = writer

    async def write(self, data: bytes) -> None:
        """Append ``data`` (hashed, counted and written in a worker thread).

        VerificationError as soon as more than the expected size is written.
        """
        await anyio.to_thread.run_sync(self._writer.write, data)

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._writer.size

    @property
    def digest(self) -> str:
        """The digest of everything written so far."""
        return self._writer.digest


class BlobStore:
    """Content-addressed blobs under ``root`` (``<root>/<algorithm>/<hex>``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: str) -> Path:
        """Where the blob ``digest`` is (or would be) stored; ValueError if invalid."""
        parsed = parse_digest(digest)
        return self.root / parsed.algorithm / parsed.hex

    async def has(self, digest: str) -> bool:
        """Whether the blob is present."""
        return await anyio.to_thread.run_sync(_is_regular_file, self.path(digest))

    async def get(self, digest: str) -> Path | None:
        """The blob's path, marking it as used; None if absent."""
        return await anyio.to_thread.run_sync(self._get_sync, digest)

    def _get_sync(self, digest: str) -> Path | None:
        path = self.path(digest)
        if not _is_regular_file(path):
            return None  # absent, or a symlink planted in the cache: never followed
        os.utime(path, follow_symlinks=False)
        return path

    async def size_of(self, digest: str) -> int | None:
        """The blob's size in bytes, or None if absent."""
        path = self.path(digest)

        def stat() -> int | None:
            try:
                return path.lstat().st_size if _is_regular_file(path) else None
            except FileNotFoundError:
                return None

        return await anyio.to_thread.run_sync(stat)

    @asynccontextmanager
    async def ingest(
        self, expected_digest: str | None = None, expected_size: int | None = None
    ) -> AsyncIterator[BlobIngest]:
        """Write a blob: ``async with store.ingest(digest, size) as blob: await blob.write(…)``.

        On a clean exit the content is verified against ``expected_digest`` /
        ``expected_size`` (VerificationError on mismatch, nothing stored) and renamed to
        its digest name; without ``expected_digest`` it is stored under the digest
        computed. If the blob is already present the new copy is dropped and the old one
        marked as used. After the block, ``blob.digest`` and ``blob.size`` hold the result.
        """
        algorithm = "sha256"
        if expected_digest is not None:
            algorithm = parse_digest(expected_digest).algorithm
        directory = self.root / algorithm
        temp = directory / f".{secrets.token_hex(8)}.partial"

        def open_temp() -> BinaryIO:
            directory.mkdir(parents=True, exist_ok=True)
            return temp.open("xb")

        file = await anyio.to_thread.run_sync(open_temp)
        checker = DigestingWriter(
            file,
            algorithm=algorithm,
            expected_digest=expected_digest,
            expected_size=expected_size,
        )
        try:
            try:
                yield BlobIngest(checker)
            finally:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(file.close)
            digest = checker.verify()
            await anyio.to_thread.run_sync(self._move_in_sync, temp, digest)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_unlink_quietly, temp)
            raise

    async def move_in(self, temp: Path, digest: str) -> Path:
        """Move the complete file ``temp`` into the store as ``digest``; its new path.

        For files whose writer computed the digest while writing them (the format
        engine's output); ``temp`` must be on the same file system. If the blob is
        already present, ``temp`` is removed and the stored blob marked as used.
        """
        await anyio.to_thread.run_sync(self._move_in_sync, temp, digest)
        return self.path(digest)

    def _move_in_sync(self, temp: Path, digest: str) -> None:
        target = self.path(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        if _is_regular_file(target):
            temp.unlink()
            os.utime(target, follow_symlinks=False)
        else:
            os.replace(temp, target)

    async def put_bytes(self, data: bytes, expected_digest: str | None = None) -> str:
        """Store ``data`` (verified against ``expected_digest`` if given); return its digest."""
        async with self.ingest(expected_digest, None) as blob:
            await blob.write(data)
        return blob.digest

    async def put_file(
        self,
        source: Path,
        expected_digest: str | None = None,
        expected_size: int | None = None,
    ) -> str:
        """Copy the file ``source`` into the store (streaming, verified); return its digest."""
        async with (
            self.ingest(expected_digest, expected_size) as blob,
            await anyio.open_file(source, "rb") as reader,
        ):
            while chunk := await reader.read(_COPY_CHUNK):
                await blob.write(chunk)
        return blob.digest

    async def blobs(self) -> list[BlobInfo]:
        """Every stored blob (temp files excluded), least recently used first."""
        return await anyio.to_thread.run_sync(self._list_sync)

    def _list_sync(self) -> list[BlobInfo]:
        infos: list[BlobInfo] = []
        for algorithm in ALGORITHMS:
            directory = self.root / algorithm
            if not directory.is_dir():
                continue
            for entry in os.scandir(directory):
                if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                    continue
                stat = entry.stat(follow_symlinks=False)
                infos.append(BlobInfo(f"{algorithm}:{entry.name}", stat.st_size, stat.st_mtime))
        infos.sort(key=lambda info: (info.last_used, info.digest))
        return infos

    async def evict_to(self, max_bytes: int, keep: Iterable[str] = ()) -> list[str]:
        """Delete least recently used blobs until at most ``max_bytes`` remain.

        Blobs in ``keep`` (e.g. those a running job uses) are never deleted, even if the
        budget cannot be met then. Returns the digests deleted, oldest first.
        """
        keep_set = frozenset(keep)
        return await anyio.to_thread.run_sync(self._evict_sync, max_bytes, keep_set)

    def _evict_sync(self, max_bytes: int, keep: frozenset[str]) -> list[str]:
        infos = self._list_sync()
        total = sum(info.size for info in infos)
        deleted: list[str] = []
        for info in infos:
            if total <= max_bytes:
                break
            if info.digest in keep:
                continue
            _unlink_quietly(self.path(info.digest))
            total -= info.size
            deleted.append(info.digest)
        return deleted


def _unlink_quietly(path: Path) -> None:
    with suppress(FileNotFoundError):
        path.unlink()


def _is_regular_file(path: Path) -> bool:
    """A regular file (a symlink, even to one, is not: the store never follows links)."""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except FileNotFoundError:
        return False
