"""The local blob store and the conversion cache that survives between runs.

Layout under the cache directory::

    blobs/sha256/<hex>         content-addressed blobs (fetched sources, converted outputs)
    diff_ids/sha256-<hex>      a fetched blob's uncompressed digest, as hashed
    conversions/<hex>.json     conversion records: key fingerprint → output facts
    tmp/run-*/                 per-run scratch space, removed when the run ends

Blobs enter ``blobs/`` once, complete: a fetched blob is pulled straight into the store
(verified while written, renamed into place), a converted one is written in the run's
scratch directory by the format engine and moved in under the digest it computed. So a
blob path always holds a whole blob, and a fetched one is verified. A conversion is keyed by
the source digest, the prioritized files and the options that shape the output bytes
(format, compression level, chunk size), so a re-run with the same inputs reuses it.
The cache is bounded: :meth:`LocalStore.evict` removes the least recently used blobs
beyond ``max_size``, never the ones the current run used.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, get_args

import anyio
import anyio.to_thread

from esgz.errors import ConfigError
from esgz.fsutil import directory_problem
from esgz.levels import LayerFormat
from esgz.oci.blobstore import BlobStore
from esgz.oci.digest import is_digest, parse_digest
from esgz.pipeline.config import PipelineConfig
from esgz.pipeline.jobs import LayerOutput
from esgz.rundir import create_run_dir, remove_run_dir
from esgz.runtime.recover import LEGACY_RUN_DIR_SECONDS, sweep_dead_runs

if TYPE_CHECKING:
    from esgz.oci.reference import LayoutReference, RegistryReference

__all__ = [
    "CONVERSION_SCHEME",
    "ConversionCache",
    "ConversionKey",
    "LocalStore",
    "SharedConversionCache",
    "open_local_store",
    "open_store",
]

#: Bumped when the format engine changes the bytes it writes for the same inputs.
CONVERSION_SCHEME = "esgz-conversion-1"
#: Scratch directories of killed runs older than this are removed by the next run.
STALE_SCRATCH_SECONDS = LEGACY_RUN_DIR_SECONDS


@dataclass(frozen=True, slots=True)
class ConversionKey:
    """Everything that determines the bytes of a converted layer."""

    source_digest: str
    prioritized: tuple[str, ...]
    format: LayerFormat
    compression_level: int
    chunk_size: int

    def fingerprint(self) -> str:
        """A stable hex digest of the key."""
        text = json.dumps(
            [
                CONVERSION_SCHEME,
                self.source_digest,
                list(self.prioritized),
                self.format,
                self.compression_level,
                self.chunk_size,
            ],
            separators=(",", ":"),
        )
        return hashlib.sha256(text.encode()).hexdigest()

    def describe(self) -> dict[str, Any]:
        """The key as JSON data, written beside a cached output (for people and tools)."""
        return {
            "source_digest": self.source_digest,
            "prioritized": list(self.prioritized),
            "format": self.format,
            "compression_level": self.compression_level,
            "chunk_size": self.chunk_size,
        }


class LocalStore:
    """Content-addressed blobs on local disk plus a per-run scratch directory.

    The blobs are an :class:`~esgz.oci.blobstore.BlobStore` under ``<root>/blobs``.
    """

    def __init__(self, root: Path, scratch: Path) -> None:
        self.root = root
        self.scratch = scratch
        self.blobs = BlobStore(root / "blobs")
        self.used: set[str] = set()

    @classmethod
    async def open(cls, root: Path) -> LocalStore:
        """Create the directories under ``root`` and a fresh scratch directory.

        ConfigError if ``root`` cannot hold them (not a directory, not writable).
        """

        def prepare() -> Path:
            (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
            (root / "conversions").mkdir(parents=True, exist_ok=True)
            (root / "diff_ids").mkdir(parents=True, exist_ok=True)
            (root / "tmp").mkdir(parents=True, exist_ok=True)
            _remove_stale_scratch(root / "tmp")
            _remove_stale_partials(root / "blobs" / "sha256")
            return create_run_dir(root / "tmp", "run-")

        try:
            scratch = await anyio.to_thread.run_sync(prepare)
        except OSError as exc:
            problem = await anyio.to_thread.run_sync(directory_problem, root, exc)
            raise ConfigError(f"cannot use cache directory {root}: {problem}") from None
        return cls(root, scratch)

    async def close(self) -> None:
        """Remove the scratch directory (also when cancelled)."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(remove_run_dir, self.scratch)

    def blob_path(self, digest: str) -> Path:
        """Where the blob ``digest`` lives (whether or not it exists)."""
        return self.blobs.path(digest)

    async def has(self, digest: str) -> bool:
        """Whether the blob is stored; marks it used (by this run, and for the LRU)."""
        found = await self.blobs.get(digest) is not None
        if found:
            self.used.add(digest)
        return found

    def temp_path(self, hint: str = "blob") -> Path:
        """A fresh, not yet existing file name in the scratch directory."""
        return self.scratch / f"{hint}-{uuid.uuid4().hex}"

    def _diff_id_path(self, digest: str, algorithm: str) -> Path:
        parsed = parse_digest(digest)
        return self.root / "diff_ids" / f"{parsed.algorithm}-{parsed.hex}.{algorithm}"

    async def diff_id_of(self, digest: str, algorithm: str = "sha256") -> str | None:
        """The uncompressed digest recorded for blob ``digest`` by :meth:`record_diff_id`."""
        path = anyio.Path(self._diff_id_path(digest, algorithm))
        try:
            text = (await path.read_text(encoding="ascii")).strip()
        except (FileNotFoundError, UnicodeDecodeError):
            return None
        return text if is_digest(text) else None

    async def record_diff_id(self, digest: str, diff_id: str) -> None:
        """Remember that blob ``digest`` (in the store) decompresses to ``diff_id``.

        Only for a digest the caller just hashed: a fact about the blob's bytes, so the
        record never goes stale.
        """
        final = self._diff_id_path(digest, parse_digest(diff_id).algorithm)
        temp = self.temp_path("diff-id")
        await anyio.Path(temp).write_text(diff_id, encoding="ascii")
        await anyio.to_thread.run_sync(os.replace, temp, final)

    def mark_used(self, digest: str) -> None:
        """Keep blob ``digest`` at this run's eviction (it was just stored or read)."""
        self.used.add(digest)

    async def move_in(self, temp: Path, digest: str) -> Path:
        """Move the complete file ``temp`` (a converter's output) in as ``digest``; its path.

        See :meth:`esgz.oci.blobstore.BlobStore.move_in`.
        """
        path = await self.blobs.move_in(temp, digest)
        self.mark_used(digest)
        return path

    async def evict(self, max_size: int) -> int:
        """Delete least recently used blobs until at most ``max_size`` bytes remain.

        Blobs used by this run are kept. Returns the number of blobs deleted.
        """
        return len(await self.blobs.evict_to(max_size, keep=self.used))


def _remove_stale_scratch(directory: Path) -> None:
    """Remove what dead runs left: their scratch dirs here, mounts, temp stores, netns."""
    sweep_dead_runs(directory, "run-")


def _remove_stale_partials(directory: Path) -> None:
    """Remove partial blobs (``.*.partial``) a killed run left, a day or more ago."""
    limit = time.time() - STALE_SCRATCH_SECONDS
    for entry in directory.glob(".*.partial"):
        try:
            if entry.stat().st_mtime < limit:
                entry.unlink()
        except FileNotFoundError:
            continue


class ConversionCache:
    """Records of finished conversions, stored next to the blobs they produced."""

    def __init__(self, store: LocalStore) -> None:
        self.store = store
        self.directory = store.root / "conversions"

    async def lookup(self, key: ConversionKey) -> LayerOutput | None:
        """The cached output for ``key`` if its record and blob both exist."""
        record_path = anyio.Path(self.directory / f"{key.fingerprint()}.json")
        try:
            record = json.loads(await record_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        digest = str(record["digest"])
        layer_format = record["format"]
        if layer_format not in get_args(LayerFormat) or not await self.store.has(digest):
            return None
        return LayerOutput(
            path=self.store.blob_path(digest),
            digest=digest,
            size=int(record["size"]),
            diff_id=str(record["diff_id"]),
            format=layer_format,
            annotations={str(k): str(v) for k, v in record["annotations"].items()},
            toc_digest=record["toc_digest"],
            uncompressed_size=record["uncompressed_size"],
        )

    async def store_output(self, key: ConversionKey, output: LayerOutput) -> None:
        """Record ``output`` (already committed to the store) under ``key``."""
        record = {
            "key": key.describe(),
            "digest": output.digest,
            "size": output.size,
            "diff_id": output.diff_id,
            "format": output.format,
            "annotations": dict(output.annotations),
            "toc_digest": output.toc_digest,
            "uncompressed_size": output.uncompressed_size,
        }
        final = self.directory / f"{key.fingerprint()}.json"
        temp = self.store.temp_path("record")
        await anyio.Path(temp).write_text(json.dumps(record, indent=1), encoding="utf-8")
        await anyio.to_thread.run_sync(os.replace, temp, final)


class SharedConversionCache(Protocol):
    """A conversion cache shared between machines (:mod:`esgz.distributed.regcache`).

    The runner asks it after the local :class:`ConversionCache`, holding its
    :meth:`claim` on the key, and fills it after a conversion (or a local hit it does not
    have yet).
    """

    async def lookup(
        self, key: ConversionKey, store: LocalStore, target: RegistryReference | LayoutReference
    ) -> LayerOutput | None:
        """The output for ``key``, if cached: in ``store``, or mountable on ``target``."""
        ...

    async def store_output(self, key: ConversionKey, output: LayerOutput) -> None:
        """Record ``output`` (its blob in the local store) under ``key``, if not yet there."""
        ...

    def claim(self, key: ConversionKey) -> AbstractAsyncContextManager[None]:
        """Held around lookup, conversion and store: while one machine holds ``key``,
        others wait, then find its entry (one conversion per key across a fleet)."""
        ...


@asynccontextmanager
async def open_store(config: PipelineConfig) -> AsyncIterator[LocalStore]:
    """The run's blob store: the configured cache, or a temporary one if disabled."""
    async with open_local_store(config.cache_dir() if config.cache.enabled else None) as store:
        yield store


@asynccontextmanager
async def open_local_store(root: Path | None) -> AsyncIterator[LocalStore]:
    """A blob store under ``root``, or in a temporary directory if ``root`` is None.

    On exit (also when cancelled) the scratch directory is removed, and a temporary
    store entirely.
    """
    private_root: Path | None = None
    if root is None:
        private_root = Path(await anyio.to_thread.run_sync(create_run_dir, None, "esgz-"))
        root = private_root
    store: LocalStore | None = None
    try:
        store = await LocalStore.open(root)
        yield store
    finally:
        with anyio.CancelScope(shield=True):
            if store is not None:
                await store.close()
            if private_root is not None:
                await anyio.to_thread.run_sync(remove_run_dir, private_root)
