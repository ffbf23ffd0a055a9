"""RegistryClient: the one object callers use; the work is done by its parts.

=================================  ====================================================
:mod:`~esgz.registry.http`         the shared httpx client, auth, caps, the retry loop
:mod:`~esgz.registry.manifests`    resolve, fetch, check and push manifests and indexes
:mod:`~esgz.registry.blobs`        blob sizes, small blobs in memory, streamed pulls
:mod:`~esgz.registry.uploads`      blob pushes: mount, monolithic or chunked sessions
=================================  ====================================================

All methods address a repository through an :class:`~esgz.oci.reference.RegistryReference`
(its tag or digest is used where a manifest is meant). Failures surface as
:class:`~esgz.errors.RegistryError` (``AuthError``, ``NotFoundError``) or
:class:`~esgz.errors.VerificationError` with one-line messages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType

import anyio
import httpx

from esgz.oci.blobstore import BlobStore
from esgz.oci.reference import RegistryReference
from esgz.registry.auth import RegistryAuth
from esgz.registry.blobs import Blobs
from esgz.registry.credentials import CredentialProvider
from esgz.registry.http import RegistryHTTP
from esgz.registry.limits import MAX_CONFIG_BLOB, MAX_MANIFEST_SIZE
from esgz.registry.manifests import Manifests
from esgz.registry.model import (
    BlobRef,
    FetchedManifest,
    ManifestInfo,
    ProgressCallback,
    PushOutcome,
)
from esgz.registry.options import RegistryOptions
from esgz.registry.retry import RetryPolicy
from esgz.registry.uploads import Uploads

__all__ = [
    "MAX_MANIFEST_SIZE",
    "BlobRef",
    "FetchedManifest",
    "ManifestInfo",
    "ProgressCallback",
    "PushOutcome",
    "RegistryClient",
]


class RegistryClient:
    """Async client for the Distribution (OCI) registry API.

    Use ``async with RegistryClient(...) as client``. One client serves any number of
    registries and concurrent transfers; per-registry TLS options are fixed at creation.

    ``credentials``: where credentials come from (default: Docker's ``config.json``).
    ``options``: per-registry ``host[:port]`` → :class:`RegistryOptions`.
    ``retry``: the retry policy for every request.
    ``max_concurrent_transfers``: blob pulls/pushes in flight at once.
    ``monolithic_threshold`` / ``chunk_size``: blobs up to the threshold are uploaded in
    one ``PUT``; larger ones in ``PATCH`` chunks of ``chunk_size`` bytes.
    ``on_progress``: default progress callback for blob transfers.
    ``timeout``: seconds any one network operation (connect, read, write) may take; an
    answer read into memory (not a blob streamed to disk) gets twice that in all.
    ``transport``: replaces the network (tests use ``httpx.MockTransport``).
    """

    def __init__(
        self,
        *,
        credentials: CredentialProvider | None = None,
        options: Mapping[str, RegistryOptions] | None = None,
        retry: RetryPolicy | None = None,
        max_concurrent_transfers: int = 8,
        monolithic_threshold: int = 32 << 20,
        chunk_size: int = 16 << 20,
        on_progress: ProgressCallback | None = None,
        timeout: float = 120.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if max_concurrent_transfers < 1 or chunk_size < 1 or monolithic_threshold < 0:
            raise ValueError("concurrency and chunk size must be positive")
        self._core = RegistryHTTP(
            credentials=credentials,
            options=options or {},
            retry=retry or RetryPolicy(),
            max_concurrent_transfers=max_concurrent_transfers,
            timeout=timeout,
            transport=transport,
        )
        self._blobs = Blobs(self._core, on_progress)
        self._manifests = Manifests(self._core, self._blobs)
        self._uploads = Uploads(
            self._core,
            self._blobs,
            monolithic_threshold=monolithic_threshold,
            chunk_size=chunk_size,
        )

    # -- lifecycle and settings ------------------------------------------------------------

    async def __aenter__(self) -> RegistryClient:
        await self._core.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._core.aclose()

    @property
    def options(self) -> dict[str, RegistryOptions]:
        """Per-registry connection options."""
        return self._core.options

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy."""
        return self._core.retry

    @property
    def auth(self) -> RegistryAuth:
        """The auth flow (its token cache, its counters)."""
        return self._core.auth

    @property
    def http(self) -> httpx.AsyncClient:
        """The shared httpx client (only inside ``async with``)."""
        return self._core.client

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        """Bounds blob transfers in flight."""
        return self._core.limiter

    @property
    def max_concurrent_transfers(self) -> int:
        """Blob pulls/pushes in flight at once."""
        return self._core.max_concurrent_transfers

    @property
    def monolithic_threshold(self) -> int:
        """Blobs up to this size are uploaded in one ``PUT``."""
        return self._uploads.monolithic_threshold

    @property
    def chunk_size(self) -> int:
        """``PATCH`` chunk size for larger blobs."""
        return self._uploads.chunk_size

    @property
    def on_progress(self) -> ProgressCallback | None:
        """The default progress callback for blob transfers."""
        return self._blobs.on_progress

    # -- manifests -------------------------------------------------------------------------

    async def resolve(self, ref: RegistryReference) -> ManifestInfo:
        """Resolve ``ref``'s tag (or digest) to the manifest's digest, media type and size."""
        return await self._manifests.resolve(ref)

    async def fetch_manifest(self, ref: RegistryReference) -> FetchedManifest:
        """Fetch the manifest or index ``ref`` names, verified against its digest."""
        return await self._manifests.fetch(ref)

    async def manifest_exists(self, ref: RegistryReference) -> bool:
        """Whether the registry has the manifest ``ref`` names (tag or digest)."""
        return await self._manifests.exists(ref)

    async def push_manifest(
        self,
        ref: RegistryReference,
        content: bytes,
        media_type: str,
        *,
        references: Iterable[BlobRef],
    ) -> str:
        """Push a manifest (or index) under ``ref``'s digest, or its tag; return the digest.

        ``references`` are what the document points to — a manifest's config and layers
        (blobs), or an index's manifests. Each must be confirmed present in the repository
        (pushed or checked by this client, or found by ``HEAD`` now) before the manifest is
        sent; a missing one raises :class:`~esgz.errors.NotFoundError` and nothing is pushed.
        """
        return await self._manifests.push(ref, content, media_type, references=references)

    async def push_manifest_tagged(
        self,
        ref: RegistryReference,
        content: bytes,
        media_type: str,
        *,
        references: Iterable[BlobRef],
    ) -> ManifestInfo:
        """Push a manifest (or index) under ``ref``'s tag with one ``PUT``; where it landed.

        The registry's ``Docker-Content-Digest`` must be the content's digest (checked by
        ``HEAD`` when the registry sends none), so the manifest is known to be reachable
        both by tag and by the returned digest: no separate push by digest is needed.
        ``references`` as for :meth:`push_manifest`. ``ValueError`` if ``ref`` has no tag.
        """
        return await self._manifests.push_tagged(ref, content, media_type, references=references)

    # -- blobs: reading --------------------------------------------------------------------

    async def blob_size(self, ref: RegistryReference, digest: str) -> int | None:
        """The size of blob ``digest`` in ``ref``'s repository, or ``None`` if absent."""
        return await self._blobs.size(ref, digest)

    async def pull_blob_bytes(
        self, ref: RegistryReference, digest: str, *, max_size: int = MAX_CONFIG_BLOB
    ) -> bytes:
        """A small blob (an image config) in memory, verified against ``digest``.

        A blob announced (or found, while it arrives) larger than ``max_size`` is refused.
        """
        return await self._blobs.pull_bytes(ref, digest, max_size=max_size)

    async def pull_blob(
        self,
        ref: RegistryReference,
        digest: str,
        size: int | None,
        destination: Path,
        *,
        on_progress: ProgressCallback | None = None,
    ) -> Path:
        """Stream blob ``digest`` to the file ``destination``, verified on the fly.

        Renamed into place only when digest and size match; resumed with ``Range`` after
        a dropped connection; redirects followed.
        """
        return await self._blobs.pull(ref, digest, size, destination, on_progress=on_progress)

    async def pull_blob_into(
        self,
        ref: RegistryReference,
        digest: str,
        size: int | None,
        store: BlobStore,
        *,
        on_progress: ProgressCallback | None = None,
    ) -> Path:
        """Pull blob ``digest`` into a content-addressed :class:`BlobStore`; its path.

        A blob the store already holds (with the right size) is not fetched again.
        """
        return await self._blobs.pull_into(ref, digest, size, store, on_progress=on_progress)

    # -- blobs: writing --------------------------------------------------------------------

    async def push_blob(
        self,
        ref: RegistryReference,
        digest: str,
        size: int,
        source: Path,
        *,
        mount_from: RegistryReference | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> PushOutcome:
        """Make blob ``digest`` (the file ``source``) present in ``ref``'s repository.

        ``HEAD`` first (``"exists"``), then a cross-repository mount from ``mount_from``
        (``"mounted"``), then a monolithic or chunked upload (``"uploaded"``).
        """
        return await self._uploads.push(
            ref, digest, size, source, mount_from=mount_from, on_progress=on_progress
        )

    async def push_blob_bytes(
        self, ref: RegistryReference, content: bytes, *, digest: str | None = None
    ) -> str:
        """Push a small in-memory blob (an image config); return its digest."""
        return await self._uploads.push_bytes(ref, content, digest=digest)
