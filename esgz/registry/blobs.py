"""Blob pulls: size checks, small blobs into memory, large ones streamed to a file.

A blob is never read past the size it should have: the expected size (or the
``max_size`` of an in-memory read) is the cap on the answer's body
(:mod:`~esgz.registry.limits`), checked while the bytes arrive. Streamed pulls are hashed on
the fly, resumed with ``Range`` after a dropped connection, and only renamed into place
once digest and size match.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx

from esgz.errors import RegistryError, VerificationError
from esgz.oci.blobstore import BlobStore
from esgz.oci.digest import sha256_of
from esgz.oci.reference import RegistryReference
from esgz.registry.failures import status_error
from esgz.registry.http import RegistryHTTP
from esgz.registry.limits import MAX_CONFIG_BLOB, ResponseTooLarge, describe_size
from esgz.registry.model import ProgressCallback
from esgz.registry.transfer import VerifyingBlobWriter
from esgz.registry.untrusted import header_int

__all__ = ["Blobs"]

log = logging.getLogger(__name__)

_IDENTITY = {"Accept-Encoding": "identity"}


class Blobs:
    """Blob reads over a shared :class:`RegistryHTTP` (see the module docs)."""

    def __init__(self, http: RegistryHTTP, on_progress: ProgressCallback | None) -> None:
        self._http = http
        self.on_progress = on_progress

    async def size(self, ref: RegistryReference, digest: str) -> int | None:
        """The size of blob ``digest`` in ``ref``'s repository, or ``None`` if absent."""
        response = await self._http.send(
            ref,
            f"check blob {digest} in {ref.repository}",
            "HEAD",
            self._http.blob_url(ref, digest),
            ok=(200,),
            not_found_ok=True,
            follow_redirects=True,
        )
        if response.status_code == 404:
            return None
        return header_int(response.headers.get("Content-Length"))

    async def pull_bytes(
        self, ref: RegistryReference, digest: str, *, max_size: int = MAX_CONFIG_BLOB
    ) -> bytes:
        """A small blob (an image config) in memory, verified against ``digest``.

        A blob announced (or found, while it arrives) larger than ``max_size`` is refused.
        """
        what = f"fetch blob {digest} from {ref.repository}"
        try:
            response = await self._http.send(
                ref,
                what,
                "GET",
                self._http.blob_url(ref, digest),
                ok=(200,),
                headers=_IDENTITY,
                follow_redirects=True,
                limit=max_size,
            )
        except ResponseTooLarge:
            raise RegistryError(
                f"{what}: larger than {describe_size(max_size)}", registry=ref.registry
            ) from None
        content = response.content
        actual = sha256_of(content)
        if actual != digest:
            raise VerificationError(
                f"digest mismatch: expected {digest}, got {actual}",
                layer=digest,
                registry=ref.registry,
            )
        self._http.confirm(ref, digest)
        return content

    async def pull(
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
        progress = on_progress if on_progress is not None else self.on_progress
        url = self._http.blob_url(ref, digest)
        what = f"pull blob {digest} from {ref.repository}"
        http = self._http
        async with http.limiter, VerifyingBlobWriter(destination, digest, size) as writer:
            total = size or 0

            async def attempt() -> None:
                nonlocal total
                headers = dict(_IDENTITY)
                resume_from = writer.written
                if resume_from:
                    headers["Range"] = f"bytes={resume_from}-"
                # Capped at the whole blob: a ranged request may get all of it again.
                request = http.build("GET", url, headers=headers, limit=size)
                response = await http.client.send(request, stream=True, follow_redirects=True)
                chunks = response.aiter_raw()
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
                        raise status_error(ref, what, response, digest=digest)
                    length = header_int(response.headers.get("Content-Length"))
                    if length is not None:
                        announced = writer.written + length
                        if size is not None and announced != size:
                            raise VerificationError(
                                f"registry sends {announced} bytes, expected {size}",
                                layer=digest,
                            )
                        total = total or announced
                    await writer.receive(
                        chunks,
                        None if progress is None else lambda n: progress(digest, n, total),
                    )
                finally:
                    with anyio.CancelScope(shield=True):
                        await _close(response, chunks)
                if size is not None and writer.written < size:
                    raise httpx.RemoteProtocolError(
                        f"body ended after {writer.written} of {size} bytes", request=request
                    )

            try:
                await http.retrying(ref, what, attempt)
                path = await writer.commit()
            except ResponseTooLarge as error:
                raise VerificationError(
                    f"registry sends {error.announced} bytes, expected {size}"
                    if error.announced is not None
                    else f"blob is larger than the expected {size} bytes",
                    layer=digest,
                    registry=ref.registry,
                ) from None
            except VerificationError as error:
                raise VerificationError(
                    error.message, layer=digest, registry=ref.registry
                ) from None
        http.confirm(ref, digest)
        return path

    async def pull_into(
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
                progress = on_progress if on_progress is not None else self.on_progress
                if progress is not None and size is not None:
                    progress(digest, size, size)
                return existing
        return await self.pull(ref, digest, size, store.path(digest), on_progress=on_progress)


async def _close(response: httpx.Response, chunks: AsyncIterator[bytes]) -> None:
    """Close ``response`` and take its body iterator to its end, wherever it stopped.

    The body iterators are async generators: one left suspended (a failed write, a
    cancellation) would be finalized by the garbage collector. With the connection closed,
    the rest of the iteration is what was already buffered, then an error.
    """
    await response.aclose()
    with contextlib.suppress(httpx.HTTPError, httpx.StreamError, OSError):
        async for _ in chunks:
            pass


def _range_start(response: httpx.Response) -> int | None:
    """The first byte offset of a ``Content-Range: bytes N-M/T`` response header."""
    unit, _, rest = response.headers.get("Content-Range", "").partition(" ")
    return header_int(rest.split("-", 1)[0]) if unit == "bytes" else None
