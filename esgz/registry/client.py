"""RegistryClient: pull and push manifests and blobs over one shared httpx.AsyncClient.

All methods address a repository through an :class:`~esgz.oci.reference.RegistryReference`
(its tag or digest is used where a manifest is meant). Blob transfers are bounded by a
capacity limiter; every request is retried per :class:`~esgz.registry.retry.RetryPolicy`;
failures surface as :class:`~esgz.errors.RegistryError` (``AuthError``, ``NotFoundError``)
or :class:`~esgz.errors.VerificationError` with one-line messages.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol, TypeVar

import anyio
import httpx

from esgz.errors import AuthError, NotFoundError, RegistryError, VerificationError
from esgz.oci.blobstore import BlobStore
from esgz.oci.digest import is_digest, sha256_of
from esgz.oci.mediatypes import MANIFEST_ACCEPT, is_index
from esgz.oci.reference import DOCKER_HUB_ENDPOINT, DOCKER_HUB_REGISTRY, RegistryReference
from esgz.registry.auth import RegistryAuth
from esgz.registry.credentials import CredentialProvider, DockerConfigCredentials
from esgz.registry.options import RegistryOptions, build_ssl_context, options_for
from esgz.registry.retry import RETRYABLE_STATUS, RetryableStatus, RetryPolicy, parse_retry_after
from esgz.registry.transfer import FileSliceStream, VerifyingBlobWriter

__all__ = [
    "BlobRef",
    "FetchedManifest",
    "ManifestInfo",
    "ProgressCallback",
    "PushOutcome",
    "RegistryClient",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: ``on_progress(digest, transferred, total)``: bytes of one blob moved so far.
ProgressCallback = Callable[[str, int, int], None]

#: What :meth:`RegistryClient.push_blob` did: found it, mounted it, or uploaded it.
PushOutcome = Literal["exists", "mounted", "uploaded"]

#: Manifests larger than this are refused (Distribution's own limit is 4 MiB).
MAX_MANIFEST_SIZE = 4 << 20
_OCTET_STREAM = "application/octet-stream"
_MAX_ERROR_BODY = 64 << 10
_ACCEPT_MANIFESTS = {"Accept": ", ".join(MANIFEST_ACCEPT)}
_UPLOAD_RANGE_RE = re.compile(r"^(?:bytes=)?0-(\d+)$")


class BlobRef(Protocol):
    """Anything naming a blob by digest and size (OCI descriptors qualify)."""

    @property
    def digest(self) -> str:
        """The blob's digest, ``<algorithm>:<hex>``."""
        ...

    @property
    def size(self) -> int:
        """The blob's size in bytes."""
        ...


@dataclass(frozen=True, slots=True)
class ManifestInfo:
    """What a tag or digest resolves to."""

    digest: str
    media_type: str
    size: int


@dataclass(frozen=True, slots=True)
class FetchedManifest:
    """A manifest or index as served, with its verified digest."""

    digest: str
    media_type: str
    content: bytes

    def json(self) -> object:
        """The parsed JSON document."""
        return json.loads(self.content)


class RegistryClient:
    """Async client for the Distribution (OCI) registry API.

    Use ``async with RegistryClient(...) as client``. One client serves any number of
    registries and concurrent transfers; per-registry TLS options are fixed at creation.

    ``credentials``: where credentials come from (default: Docker's ``config.json``).
    ``options``: per-registry ``host[:port]`` → :class:`RegistryOptions`.
    ``max_concurrent_transfers``: blob pulls/pushes in flight at once.
    ``monolithic_threshold`` / ``chunk_size``: blobs up to the threshold are uploaded in
    one ``PUT``; larger ones in ``PATCH`` chunks of ``chunk_size`` bytes.
    ``on_progress``: default progress callback for blob transfers.
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
        self.options = dict(options or {})
        self.retry = retry or RetryPolicy()
        self.max_concurrent_transfers = max_concurrent_transfers
        self.monolithic_threshold = monolithic_threshold
        self.chunk_size = chunk_size
        self.on_progress = on_progress
        self._timeout = timeout
        self._transport = transport
        self._registry_names: dict[str, str] = {}
        self.auth = RegistryAuth(
            credentials if credentials is not None else DockerConfigCredentials(),
            self._registry_names,
        )
        self._http: httpx.AsyncClient | None = None
        self._limiter: anyio.CapacityLimiter | None = None
        self._confirmed: set[tuple[str, str, str]] = set()

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> RegistryClient:
        # Building SSL contexts loads certificate files: keep it out of the event loop.
        self._http = await anyio.to_thread.run_sync(self._build_http)
        self._limiter = anyio.CapacityLimiter(self.max_concurrent_transfers)
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
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _build_http(self) -> httpx.AsyncClient:
        """The shared httpx client (blocking: builds SSL contexts; run in a thread).

        TLS is verified against the system store (``SSL_CERT_FILE`` / ``SSL_CERT_DIR``
        honoured); proxies come from the environment (``HTTP(S)_PROXY``, ``NO_PROXY``),
        also for registries with their own TLS options, which get their own transport.
        """
        limits = httpx.Limits(
            max_connections=self.max_concurrent_transfers * 2 + 4,
            max_keepalive_connections=self.max_concurrent_transfers * 2 + 4,
        )
        timeout = httpx.Timeout(self._timeout, pool=None)
        headers = {"User-Agent": "esgz"}
        if self._transport is not None:
            return httpx.AsyncClient(
                transport=self._transport, auth=self.auth, timeout=timeout, headers=headers
            )
        mounts: dict[str, httpx.AsyncBaseTransport | None] = {}
        environment_proxies = urllib.request.getproxies()
        for registry, opts in self.options.items():
            if opts.plain_http or (opts.ca_file is None and not opts.insecure):
                continue
            host = DOCKER_HUB_ENDPOINT if registry == DOCKER_HUB_REGISTRY else registry
            proxy = None if urllib.request.proxy_bypass(host) else environment_proxies.get("https")
            mounts[f"https://{host}"] = httpx.AsyncHTTPTransport(
                verify=build_ssl_context(opts), limits=limits, proxy=proxy
            )
        return httpx.AsyncClient(
            auth=self.auth,
            timeout=timeout,
            headers=headers,
            verify=build_ssl_context(RegistryOptions()),
            trust_env=True,
            limits=limits,
            mounts=mounts,
        )

    @property
    def http(self) -> httpx.AsyncClient:
        """The shared httpx client (only inside ``async with``)."""
        if self._http is None:
            raise RuntimeError("RegistryClient used outside 'async with'")
        return self._http

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        """Bounds blob transfers in flight."""
        if self._limiter is None:
            raise RuntimeError("RegistryClient used outside 'async with'")
        return self._limiter

    # -- plumbing --------------------------------------------------------------------------

    def _repo_url(self, ref: RegistryReference) -> str:
        self._registry_names[ref.endpoint] = ref.registry
        plain = ref.plain_http or options_for(ref.registry, self.options).plain_http
        return f"{'http' if plain else 'https'}://{ref.endpoint}/v2/{ref.repository}"

    def _manifest_url(self, ref: RegistryReference) -> str:
        return f"{self._repo_url(ref)}/manifests/{ref.object}"

    def _progress(self, callback: ProgressCallback | None) -> ProgressCallback | None:
        return callback if callback is not None else self.on_progress

    async def _with_retries(
        self, ref: RegistryReference, what: str, operation: Callable[[], Awaitable[T]]
    ) -> T:
        """Run ``operation`` under the retry policy; map what is left to RegistryError."""
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await operation()
            except (RetryableStatus, httpx.TransportError) as error:
                if _is_tls_failure(error):
                    raise _transport_error(ref, what, error) from None
                delay = self.retry.next_delay(attempt, started, _retry_after(error))
                if delay is None:
                    raise _gave_up(
                        ref, what, error, f" (gave up after {attempt} attempts)"
                    ) from None
                log.info("%s: %s; retrying in %.2fs", what, _describe(error), delay)
                await anyio.sleep(delay)

    async def _send(
        self,
        ref: RegistryReference,
        what: str,
        method: str,
        url: str | httpx.URL,
        *,
        ok: Iterable[int],
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        body: httpx.AsyncByteStream | None = None,
        body_length: int = 0,
        not_found_ok: bool = False,
        follow_redirects: bool = False,
    ) -> httpx.Response:
        """One request (retried); the response body is read. Non-``ok`` status → error."""
        accepted = set(ok)

        async def attempt() -> httpx.Response:
            request = self._build(
                method, url, headers=headers, params=params, body=body, length=body_length
            )
            response = await self.http.send(request, follow_redirects=follow_redirects)
            await response.aread()
            if response.status_code in accepted or (not_found_ok and response.status_code == 404):
                return response
            raise _status_error(ref, what, response)

        return await self._with_retries(ref, what, attempt)

    def _build(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        body: httpx.AsyncByteStream | None = None,
        length: int = 0,
    ) -> httpx.Request:
        """A request with the client's defaults and an optional streamed, re-sendable body."""
        template = self.http.build_request(method, url, headers=headers, params=params)
        if body is None:
            if method in ("POST", "PUT", "PATCH"):
                template.headers["Content-Length"] = "0"
            return template
        request_headers = httpx.Headers(template.headers)
        request_headers["Content-Length"] = str(length)
        request_headers.setdefault("Content-Type", _OCTET_STREAM)
        return httpx.Request(
            method,
            template.url,
            headers=request_headers,
            stream=body,
            extensions=template.extensions,
        )

    def _confirm(self, ref: RegistryReference, digest: str) -> None:
        self._confirmed.add((ref.endpoint, ref.repository, digest))

    def _is_confirmed(self, ref: RegistryReference, digest: str) -> bool:
        return (ref.endpoint, ref.repository, digest) in self._confirmed

    # -- manifests -------------------------------------------------------------------------

    async def resolve(self, ref: RegistryReference) -> ManifestInfo:
        """Resolve ``ref``'s tag (or digest) to the manifest's digest, media type and size.

        Uses ``HEAD``; when the registry sends no ``Docker-Content-Digest`` the manifest
        is fetched and hashed.
        """
        what = f"resolve {ref}"
        response = await self._send(
            ref,
            what,
            "HEAD",
            self._manifest_url(ref),
            ok=(200,),
            headers=_ACCEPT_MANIFESTS,
        )
        digest = response.headers.get("Docker-Content-Digest")
        media_type = _media_type(response)
        length = response.headers.get("Content-Length")
        if digest and is_digest(digest) and media_type and length and length.isdigit():
            if ref.digest is not None and digest != ref.digest:
                raise VerificationError(
                    f"registry resolved {ref} to {digest}", image=str(ref), layer=ref.digest
                )
            return ManifestInfo(digest, media_type, int(length))
        fetched = await self.fetch_manifest(ref)
        return ManifestInfo(fetched.digest, fetched.media_type, len(fetched.content))

    async def fetch_manifest(self, ref: RegistryReference) -> FetchedManifest:
        """Fetch the manifest or index ``ref`` names, verified against its digest."""
        what = f"fetch manifest {ref}"
        response = await self._send(
            ref,
            what,
            "GET",
            self._manifest_url(ref),
            ok=(200,),
            headers=_ACCEPT_MANIFESTS,
        )
        content = response.content
        if len(content) > MAX_MANIFEST_SIZE:
            raise RegistryError(f"{what}: manifest larger than 4 MiB", registry=ref.registry)
        digest = sha256_of(content)
        served = response.headers.get("Docker-Content-Digest")
        expected = ref.digest or (served if served and served.startswith("sha256:") else None)
        if expected is not None and expected != digest:
            raise VerificationError(
                f"manifest digest mismatch: expected {expected}, got {digest}",
                image=str(ref),
                registry=ref.registry,
            )
        media_type = _media_type(response) or _embedded_media_type(content)
        if not media_type:
            raise RegistryError(f"{what}: no media type", registry=ref.registry)
        self._confirm(ref, digest)
        return FetchedManifest(digest, media_type, content)

    async def manifest_exists(self, ref: RegistryReference) -> bool:
        """Whether the registry has the manifest ``ref`` names (tag or digest)."""
        response = await self._send(
            ref,
            f"check manifest {ref}",
            "HEAD",
            self._manifest_url(ref),
            ok=(200,),
            headers=_ACCEPT_MANIFESTS,
            not_found_ok=True,
        )
        return response.status_code == 200

    async def push_manifest(
        self,
        ref: RegistryReference,
        content: bytes,
        media_type: str,
        *,
        references: Iterable[BlobRef],
    ) -> str:
        """Push a manifest (or index) under ``ref``'s tag, or its digest; return the digest.

        ``references`` are what the document points to — a manifest's config and layers
        (blobs), or an index's manifests. Each must be confirmed present in the repository
        (pushed or checked by this client, or found by ``HEAD`` now) before the manifest is
        sent; a missing one raises :class:`~esgz.errors.NotFoundError` and nothing is pushed.
        """
        digest = sha256_of(content)
        if ref.digest is not None and ref.digest != digest:
            raise VerificationError(
                f"manifest content is {digest}, not {ref.digest}", image=str(ref)
            )
        await self._require_present(ref, list(references), manifests=is_index(media_type))
        target = ref.tag if ref.digest is None and ref.tag else digest
        response = await self._send(
            ref,
            f"push manifest {ref}",
            "PUT",
            f"{self._repo_url(ref)}/manifests/{target}",
            ok=(200, 201),
            headers={"Content-Type": media_type},
            body=_BytesStream(content),
            body_length=len(content),
        )
        served = response.headers.get("Docker-Content-Digest")
        if served and served != digest:
            raise VerificationError(
                f"registry stored manifest as {served}, expected {digest}", image=str(ref)
            )
        self._confirm(ref, digest)
        return digest

    async def _require_present(
        self, ref: RegistryReference, references: list[BlobRef], *, manifests: bool
    ) -> None:
        missing: list[str] = []

        async def check(item: BlobRef) -> None:
            if self._is_confirmed(ref, item.digest):
                return
            if manifests:
                present = await self.manifest_exists(ref.with_digest(item.digest))
            else:
                present = await self.blob_size(ref, item.digest) == item.size
            if present:
                self._confirm(ref, item.digest)
            else:
                missing.append(item.digest)

        async with anyio.create_task_group() as group:
            for item in references:
                group.start_soon(check, item)
        if missing:
            kind = "manifest" if manifests else "blob"
            raise NotFoundError(
                f"not pushing manifest {ref}: {kind} {sorted(missing)[0]} is not in"
                f" {ref.repository}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                registry=ref.registry,
            )

    # -- blobs: reading --------------------------------------------------------------------

    async def blob_size(self, ref: RegistryReference, digest: str) -> int | None:
        """The size of blob ``digest`` in ``ref``'s repository, or ``None`` if absent."""
        response = await self._send(
            ref,
            f"check blob {digest} in {ref.repository}",
            "HEAD",
            f"{self._repo_url(ref)}/blobs/{digest}",
            ok=(200,),
            not_found_ok=True,
            follow_redirects=True,
        )
        if response.status_code == 404:
            return None
        length = response.headers.get("Content-Length", "")
        return int(length) if length.isdigit() else None

    async def fetch_blob(
        self, ref: RegistryReference, digest: str, *, max_size: int = 16 << 20
    ) -> bytes:
        """A small blob (an image config) in memory, verified against ``digest``.

        A blob announced (or found) larger than ``max_size`` is refused.
        """
        what = f"fetch blob {digest} from {ref.repository}"
        url = f"{self._repo_url(ref)}/blobs/{digest}"
        too_large = RegistryError(f"{what}: larger than {max_size} bytes", registry=ref.registry)

        async def attempt() -> bytes:
            request = self._build("GET", url, headers={"Accept-Encoding": "identity"})
            response = await self.http.send(request, stream=True, follow_redirects=True)
            try:
                if response.status_code != 200:
                    await response.aread()
                    raise _status_error(ref, what, response, digest=digest)
                length = response.headers.get("Content-Length", "")
                if length.isdigit() and int(length) > max_size:
                    raise too_large
                content = bytearray()
                overflow = False
                # Read to the end (see pull_blob): abandoning the iterator leaks it.
                async for chunk in response.aiter_raw():
                    overflow = overflow or len(content) + len(chunk) > max_size
                    if not overflow:
                        content += chunk
                if overflow:
                    raise too_large
                return bytes(content)
            finally:
                await response.aclose()

        content = await self._with_retries(ref, what, attempt)
        actual = sha256_of(content)
        if actual != digest:
            raise VerificationError(
                f"digest mismatch: expected {digest}, got {actual}",
                layer=digest,
                registry=ref.registry,
            )
        self._confirm(ref, digest)
        return content

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

        The bytes go to a temp file beside ``destination`` and are renamed into place
        only when digest and size match. A connection that drops mid-way is resumed with a
        ``Range`` request (restarted if the registry ignores it); redirects are followed.
        """
        progress = self._progress(on_progress)
        url = f"{self._repo_url(ref)}/blobs/{digest}"
        what = f"pull blob {digest} from {ref.repository}"
        async with self.limiter, VerifyingBlobWriter(destination, digest, size) as writer:
            total = size or 0

            async def attempt() -> None:
                nonlocal total
                headers = {"Accept-Encoding": "identity"}
                resume_from = writer.written
                if resume_from:
                    headers["Range"] = f"bytes={resume_from}-"
                request = self.http.build_request("GET", url, headers=headers)
                response = await self.http.send(request, stream=True, follow_redirects=True)
                try:
                    if response.status_code == 206 and resume_from:
                        if _range_start(response) != resume_from:
                            await writer.restart()
                            raise httpx.RemoteProtocolError(
                                "unexpected Content-Range", request=request
                            )
                    elif response.status_code == 200:
                        if resume_from:
                            log.info("%s: registry ignored Range; restarting", what)
                            await writer.restart()
                    else:
                        await response.aread()
                        raise _status_error(ref, what, response, digest=digest)
                    length = response.headers.get("Content-Length", "")
                    if length.isdigit():
                        announced = writer.written + int(length)
                        if size is not None and announced != size:
                            raise VerificationError(
                                f"registry sends {announced} bytes, expected {size}",
                                layer=digest,
                            )
                        total = total or announced
                    await writer.receive(
                        response.aiter_raw(),
                        None if progress is None else lambda n: progress(digest, n, total),
                    )
                finally:
                    await response.aclose()
                if size is not None and writer.written < size:
                    raise httpx.RemoteProtocolError(
                        f"body ended after {writer.written} of {size} bytes", request=request
                    )

            try:
                await self._with_retries(ref, what, attempt)
                path = await writer.commit()
            except VerificationError as error:
                raise VerificationError(
                    error.message, layer=digest, registry=ref.registry
                ) from None
        self._confirm(ref, digest)
        return path

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
        if size is None or await store.size_of(digest) == size:
            existing = await store.get(digest)
            if existing is not None:
                progress = self._progress(on_progress)
                if progress is not None and size is not None:
                    progress(digest, size, size)
                return existing
        return await self.pull_blob(ref, digest, size, store.path(digest), on_progress=on_progress)

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

        ``HEAD`` first (present → ``"exists"``); then a cross-repository mount when
        ``mount_from`` is another repository of the same registry (``"mounted"``, or an
        ordinary upload if the registry answers ``202``); then a monolithic ``PUT`` up to
        ``monolithic_threshold`` bytes, else chunked ``PATCH`` uploads (``"uploaded"``).
        """
        progress = self._progress(on_progress)
        async with self.limiter:
            if self._is_confirmed(ref, digest) or await self.blob_size(ref, digest) == size:
                self._confirm(ref, digest)
                if progress is not None:
                    progress(digest, size, size)
                return "exists"
            mount = (
                mount_from
                if mount_from is not None
                and mount_from.endpoint == ref.endpoint
                and mount_from.repository != ref.repository
                else None
            )
            outcome: PushOutcome
            if size <= self.monolithic_threshold:
                outcome = await self._push_monolithic(ref, digest, size, source, mount, progress)
            else:
                outcome = await self._push_chunked(ref, digest, size, source, mount, progress)
        self._confirm(ref, digest)
        return outcome

    async def push_blob_bytes(
        self, ref: RegistryReference, content: bytes, *, digest: str | None = None
    ) -> str:
        """Push a small in-memory blob (an image config); return its digest."""
        actual = sha256_of(content)
        digest = digest or actual
        if actual != digest:
            raise VerificationError(f"content is not {digest}", layer=digest)
        if self._is_confirmed(ref, digest) or await self.blob_size(ref, digest) == len(content):
            self._confirm(ref, digest)
            return digest
        what = f"push blob {digest} to {ref.repository}"

        async def attempt() -> None:
            location = await self._start_upload(ref, digest, None)
            assert location is not None
            await self._finish_upload(
                ref, what, location, digest, _BytesStream(content), len(content)
            )

        await self._with_retries(ref, what, attempt)
        self._confirm(ref, digest)
        return digest

    async def _start_upload(
        self, ref: RegistryReference, digest: str, mount_from: RegistryReference | None
    ) -> httpx.URL | None:
        """``POST`` an upload (or mount); the session URL, or ``None`` if mounted."""
        params = {"mount": digest, "from": mount_from.repository} if mount_from else None
        response = await self._send(
            ref,
            f"start upload of {digest} to {ref.repository}",
            "POST",
            f"{self._repo_url(ref)}/blobs/uploads/",
            ok=(201, 202),
            params=params,
        )
        if response.status_code == 201 and mount_from is not None:
            return None
        return _location(ref, response)

    async def _finish_upload(
        self,
        ref: RegistryReference,
        what: str,
        location: httpx.URL,
        digest: str,
        body: httpx.AsyncByteStream | None,
        length: int,
    ) -> None:
        request_url = location.copy_add_param("digest", digest)
        request = self._build("PUT", request_url, body=body, length=length)
        response = await self.http.send(request)
        await response.aread()
        if response.status_code != 201:
            raise _status_error(ref, what, response, digest=digest)
        served = response.headers.get("Docker-Content-Digest")
        if served and served != digest:
            raise VerificationError(
                f"registry stored the blob as {served}", layer=digest, registry=ref.registry
            )

    async def _push_monolithic(
        self,
        ref: RegistryReference,
        digest: str,
        size: int,
        source: Path,
        mount_from: RegistryReference | None,
        progress: ProgressCallback | None,
    ) -> PushOutcome:
        what = f"push blob {digest} to {ref.repository}"
        mounted = False

        async def attempt() -> None:
            nonlocal mounted
            location = await self._start_upload(ref, digest, mount_from)
            if location is None:
                mounted = True
                return
            sent = 0

            def on_bytes(count: int) -> None:
                nonlocal sent
                sent += count
                if progress is not None:
                    progress(digest, sent, size)

            stream = FileSliceStream(source, 0, size, on_bytes=on_bytes)
            await self._finish_upload(ref, what, location, digest, stream, size)

        await self._with_retries(ref, what, attempt)
        if mounted and progress is not None:
            progress(digest, size, size)
        return "mounted" if mounted else "uploaded"

    async def _push_chunked(
        self,
        ref: RegistryReference,
        digest: str,
        size: int,
        source: Path,
        mount_from: RegistryReference | None,
        progress: ProgressCallback | None,
    ) -> PushOutcome:
        what = f"push blob {digest} to {ref.repository}"
        location = await self._with_retries(
            ref, what, lambda: self._start_upload(ref, digest, mount_from)
        )
        if location is None:
            if progress is not None:
                progress(digest, size, size)
            return "mounted"
        offset = 0
        failures = 0
        started = time.monotonic()
        while offset < size:
            length = min(self.chunk_size, size - offset)
            base = offset

            def on_bytes(count: int) -> None:
                nonlocal base
                base += count
                if progress is not None:
                    progress(digest, base, size)

            try:
                location, new_offset = await self._patch_chunk(
                    ref, what, location, source, offset, length, on_bytes
                )
                if new_offset <= offset:
                    raise RetryableStatus(
                        202, f"registry kept no bytes of the chunk at {offset}", None
                    )
                offset = new_offset
            except (RetryableStatus, httpx.TransportError) as error:
                failures += 1
                delay = self.retry.next_delay(failures, started, _retry_after(error))
                if delay is None or _is_tls_failure(error):
                    raise _gave_up(ref, what, error, "") from None
                log.info("%s: chunk at %d: %s; retrying", what, offset, _describe(error))
                await anyio.sleep(delay)
                location, offset = await self._upload_status(ref, what, location, digest, offset)
        await self._with_retries(
            ref, what, lambda: self._finish_upload(ref, what, location, digest, None, 0)
        )
        return "uploaded"

    async def _patch_chunk(
        self,
        ref: RegistryReference,
        what: str,
        location: httpx.URL,
        source: Path,
        offset: int,
        length: int,
        on_bytes: Callable[[int], None],
    ) -> tuple[httpx.URL, int]:
        request = self._build(
            "PATCH",
            location,
            headers={"Content-Range": f"{offset}-{offset + length - 1}"},
            body=FileSliceStream(source, offset, length, on_bytes=on_bytes),
            length=length,
        )
        response = await self.http.send(request)
        await response.aread()
        if response.status_code != 202:
            raise _status_error(ref, what, response)
        end = _range_end(response)
        return _location(ref, response), (end + 1 if end is not None else offset + length)

    async def _upload_status(
        self,
        ref: RegistryReference,
        what: str,
        location: httpx.URL,
        digest: str,
        known_offset: int,
    ) -> tuple[httpx.URL, int]:
        """Where an interrupted upload stands; a fresh session if the registry lost it.

        Distribution answers ``Range: 0-0`` for both an empty upload and a one-byte one;
        with nothing confirmed before, that is taken as empty.
        """
        response = await self._send(
            ref, f"{what} (status)", "GET", location, ok=(204,), not_found_ok=True
        )
        if response.status_code == 404:
            fresh = await self._with_retries(
                ref, what, lambda: self._start_upload(ref, digest, None)
            )
            assert fresh is not None
            return fresh, 0
        end = _range_end(response)
        offset = 0 if end is None or (end == 0 and known_offset == 0) else end + 1
        return _location(ref, response, default=location), offset


class _BytesStream(httpx.AsyncByteStream):
    """A small in-memory body that can be sent more than once."""

    def __init__(self, content: bytes) -> None:
        self._content = content

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._content


# -- helpers -------------------------------------------------------------------------------


def _media_type(response: httpx.Response) -> str:
    value: str = response.headers.get("Content-Type", "")
    return value.split(";", 1)[0].strip()


def _embedded_media_type(content: bytes) -> str:
    try:
        document = json.loads(content)
    except ValueError:
        return ""
    value: object = document.get("mediaType") if isinstance(document, dict) else None
    return value if isinstance(value, str) else ""


def _location(
    ref: RegistryReference, response: httpx.Response, *, default: httpx.URL | None = None
) -> httpx.URL:
    """The absolute upload URL from ``Location`` (which may be relative)."""
    value = response.headers.get("Location")
    if not value:
        if default is not None:
            return default
        raise RegistryError(
            f"{response.request.method} {response.request.url.path}: no Location header",
            status_code=response.status_code,
            registry=ref.registry,
        )
    return response.request.url.join(value)


def _range_end(response: httpx.Response) -> int | None:
    """The last byte offset in a ``Range: 0-N`` upload-status header."""
    match = _UPLOAD_RANGE_RE.match(response.headers.get("Range", "").strip())
    return int(match.group(1)) if match else None


def _range_start(response: httpx.Response) -> int | None:
    """The first byte offset of a ``Content-Range: bytes N-M/T`` response header."""
    value = response.headers.get("Content-Range", "")
    unit, _, rest = value.partition(" ")
    start = rest.split("-", 1)[0]
    return int(start) if unit == "bytes" and start.isdigit() else None


def _error_detail(response: httpx.Response) -> str:
    """``CODE: message`` from a registry error body, or the HTTP reason."""
    try:
        content = response.content[:_MAX_ERROR_BODY]
        errors = json.loads(content).get("errors") if content else None
    except (ValueError, AttributeError, httpx.ResponseNotRead):
        errors = None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        code = errors[0].get("code", "")
        message = errors[0].get("message", "")
        return f"{code}: {message}".strip(": ")
    return response.reason_phrase or "error"


def _status_error(
    ref: RegistryReference, what: str, response: httpx.Response, *, digest: str | None = None
) -> Exception:
    status = response.status_code
    detail = _error_detail(response)
    if status in RETRYABLE_STATUS:
        return RetryableStatus(
            status, f"{status} {detail}", parse_retry_after(response.headers.get("Retry-After"))
        )
    if status in (401, 403):
        return AuthError(
            f"{what}: access denied ({status} {detail})",
            status_code=status,
            registry=ref.registry,
        )
    if status == 404:
        return NotFoundError(
            f"{what}: not found ({detail})",
            status_code=status,
            registry=ref.registry,
            layer=digest,
        )
    return RegistryError(
        f"{what} failed: {status} {detail}", status_code=status, registry=ref.registry
    )


def _is_tls_failure(error: BaseException) -> bool:
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(error)


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _retry_after(error: BaseException) -> float | None:
    """The wait a ``Retry-After`` header asked for, if ``error`` is a status that sent one."""
    return error.retry_after if isinstance(error, RetryableStatus) else None


def _gave_up(
    ref: RegistryReference, what: str, error: RetryableStatus | httpx.TransportError, note: str
) -> RegistryError:
    """The error for a retryable failure that is not retried again (``note`` says why)."""
    if isinstance(error, RetryableStatus):
        return RegistryError(
            f"{what} failed: {error.message}{note}",
            status_code=error.status_code,
            registry=ref.registry,
        )
    return _transport_error(ref, what, error)


def _transport_error(ref: RegistryReference, what: str, error: BaseException) -> RegistryError:
    if _is_tls_failure(error):
        return RegistryError(
            f"TLS verification failed for {ref.endpoint}: {_describe(error)}"
            " (configure the registry's CA, or mark it insecure)",
            registry=ref.registry,
        )
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
        return RegistryError(
            f"cannot connect to {ref.endpoint}: {_describe(error)}", registry=ref.registry
        )
    return RegistryError(f"{what}: connection failed: {_describe(error)}", registry=ref.registry)
