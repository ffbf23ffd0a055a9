"""The connection core the registry client's parts share: httpx client, auth, retries, caps.

:class:`RegistryHTTP` owns the one ``httpx.AsyncClient`` (auth flow, per-registry TLS,
environment proxies, the body caps of :mod:`~esgz.registry.limits`), the capacity limiter
bounding blob transfers, the set of blobs and manifests known to be in a repository, and
the one retry loop (:meth:`RegistryHTTP.retrying`). URLs are built from a reference
alone; nothing else is learnt from them.
"""

from __future__ import annotations

import logging
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TypeVar

import anyio
import httpx

from esgz.errors import RegistryError
from esgz.oci.reference import DOCKER_HUB_ENDPOINT, DOCKER_HUB_REGISTRY, RegistryReference
from esgz.registry.auth import RegistryAuth
from esgz.registry.credentials import CredentialProvider, DockerConfigCredentials
from esgz.registry.failures import (
    describe,
    gave_up,
    is_retryable_transport_error,
    request_failed,
    status_error,
    transport_error,
)
from esgz.registry.limits import (
    DEFAULT_BODY_LIMIT,
    ResponseTooLarge,
    cap_response_body,
    set_body_limit,
)
from esgz.registry.options import RegistryOptions, build_ssl_context_sync, options_for
from esgz.registry.retry import RetryableStatus, RetryPolicy

__all__ = ["MAX_REDIRECTS", "RegistryHTTP", "location_of"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Redirects followed for one request (blob downloads may be sent to a storage host).
MAX_REDIRECTS = 10
_OCTET_STREAM = "application/octet-stream"


class RegistryHTTP:
    """One httpx client for any number of registries, with retries and confirmations.

    Open with :meth:`open` (builds SSL contexts in a worker thread), close with
    :meth:`aclose`. ``transport`` replaces the network (tests use ``httpx.MockTransport``).
    """

    def __init__(
        self,
        *,
        credentials: CredentialProvider | None,
        options: Mapping[str, RegistryOptions],
        retry: RetryPolicy,
        max_concurrent_transfers: int,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        self.options = dict(options)
        self.retry = retry
        self.max_concurrent_transfers = max_concurrent_transfers
        self.auth = RegistryAuth(
            credentials if credentials is not None else DockerConfigCredentials()
        )
        self._timeout = timeout
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._limiter: anyio.CapacityLimiter | None = None
        self._confirmed: set[tuple[str, str, str]] = set()

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the httpx client (SSL contexts load files: done in a worker thread)."""
        self._http = await anyio.to_thread.run_sync(self._build_client_sync)
        self._limiter = anyio.CapacityLimiter(self.max_concurrent_transfers)

    async def aclose(self) -> None:
        """Close the connections."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _build_client_sync(self) -> httpx.AsyncClient:
        """The shared httpx client (blocking: builds SSL contexts).

        TLS is verified against the system store (``SSL_CERT_FILE`` / ``SSL_CERT_DIR``
        honoured); proxies come from the environment (``HTTP(S)_PROXY``, ``NO_PROXY``),
        also for registries with their own TLS options, which get their own transport.
        """
        limits = httpx.Limits(
            max_connections=self.max_concurrent_transfers * 2 + 4,
            max_keepalive_connections=self.max_concurrent_transfers * 2 + 4,
        )
        timeout = httpx.Timeout(self._timeout, pool=None)
        headers = {"User-Agent": "esgz", "Accept-Encoding": "identity"}
        hooks = {"response": [cap_response_body]}
        if self._transport is not None:
            return httpx.AsyncClient(
                transport=self._transport,
                auth=self.auth,
                timeout=timeout,
                headers=headers,
                max_redirects=MAX_REDIRECTS,
                event_hooks=hooks,
            )
        mounts: dict[str, httpx.AsyncBaseTransport | None] = {}
        environment_proxies = urllib.request.getproxies()
        for registry, opts in self.options.items():
            if opts.plain_http or (opts.ca_file is None and not opts.insecure):
                continue
            host = DOCKER_HUB_ENDPOINT if registry == DOCKER_HUB_REGISTRY else registry
            proxy = None if urllib.request.proxy_bypass(host) else environment_proxies.get("https")
            mounts[f"https://{host}"] = httpx.AsyncHTTPTransport(
                verify=build_ssl_context_sync(opts), limits=limits, proxy=proxy
            )
        return httpx.AsyncClient(
            auth=self.auth,
            timeout=timeout,
            headers=headers,
            max_redirects=MAX_REDIRECTS,
            event_hooks=hooks,
            verify=build_ssl_context_sync(RegistryOptions()),
            trust_env=True,
            limits=limits,
            mounts=mounts,
        )

    @property
    def client(self) -> httpx.AsyncClient:
        """The shared httpx client (only while open)."""
        if self._http is None:
            raise RuntimeError("RegistryClient used outside 'async with'")
        return self._http

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        """Bounds blob transfers in flight."""
        if self._limiter is None:
            raise RuntimeError("RegistryClient used outside 'async with'")
        return self._limiter

    # -- addresses -------------------------------------------------------------------------

    def repo_url(self, ref: RegistryReference) -> str:
        """``http(s)://endpoint/v2/<repository>`` for ``ref``."""
        plain = ref.plain_http or options_for(ref.registry, self.options).plain_http
        return f"{'http' if plain else 'https'}://{ref.endpoint}/v2/{ref.repository}"

    def manifest_url(self, ref: RegistryReference, name: str | None = None) -> str:
        """The manifest URL for ``name`` (a tag or digest; default: what ``ref`` names)."""
        return f"{self.repo_url(ref)}/manifests/{name or ref.object}"

    def blob_url(self, ref: RegistryReference, digest: str) -> str:
        """The URL of blob ``digest`` in ``ref``'s repository."""
        return f"{self.repo_url(ref)}/blobs/{digest}"

    def uploads_url(self, ref: RegistryReference) -> str:
        """Where upload sessions of ``ref``'s repository start."""
        return f"{self.repo_url(ref)}/blobs/uploads/"

    # -- what is known to be there ---------------------------------------------------------

    def confirm(self, ref: RegistryReference, digest: str) -> None:
        """Remember that ``digest`` is in ``ref``'s repository."""
        self._confirmed.add((ref.endpoint, ref.repository, digest))

    def is_confirmed(self, ref: RegistryReference, digest: str) -> bool:
        """Whether ``digest`` is known to be in ``ref``'s repository."""
        return (ref.endpoint, ref.repository, digest) in self._confirmed

    # -- requests --------------------------------------------------------------------------

    def build(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        body: httpx.AsyncByteStream | None = None,
        length: int = 0,
        limit: int | None = DEFAULT_BODY_LIMIT,
    ) -> httpx.Request:
        """A request with the client's defaults, an optional re-sendable body, a body cap.

        ``limit`` caps a successful answer's body, ``None`` lifts the cap for a body that is
        streamed to disk (see :mod:`~esgz.registry.limits`).
        """
        template = self.client.build_request(method, url, headers=headers, params=params)
        if body is None:
            if method in ("POST", "PUT", "PATCH"):
                template.headers["Content-Length"] = "0"
            return set_body_limit(template, limit)
        request_headers = httpx.Headers(template.headers)
        request_headers["Content-Length"] = str(length)
        request_headers.setdefault("Content-Type", _OCTET_STREAM)
        request = httpx.Request(
            method,
            template.url,
            headers=request_headers,
            stream=body,
            extensions=dict(template.extensions),
        )
        return set_body_limit(request, limit)

    async def request(
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
        limit: int = DEFAULT_BODY_LIMIT,
        digest: str | None = None,
    ) -> httpx.Response:
        """One attempt, its (capped) body read; a status not in ``ok`` raises.

        Retryable failures raise :class:`RetryableStatus` or ``httpx.TransportError``:
        call it inside :meth:`retrying` (or use :meth:`send`).
        """
        accepted = set(ok)
        request = self.build(
            method, url, headers=headers, params=params, body=body, length=body_length, limit=limit
        )
        if body is not None:
            response = await self.client.send(request, follow_redirects=follow_redirects)
            await response.aread()
        else:
            response = await self._send_within_timeout(request, follow_redirects)
        if response.status_code in accepted or (not_found_ok and response.status_code == 404):
            return response
        raise status_error(ref, what, response, digest=digest)

    async def _send_within_timeout(
        self, request: httpx.Request, follow_redirects: bool
    ) -> httpx.Response:
        """Send a request without a body and read its (capped) answer, all within a deadline.

        httpx's timeout bounds each read; an answer trickling in a byte at a time would pass
        every one of them. What esgz keeps in memory is small, so the whole exchange (a
        token fetch included) gets twice the timeout of a single read, and no more.
        """
        deadline = 2 * self._timeout
        response: httpx.Response | None = None
        with anyio.move_on_after(deadline) as scope:
            response = await self.client.send(request, follow_redirects=follow_redirects)
            await response.aread()
        if scope.cancelled_caught or response is None:
            if response is not None:
                with anyio.CancelScope(shield=True):
                    await response.aclose()
            raise httpx.ReadTimeout(f"no complete answer within {deadline:g}s", request=request)
        return response

    async def send(
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
        limit: int = DEFAULT_BODY_LIMIT,
    ) -> httpx.Response:
        """:meth:`request` under the retry policy."""
        return await self.retrying(
            ref,
            what,
            lambda: self.request(
                ref,
                what,
                method,
                url,
                ok=ok,
                headers=headers,
                params=params,
                body=body,
                body_length=body_length,
                not_found_ok=not_found_ok,
                follow_redirects=follow_redirects,
                limit=limit,
            ),
        )

    async def retrying(
        self,
        ref: RegistryReference,
        what: str,
        operation: Callable[[], Awaitable[T]],
        *,
        before_retry: Callable[[], None] | None = None,
    ) -> T:
        """Run ``operation`` under the retry policy: the one retry loop of the client.

        Connection errors and retryable statuses are tried again after the policy's wait
        (``before_retry`` is called before the next attempt, e.g. to mark an upload for a
        status check). What is left — the policy spent, TLS, a redirect loop, an oversized
        answer — becomes a one-line :class:`~esgz.errors.RegistryError` naming ``what``.
        """
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await operation()
            except (RetryableStatus, httpx.TransportError) as error:
                if isinstance(error, httpx.TransportError) and not is_retryable_transport_error(
                    error
                ):
                    raise transport_error(ref, what, error) from None
                retry_after = error.retry_after if isinstance(error, RetryableStatus) else None
                delay = self.retry.next_delay(attempt, started, retry_after)
                if delay is None:
                    raise gave_up(
                        ref, what, error, f" (gave up after {attempt} attempts)"
                    ) from None
                log.info("%s: %s; retrying in %.2fs", what, describe(error), delay)
                await anyio.sleep(delay)
                if before_retry is not None:
                    before_retry()
            except ResponseTooLarge as error:
                raise ResponseTooLarge(
                    f"{what}: {error.message}", registry=ref.registry, announced=error.announced
                ) from None
            except (httpx.RequestError, httpx.InvalidURL) as error:
                raise request_failed(ref, what, error) from None


def location_of(
    ref: RegistryReference, response: httpx.Response, *, default: httpx.URL | None = None
) -> httpx.URL:
    """The absolute URL in ``Location`` (which may be relative), or ``default``."""
    value = response.headers.get("Location")
    if not value:
        if default is not None:
            return default
        raise RegistryError(
            f"{response.request.method} {response.request.url.path}: no Location header",
            status_code=response.status_code,
            registry=ref.registry,
        )
    try:
        location = response.request.url.join(value)
    except httpx.InvalidURL:
        location = None
    if location is None or location.scheme not in ("http", "https"):
        raise RegistryError(
            f"{response.request.method} {response.request.url.path}: unusable Location header",
            status_code=response.status_code,
            registry=ref.registry,
        )
    return location
