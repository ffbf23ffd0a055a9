"""Blob pushes: ``HEAD`` first, cross-repository mount, monolithic ``PUT`` or chunked ``PATCH``.

An upload session (``POST`` → ``Location``) is driven by :class:`_UploadSession`. The whole
push is one operation under the client's retry helper: after a failure, a monolithic push
starts a new session, and a chunked one asks the registry where the session stands (a
fresh session if the registry lost it) and carries on from there.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import httpx

from esgz.errors import VerificationError
from esgz.oci.digest import sha256_of
from esgz.oci.reference import RegistryReference
from esgz.registry.blobs import Blobs
from esgz.registry.http import RegistryHTTP, location_of
from esgz.registry.model import ProgressCallback, PushOutcome
from esgz.registry.retry import RetryableStatus
from esgz.registry.transfer import BytesStream, FileSliceStream

__all__ = ["Uploads"]

log = logging.getLogger(__name__)

_UPLOAD_RANGE_RE = re.compile(r"(?:bytes=)?0-([0-9]{1,19})")


class Uploads:
    """Blob pushes over a shared :class:`RegistryHTTP` (see the module docs).

    Blobs up to ``monolithic_threshold`` bytes go in one ``PUT``; larger ones in ``PATCH``
    chunks of ``chunk_size`` bytes.
    """

    def __init__(
        self,
        http: RegistryHTTP,
        blobs: Blobs,
        *,
        monolithic_threshold: int,
        chunk_size: int,
    ) -> None:
        self._http = http
        self._blobs = blobs
        self.monolithic_threshold = monolithic_threshold
        self.chunk_size = chunk_size

    async def push(
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
        progress = on_progress if on_progress is not None else self._blobs.on_progress
        http = self._http
        async with http.limiter:
            if http.is_confirmed(ref, digest) or await self._blobs.size(ref, digest) == size:
                http.confirm(ref, digest)
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
            session = _UploadSession(http, ref, digest, size, mount)
            chunked = size > self.monolithic_threshold
            outcome = await http.retrying(
                ref,
                session.what,
                lambda: session.run(source, self.chunk_size if chunked else None, progress),
                before_retry=session.interrupted,
            )
            if outcome == "mounted" and progress is not None:
                progress(digest, size, size)
        http.confirm(ref, digest)
        return outcome

    async def push_bytes(
        self, ref: RegistryReference, content: bytes, *, digest: str | None = None
    ) -> str:
        """Push a small in-memory blob (an image config); return its digest."""
        actual = sha256_of(content)
        digest = digest or actual
        if actual != digest:
            raise VerificationError(f"content is not {digest}", layer=digest)
        http = self._http
        if http.is_confirmed(ref, digest) or await self._blobs.size(ref, digest) == len(content):
            http.confirm(ref, digest)
            return digest
        session = _UploadSession(http, ref, digest, len(content), None)
        await http.retrying(ref, session.what, lambda: session.run_bytes(content))
        http.confirm(ref, digest)
        return digest


@dataclass
class _UploadSession:
    """One blob's upload: where its session is, how much the registry holds, what failed."""

    http: RegistryHTTP
    ref: RegistryReference
    digest: str
    size: int
    mount_from: RegistryReference | None
    location: httpx.URL | None = None
    offset: int = 0
    needs_status: bool = False

    @property
    def what(self) -> str:
        """The operation, for messages."""
        return f"push blob {self.digest} to {self.ref.repository}"

    def interrupted(self) -> None:
        """An attempt failed: a chunked session asks where it stands before going on."""
        self.needs_status = self.location is not None

    async def run(
        self, source: Path, chunk_size: int | None, progress: ProgressCallback | None
    ) -> PushOutcome:
        """One attempt: ``PUT`` the whole file (``chunk_size`` None), or go on with chunks."""
        if chunk_size is None:
            self.location, self.offset = None, 0
        elif self.needs_status:
            await self._refresh()
        if self.location is None:
            self.location = await self._start(self.mount_from)
            if self.location is None:
                return "mounted"
        if chunk_size is None:
            body = FileSliceStream(source, 0, self.size, on_bytes=self._reporter(0, progress))
            await self._finish(body, self.size)
            return "uploaded"
        while self.offset < self.size:
            length = min(chunk_size, self.size - self.offset)
            body = FileSliceStream(
                source, self.offset, length, on_bytes=self._reporter(self.offset, progress)
            )
            await self._patch(body, length)
        await self._finish(None, 0)
        return "uploaded"

    async def run_bytes(self, content: bytes) -> None:
        """One attempt at a monolithic upload of ``content``."""
        self.location = await self._start(None)
        assert self.location is not None
        await self._finish(BytesStream(content), len(content))

    def _reporter(self, start: int, progress: ProgressCallback | None) -> _ProgressReporter | None:
        return (
            None if progress is None else _ProgressReporter(self.digest, start, self.size, progress)
        )

    async def _start(self, mount_from: RegistryReference | None) -> httpx.URL | None:
        """``POST`` an upload (or a mount); the session URL, or ``None`` if mounted."""
        params = {"mount": self.digest, "from": mount_from.repository} if mount_from else None
        response = await self.http.request(
            self.ref,
            f"start upload of {self.digest} to {self.ref.repository}",
            "POST",
            self.http.uploads_url(self.ref),
            ok=(201, 202),
            params=params,
        )
        if response.status_code == 201 and mount_from is not None:
            return None
        self.offset = 0
        return location_of(self.ref, response)

    async def _patch(self, body: FileSliceStream, length: int) -> None:
        """Send one chunk; move on to where the registry says it now stands."""
        assert self.location is not None
        response = await self.http.request(
            self.ref,
            self.what,
            "PATCH",
            self.location,
            ok=(202,),
            headers={"Content-Range": f"{self.offset}-{self.offset + length - 1}"},
            body=body,
            body_length=length,
        )
        end = _range_end(response)
        new_offset = end + 1 if end is not None else self.offset + length
        self.location = location_of(self.ref, response)
        if not self.offset < new_offset <= self.size:
            raise RetryableStatus(
                202, f"registry reports offset {new_offset} after the chunk at {self.offset}", None
            )
        self.offset = new_offset

    async def _refresh(self) -> None:
        """Where an interrupted session stands; a fresh session if the registry lost it.

        Distribution answers ``Range: 0-0`` for both an empty upload and a one-byte one;
        with nothing confirmed before, that is taken as empty.
        """
        assert self.location is not None
        self.needs_status = False
        response = await self.http.request(
            self.ref, f"{self.what} (status)", "GET", self.location, ok=(204,), not_found_ok=True
        )
        if response.status_code == 404:
            log.info("%s: upload session lost; starting again", self.what)
            self.location, self.offset = None, 0
            return
        end = _range_end(response)
        known = self.offset
        self.offset = 0 if end is None or (end == 0 and known == 0) else min(end + 1, self.size)
        self.location = location_of(self.ref, response, default=self.location)

    async def _finish(self, body: httpx.AsyncByteStream | None, length: int) -> None:
        """The closing ``PUT ?digest=``; the registry must store exactly ``digest``."""
        assert self.location is not None
        response = await self.http.request(
            self.ref,
            self.what,
            "PUT",
            self.location.copy_add_param("digest", self.digest),
            ok=(201,),
            body=body,
            body_length=length,
            digest=self.digest,
        )
        served = response.headers.get("Docker-Content-Digest")
        if served and served != self.digest:
            raise VerificationError(
                f"registry stored the blob as {served}",
                layer=self.digest,
                registry=self.ref.registry,
            )


@dataclass
class _ProgressReporter:
    """Turns byte counts of one request body into ``progress(digest, done, total)``."""

    digest: str
    done: int
    total: int
    progress: ProgressCallback

    def __call__(self, count: int) -> None:
        self.done += count
        self.progress(self.digest, self.done, self.total)


def _range_end(response: httpx.Response) -> int | None:
    """The last byte offset in a ``Range: 0-N`` upload-status header."""
    match = _UPLOAD_RANGE_RE.fullmatch(response.headers.get("Range", "").strip())
    return int(match.group(1)) if match else None
