"""Caps on what esgz reads from a registry, enforced while the bytes arrive.

Every response passes through :func:`cap_response_body` (an httpx ``response`` event hook,
so it also covers the bodies httpx reads on its own: redirects, ``401`` challenges, token
answers). A successful (``2xx``) answer may carry at most the limit its request asked for
with :func:`set_body_limit` (:data:`DEFAULT_BODY_LIMIT` if none, no limit for streamed blob
pulls that ask for ``None``); more raises :class:`ResponseTooLarge` as soon as the limit is
passed (or at once, when ``Content-Length`` announces it). Any other answer (an error, a
redirect, a challenge) is cut to :data:`MAX_ERROR_BODY` bytes: only its first bytes are
ever looked at. An endless body therefore costs at most its limit in memory, not the
gigabytes it would take to find out it never ends. Bodies are never decompressed
(``Content-Encoding`` is dropped; esgz asks for ``identity``), so a small gzip body cannot
expand past its cap either.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from esgz.errors import RegistryError
from esgz.registry.options import registry_for_host
from esgz.registry.untrusted import header_int

__all__ = [
    "DEFAULT_BODY_LIMIT",
    "MAX_CONFIG_BLOB",
    "MAX_ERROR_BODY",
    "MAX_MANIFEST_SIZE",
    "MAX_TOKEN_RESPONSE",
    "ResponseTooLarge",
    "cap_response_body",
    "describe_size",
    "set_body_limit",
]

#: Manifests and indexes larger than this are refused (Distribution's own limit is 4 MiB).
MAX_MANIFEST_SIZE = 4 << 20
#: Default cap on a small blob read into memory (an image config).
MAX_CONFIG_BLOB = 16 << 20
#: Cap on a token endpoint's answer.
MAX_TOKEN_RESPONSE = 1 << 20
#: Cap on a successful answer whose request set no limit.
DEFAULT_BODY_LIMIT = 1 << 20
#: Bytes kept of an error, redirect or challenge body; the rest is not read.
MAX_ERROR_BODY = 64 << 10

_LIMIT_KEY = "esgz.body_limit"


class ResponseTooLarge(RegistryError):
    """A registry (or token endpoint) answered with more bytes than esgz accepts.

    ``announced`` is the ``Content-Length`` that gave it away, if it was announced.
    """

    def __init__(self, message: str, *, registry: str | None, announced: int | None) -> None:
        super().__init__(message, registry=registry)
        self.announced = announced


def set_body_limit(request: httpx.Request, limit: int | None) -> httpx.Request:
    """Cap the body of a successful answer to ``request`` at ``limit`` bytes (``None``: no cap)."""
    request.extensions[_LIMIT_KEY] = limit
    return request


def describe_size(size: int) -> str:
    """``4 MiB``, ``64 KiB`` or ``100000 bytes``."""
    for shift, unit in ((20, "MiB"), (10, "KiB")):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} bytes"


async def cap_response_body(response: httpx.Response) -> None:
    """httpx ``response`` hook: wrap the body so that no more than its cap is ever read."""
    request = response.request
    if "Content-Encoding" in response.headers:
        # esgz asks for identity and hashes bytes as sent: what a server compresses anyway is
        # never inflated (a body within its cap could expand to gigabytes).
        del response.headers["Content-Encoding"]
    if request.method == "HEAD":
        return  # no body; its Content-Length describes what a GET would send
    if 200 <= response.status_code < 300:
        limit = request.extensions.get(_LIMIT_KEY, DEFAULT_BODY_LIMIT)
        if limit is None:
            return
        announced = header_int(response.headers.get("Content-Length"))
        if announced is not None and announced > limit:
            await response.aclose()
            raise _too_large(request, limit, announced)
        strict = True
    else:
        limit = MAX_ERROR_BODY
        strict = False
    if isinstance(response.stream, httpx.AsyncByteStream):
        response.stream = _CappedStream(response.stream, request, limit, strict=strict)


def _too_large(
    request: httpx.Request, limit: int, announced: int | None = None
) -> ResponseTooLarge:
    url = request.url.copy_with(query=None, fragment=None)
    return ResponseTooLarge(
        f"answer to {request.method} {url} is larger than {describe_size(limit)}",
        registry=registry_for_host(request.url.netloc.decode("ascii", "replace")),
        announced=announced,
    )


class _CappedStream(httpx.AsyncByteStream):
    """A response body that stops after ``limit`` bytes: an error if ``strict``, else the end.

    Stopping early closes the connection and then takes the inner iterator to its end
    (it fails at once, the socket being closed): httpx's body iterators are async
    generators, and one abandoned half-way would be left to the garbage collector.
    """

    def __init__(
        self, inner: httpx.AsyncByteStream, request: httpx.Request, limit: int, *, strict: bool
    ) -> None:
        self._inner = inner
        self._request = request
        self._limit = limit
        self._strict = strict

    async def __aiter__(self) -> AsyncIterator[bytes]:
        received = 0
        iterator = self._inner.__aiter__()
        async for chunk in iterator:
            if received + len(chunk) <= self._limit:
                received += len(chunk)
                yield chunk
                continue
            if not self._strict and received < self._limit:
                yield chunk[: self._limit - received]
            await self.aclose()
            try:
                async for _ in iterator:
                    pass
            except (httpx.HTTPError, OSError):
                pass
            if self._strict:
                raise _too_large(self._request, self._limit)
            return

    async def aclose(self) -> None:
        await self._inner.aclose()
