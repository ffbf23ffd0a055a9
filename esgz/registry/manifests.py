"""Manifests and indexes: resolve a tag, fetch a document, check one, push one.

Documents are read with the Docker + OCI ``Accept`` list, capped at
:data:`~esgz.registry.limits.MAX_MANIFEST_SIZE` while they arrive, verified against the
digest asked for (or the one the registry announces), and must be strict, readable JSON
objects. A document is pushed only once
everything it references is confirmed in the repository.
"""

from __future__ import annotations

from collections.abc import Iterable

import anyio
import httpx

from esgz.errors import NotFoundError, RegistryError, VerificationError
from esgz.oci.digest import is_digest, sha256_of
from esgz.oci.mediatypes import MANIFEST_ACCEPT, is_index
from esgz.oci.reference import RegistryReference
from esgz.registry.blobs import Blobs
from esgz.registry.http import RegistryHTTP
from esgz.registry.limits import MAX_MANIFEST_SIZE, describe_size
from esgz.registry.model import BlobRef, FetchedManifest, ManifestInfo
from esgz.registry.transfer import BytesStream
from esgz.registry.untrusted import header_int, json_object

__all__ = ["Manifests"]

_ACCEPT_MANIFESTS = {"Accept": ", ".join(MANIFEST_ACCEPT)}


class Manifests:
    """Manifest operations over a shared :class:`RegistryHTTP` (see the module docs)."""

    def __init__(self, http: RegistryHTTP, blobs: Blobs) -> None:
        self._http = http
        self._blobs = blobs

    async def resolve(self, ref: RegistryReference) -> ManifestInfo:
        """Resolve ``ref``'s tag (or digest) to the manifest's digest, media type and size.

        Uses ``HEAD``; when the registry sends no usable ``Docker-Content-Digest`` the
        manifest is fetched and hashed.
        """
        what = f"resolve {ref}"
        response = await self._http.send(
            ref, what, "HEAD", self._http.manifest_url(ref), ok=(200,), headers=_ACCEPT_MANIFESTS
        )
        digest = response.headers.get("Docker-Content-Digest", "")
        media_type = _media_type(response)
        length = header_int(response.headers.get("Content-Length"))
        if is_digest(digest) and media_type and length is not None:
            if ref.digest is not None and digest != ref.digest:
                raise VerificationError(
                    f"registry resolved {ref} to {digest}", image=str(ref), layer=ref.digest
                )
            if length > MAX_MANIFEST_SIZE:
                raise RegistryError(
                    f"{what}: manifest larger than {describe_size(MAX_MANIFEST_SIZE)}",
                    registry=ref.registry,
                )
            return ManifestInfo(digest, media_type, length)
        fetched = await self.fetch(ref)
        return ManifestInfo(fetched.digest, fetched.media_type, len(fetched.content))

    async def fetch(self, ref: RegistryReference) -> FetchedManifest:
        """Fetch the manifest or index ``ref`` names, verified against its digest."""
        what = f"fetch manifest {ref}"
        response = await self._http.send(
            ref,
            what,
            "GET",
            self._http.manifest_url(ref),
            ok=(200,),
            headers=_ACCEPT_MANIFESTS,
            limit=MAX_MANIFEST_SIZE,
        )
        content = response.content
        digest = sha256_of(content)
        served = response.headers.get("Docker-Content-Digest", "")
        expected = ref.digest or (served if served.startswith("sha256:") else None)
        if expected is not None and expected != digest:
            raise VerificationError(
                f"manifest digest mismatch: expected {expected}, got {digest}",
                image=str(ref),
                registry=ref.registry,
            )
        document = json_object(content)
        if document is None:
            # Parsers further on (esgz.oci) need not survive what a registry may send.
            raise RegistryError(f"{what}: not a readable JSON object", registry=ref.registry)
        embedded = document.get("mediaType")
        media_type = _media_type(response) or (embedded if isinstance(embedded, str) else "")
        if not media_type:
            raise RegistryError(f"{what}: no media type", registry=ref.registry)
        self._http.confirm(ref, digest)
        return FetchedManifest(digest, media_type, content)

    async def exists(self, ref: RegistryReference) -> bool:
        """Whether the registry has the manifest ``ref`` names (tag or digest)."""
        response = await self._http.send(
            ref,
            f"check manifest {ref}",
            "HEAD",
            self._http.manifest_url(ref),
            ok=(200,),
            headers=_ACCEPT_MANIFESTS,
            not_found_ok=True,
        )
        return response.status_code == 200

    async def push(
        self,
        ref: RegistryReference,
        content: bytes,
        media_type: str,
        *,
        references: Iterable[BlobRef],
    ) -> str:
        """Push a manifest under ``ref``'s digest if it has one, else its tag; the digest.

        A ``Docker-Content-Digest`` answer that differs from the content's digest raises
        :class:`~esgz.errors.VerificationError`; a missing one is accepted (see
        :meth:`push_tagged` for a push that insists on it).
        """
        digest = _checked_digest(ref, content)
        await self.require_present(ref, list(references), manifests=is_index(media_type))
        target = ref.tag if ref.digest is None and ref.tag else digest
        served = await self._put(ref, target, content, media_type)
        if served and served != digest:
            raise VerificationError(
                f"registry stored manifest as {served}, expected {digest}", image=str(ref)
            )
        self._http.confirm(ref, digest)
        return digest

    async def push_tagged(
        self,
        ref: RegistryReference,
        content: bytes,
        media_type: str,
        *,
        references: Iterable[BlobRef],
    ) -> ManifestInfo:
        """Push a manifest under ``ref``'s tag, once, and make sure of the digest it got.

        One ``PUT`` to ``/manifests/<tag>``. The registry's ``Docker-Content-Digest``
        must equal the content's digest; a registry that sends none (or one in another
        algorithm) is asked with a ``HEAD`` by that digest instead. So the manifest is
        then addressable both by the tag and by the returned digest, without a second
        ``PUT`` by digest. ``ref`` must carry a tag; if it also carries a digest, the
        content must match it.
        """
        if not ref.tag:
            raise ValueError(f"{ref} has no tag to push the manifest under")
        digest = _checked_digest(ref, content)
        await self.require_present(ref, list(references), manifests=is_index(media_type))
        served = await self._put(ref, ref.tag, content, media_type)
        if served.startswith("sha256:"):
            if served != digest:
                raise VerificationError(
                    f"registry stored manifest as {served}, expected {digest}",
                    image=str(ref),
                    registry=ref.registry,
                )
        elif not await self.exists(ref.with_digest(digest)):
            raise VerificationError(
                f"registry accepted manifest {ref.tag} but has no {digest}",
                image=str(ref),
                registry=ref.registry,
            )
        self._http.confirm(ref, digest)
        return ManifestInfo(digest, media_type, len(content))

    async def _put(
        self, ref: RegistryReference, target: str, content: bytes, media_type: str
    ) -> str:
        """``PUT`` the document to ``/manifests/<target>``; the digest the registry answers."""
        response = await self._http.send(
            ref,
            f"push manifest {ref}",
            "PUT",
            self._http.manifest_url(ref, target),
            ok=(200, 201),
            headers={"Content-Type": media_type},
            body=BytesStream(content),
            body_length=len(content),
        )
        served: str = response.headers.get("Docker-Content-Digest", "")
        return served.strip()

    async def require_present(
        self, ref: RegistryReference, references: list[BlobRef], *, manifests: bool
    ) -> None:
        """Make sure every reference is in ``ref``'s repository, or raise NotFoundError.

        The ones not yet confirmed are checked with ``HEAD``, at most
        ``max_concurrent_transfers`` at once (an index may list thousands).
        """
        missing: list[str] = []
        limiter = anyio.CapacityLimiter(self._http.max_concurrent_transfers)

        async def check(item: BlobRef) -> None:
            async with limiter:
                present = await self._present(ref, item, manifests=manifests)
            if present:
                self._http.confirm(ref, item.digest)
            else:
                missing.append(item.digest)

        try:
            async with anyio.create_task_group() as group:
                for item in references:
                    if not self._http.is_confirmed(ref, item.digest):
                        group.start_soon(check, item)
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        if missing:
            kind = "manifest" if manifests else "blob"
            raise NotFoundError(
                f"not pushing manifest {ref}: {kind} {sorted(missing)[0]} is not in"
                f" {ref.repository}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                registry=ref.registry,
            )

    async def _present(self, ref: RegistryReference, item: BlobRef, *, manifests: bool) -> bool:
        """Whether ``item`` (a manifest, or a blob of its size) is in ``ref``'s repository."""
        if manifests:
            return await self.exists(ref.with_digest(item.digest))
        return await self._blobs.size(ref, item.digest) == item.size


def _checked_digest(ref: RegistryReference, content: bytes) -> str:
    digest = sha256_of(content)
    if ref.digest is not None and ref.digest != digest:
        raise VerificationError(f"manifest content is {digest}, not {ref.digest}", image=str(ref))
    return digest


def _media_type(response: httpx.Response) -> str:
    value: str = response.headers.get("Content-Type", "")
    return value.split(";", 1)[0].strip()
