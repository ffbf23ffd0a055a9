"""Where images come from and go to: registries (one shared client) and OCI layouts.

:class:`Endpoints` is opened once per run and gives the stages a uniform way to read a
source image's documents and blobs and to write a target's, whether the reference is a
registry reference or a ``local://`` layout.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.to_thread

from esgz.errors import LayoutError
from esgz.oci.digest import DigestingWriter, sha256_of
from esgz.oci.layout import OCILayout
from esgz.oci.manifest import Descriptor
from esgz.oci.reference import LayoutReference, RegistryReference
from esgz.pipeline.jobs import UploadOutcome
from esgz.registry.client import RegistryClient
from esgz.registry.options import RegistryOptions

__all__ = ["Endpoints", "ProgressFn", "open_endpoints"]

#: ``progress(transferred, total)`` for one blob.
ProgressFn = Callable[[int, int], None]

Reference = RegistryReference | LayoutReference


class Endpoints:
    """Read and write images in registries and OCI layouts."""

    def __init__(self, client: RegistryClient) -> None:
        self.client = client
        self._layouts: dict[Path, OCILayout] = {}
        self._lock = anyio.Lock()
        self._pushed: dict[str, RegistryReference] = {}

    def mount_source(self, digest: str, target: Reference) -> RegistryReference | None:
        """A repository of ``target``'s registry this run already pushed ``digest`` to."""
        if not isinstance(target, RegistryReference):
            return None
        known = self._pushed.get(digest)
        if known is None or known.endpoint != target.endpoint:
            return None
        return None if known.repository == target.repository else known

    async def layout(self, ref: LayoutReference, *, create: bool) -> OCILayout:
        """The layout of ``ref`` (created if ``create`` and missing); one object per path."""
        async with self._lock:
            path = ref.path.absolute()
            layout = self._layouts.get(path)
            if layout is None:
                layout = await (OCILayout.create(path) if create else OCILayout.open(path))
                self._layouts[path] = layout
            return layout

    # ------------------------------------------------------------------ reading

    async def resolve(self, ref: Reference) -> tuple[Descriptor, bytes]:
        """The descriptor and bytes of the manifest or index ``ref`` names."""
        if isinstance(ref, LayoutReference):
            layout = await self.layout(ref, create=False)
            descriptor = await layout.resolve(ref)
            return descriptor, await layout.read_blob(descriptor.digest)
        info = await self.client.resolve(ref)
        fetched = await self.client.fetch_manifest(ref.with_digest(info.digest))
        descriptor = Descriptor(
            media_type=fetched.media_type, digest=fetched.digest, size=len(fetched.content)
        )
        return descriptor, fetched.content

    async def read_document(self, ref: Reference, descriptor: Descriptor) -> bytes:
        """A manifest (by descriptor) of the image ``ref`` names."""
        if isinstance(ref, LayoutReference):
            layout = await self.layout(ref, create=False)
            return await layout.read_blob(descriptor.digest)
        fetched = await self.client.fetch_manifest(ref.with_digest(descriptor.digest))
        return fetched.content

    async def read_small_blob(self, ref: Reference, digest: str) -> bytes:
        """A small blob (an image config), verified."""
        if isinstance(ref, LayoutReference):
            layout = await self.layout(ref, create=False)
            return await layout.read_blob(digest)
        return await self.client.fetch_blob(ref, digest)

    async def pull_blob(
        self,
        ref: Reference,
        digest: str,
        size: int,
        destination: Path,
        progress: ProgressFn | None = None,
    ) -> None:
        """Copy blob ``digest`` of ``ref`` to the file ``destination``, verified."""
        if isinstance(ref, LayoutReference):
            layout = await self.layout(ref, create=False)
            source = layout.blob_path(digest)
            await anyio.to_thread.run_sync(_copy_verified, source, destination, digest, size)
            if progress is not None:
                progress(size, size)
            return
        await self.client.pull_blob(
            ref,
            digest,
            size,
            destination,
            on_progress=None
            if progress is None
            else (lambda _d, done, total: progress(done, total)),
        )

    # ------------------------------------------------------------------ writing

    async def push_blob(
        self,
        ref: Reference,
        digest: str,
        size: int,
        source: Path,
        *,
        mount_from: Reference | None = None,
        progress: ProgressFn | None = None,
    ) -> UploadOutcome:
        """Put the file ``source`` as blob ``digest`` at the target; say how."""
        if isinstance(ref, LayoutReference):
            layout = await self.layout(ref, create=True)
            if await layout.has_blob(digest):
                return "exists"
            await layout.add_file(source, digest, size)
            if progress is not None:
                progress(size, size)
            return "uploaded"
        outcome = await self.client.push_blob(
            ref,
            digest,
            size,
            source,
            mount_from=mount_from if isinstance(mount_from, RegistryReference) else None,
            on_progress=None
            if progress is None
            else (lambda _d, done, total: progress(done, total)),
        )
        self._pushed.setdefault(digest, ref)
        return outcome

    async def push_small_blob(self, ref: Reference, content: bytes, digest: str) -> None:
        """Put a small in-memory blob (an image config) at the target."""
        if isinstance(ref, LayoutReference):
            layout = await self.layout(ref, create=True)
            await layout.write_blob(content, digest)
            return
        await self.client.push_blob_bytes(ref, content, digest=digest)

    async def push_manifest(
        self,
        ref: Reference,
        content: bytes,
        media_type: str,
        references: list[Descriptor],
        *,
        tag: bool,
    ) -> Descriptor:
        """Put a manifest or index; ``tag`` points the target's tag at it.

        All ``references`` must already be at the target.
        """
        if isinstance(ref, LayoutReference):
            layout = await self.layout(ref, create=True)
            descriptor = await layout.add_document(content, media_type)
            if tag:
                await layout.set_tag(ref.tag, descriptor)
            return descriptor
        target = ref if tag else ref.with_digest(sha256_of(content))
        digest = await self.client.push_manifest(target, content, media_type, references=references)
        return Descriptor(media_type=media_type, digest=digest, size=len(content))


def _copy_verified(source: Path, destination: Path, digest: str, size: int) -> None:
    """Copy a layout blob, checking its digest and size (blocking)."""
    try:
        with source.open("rb") as reader, destination.open("wb") as writer:
            checker = DigestingWriter(writer, expected_digest=digest, expected_size=size)
            while chunk := reader.read(1 << 20):
                checker.write(chunk)
            checker.verify()
    except FileNotFoundError:
        raise LayoutError(f"blob {digest} is missing from {source.parent.parent.parent}") from None


@asynccontextmanager
async def open_endpoints(
    registries: Mapping[str, RegistryOptions], *, max_transfers: int = 8
) -> AsyncIterator[Endpoints]:
    """Endpoints with one registry client for the whole run."""
    async with RegistryClient(
        options=dict(registries), max_concurrent_transfers=max_transfers
    ) as client:
        yield Endpoints(client)
