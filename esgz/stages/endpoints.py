"""Where images come from and go to: one :class:`Source` / :class:`Target` protocol with
a registry and an OCI-layout implementation.

:class:`Endpoints` is opened once per run (one registry client, one :class:`OCILayout`
object per directory) and hands out the source and target of a reference
(:meth:`Endpoints.source`, :meth:`Endpoints.target`); that is the only place that
looks at which kind of reference it is. The stages only talk to the protocols.

Blob bytes are verified while they are written, by one helper per direction: a pull
goes straight into the local :class:`~esgz.oci.blobstore.BlobStore` (the registry
client's verifying download, or :meth:`BlobStore.put_file
<esgz.oci.blobstore.BlobStore.put_file>` from a layout), and a layout target ingests
blobs the same way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol

import anyio

from esgz.errors import LayoutError
from esgz.oci.blobstore import BlobStore
from esgz.oci.digest import sha256_of
from esgz.oci.layout import OCILayout
from esgz.oci.manifest import Descriptor
from esgz.oci.reference import DEFAULT_TAG, LayoutReference, RegistryReference
from esgz.registry.client import RegistryClient
from esgz.registry.model import ProgressCallback, PushOutcome
from esgz.registry.options import RegistryOptions

__all__ = [
    "Endpoints",
    "LayoutSource",
    "LayoutTarget",
    "Reference",
    "RegistrySource",
    "RegistryTarget",
    "Source",
    "Target",
    "open_endpoints",
]

Reference = RegistryReference | LayoutReference


class Source(Protocol):
    """An image to read: its root document, manifests, config and layer blobs."""

    @property
    def reference(self) -> Reference:
        """The reference this source reads."""
        ...

    @property
    def registry_reference(self) -> RegistryReference | None:
        """The registry repository holding the blobs (for cross-mounts), if any."""
        ...

    async def read_root(self) -> tuple[Descriptor, bytes]:
        """The descriptor and verified bytes of the manifest or index the reference names."""
        ...

    async def read_manifest(self, descriptor: Descriptor) -> bytes:
        """A manifest listed in the root index, verified."""
        ...

    async def read_config(self, digest: str) -> bytes:
        """A small blob (an image config), verified."""
        ...

    async def pull_blob(
        self, digest: str, size: int, store: BlobStore, progress: ProgressCallback | None
    ) -> Path:
        """Put blob ``digest`` into ``store``, verified while written; its path there."""
        ...


class Target(Protocol):
    """An image to write: blobs, the config, manifests and, last, the tag."""

    @property
    def reference(self) -> Reference:
        """The reference this target writes."""
        ...

    async def check(self) -> None:
        """Fail now (LayoutError, …) if nothing could be written here; changes nothing."""
        ...

    async def push_blob(
        self,
        digest: str,
        size: int,
        path: Path,
        *,
        source: Source | None,
        progress: ProgressCallback | None,
        mount_from: RegistryReference | None = None,
    ) -> PushOutcome:
        """Put the file ``path`` as blob ``digest``; ``source`` (or the repository
        ``mount_from``, e.g. a registry conversion cache) may hold it too (mount)."""
        ...

    async def push_config(self, content: bytes, digest: str) -> None:
        """Put a small in-memory blob (an image config)."""
        ...

    async def push_manifest(
        self, content: bytes, media_type: str, references: Sequence[Descriptor], *, tag: bool
    ) -> Descriptor:
        """Put a manifest or index once: under the target's tag if ``tag``, else by digest.

        All ``references`` must already be at the target.
        """
        ...


# ---------------------------------------------------------------------- registries


class RegistrySource:
    """A :class:`Source` in a registry repository."""

    def __init__(self, client: RegistryClient, ref: RegistryReference) -> None:
        self.client = client
        self.ref = ref

    @property
    def reference(self) -> RegistryReference:
        """See :class:`Source`."""
        return self.ref

    @property
    def registry_reference(self) -> RegistryReference:
        """See :class:`Source`."""
        return self.ref

    async def read_root(self) -> tuple[Descriptor, bytes]:
        """One ``GET`` of the manifest by tag (or digest), checked against its digest."""
        fetched = await self.client.fetch_manifest(self.ref)
        descriptor = Descriptor(
            media_type=fetched.media_type, digest=fetched.digest, size=len(fetched.content)
        )
        return descriptor, fetched.content

    async def read_manifest(self, descriptor: Descriptor) -> bytes:
        """See :class:`Source`."""
        fetched = await self.client.fetch_manifest(self.ref.with_digest(descriptor.digest))
        return fetched.content

    async def read_config(self, digest: str) -> bytes:
        """See :class:`Source`."""
        return await self.client.pull_blob_bytes(self.ref, digest)

    async def pull_blob(
        self, digest: str, size: int, store: BlobStore, progress: ProgressCallback | None
    ) -> Path:
        """The client's verifying download, renamed once into the store."""
        return await self.client.pull_blob_into(self.ref, digest, size, store, on_progress=progress)


class RegistryTarget:
    """A :class:`Target` in a registry repository.

    ``pushed`` (shared by the run's targets) remembers which repository each blob went
    to, so that another repository of the same registry mounts it instead of uploading.
    """

    def __init__(
        self,
        client: RegistryClient,
        ref: RegistryReference,
        pushed: dict[str, RegistryReference],
    ) -> None:
        self.client = client
        self.ref = ref
        self._pushed = pushed

    @property
    def reference(self) -> RegistryReference:
        """See :class:`Target`."""
        return self.ref

    async def check(self) -> None:
        """Nothing to check before the first push."""

    def _mount_from(
        self, digest: str, source: Source | None, extra: RegistryReference | None
    ) -> RegistryReference | None:
        """Another repository of this registry with ``digest``: this run's push, ``source``,
        or ``extra``."""
        for candidate in (
            self._pushed.get(digest),
            source.registry_reference if source is not None else None,
            extra,
        ):
            if (
                candidate is not None
                and candidate.endpoint == self.ref.endpoint
                and candidate.repository != self.ref.repository
            ):
                return candidate
        return None

    async def push_blob(
        self,
        digest: str,
        size: int,
        path: Path,
        *,
        source: Source | None,
        progress: ProgressCallback | None,
        mount_from: RegistryReference | None = None,
    ) -> PushOutcome:
        """``HEAD``, cross-repository mount, or upload (see :meth:`RegistryClient.push_blob`)."""
        outcome = await self.client.push_blob(
            self.ref,
            digest,
            size,
            path,
            mount_from=self._mount_from(digest, source, mount_from),
            on_progress=progress,
        )
        self._pushed.setdefault(digest, self.ref)
        return outcome

    async def push_config(self, content: bytes, digest: str) -> None:
        """See :class:`Target`."""
        await self.client.push_blob_bytes(self.ref, content, digest=digest)

    async def push_manifest(
        self, content: bytes, media_type: str, references: Sequence[Descriptor], *, tag: bool
    ) -> Descriptor:
        """One ``PUT``: by tag (the registry's digest checked) or by digest."""
        if tag:
            ref = self.ref.with_tag(self.ref.tag or DEFAULT_TAG)
            info = await self.client.push_manifest_tagged(
                ref, content, media_type, references=references
            )
            return Descriptor(media_type=media_type, digest=info.digest, size=info.size)
        digest = await self.client.push_manifest(
            self.ref.with_digest(sha256_of(content)), content, media_type, references=references
        )
        return Descriptor(media_type=media_type, digest=digest, size=len(content))


# ---------------------------------------------------------------------- OCI layouts


class _Layouts:
    """One :class:`OCILayout` object per directory (its index lock is per object)."""

    def __init__(self) -> None:
        self._open: dict[Path, OCILayout] = {}
        self._lock = anyio.Lock()

    async def get(self, path: Path, *, create: bool) -> OCILayout:
        path = Path(await anyio.Path(path).absolute())
        async with self._lock:
            layout = self._open.get(path)
            if layout is None:
                layout = await (OCILayout.create(path) if create else OCILayout.open(path))
                self._open[path] = layout
            return layout


class LayoutSource:
    """A :class:`Source` in an OCI image-layout directory."""

    def __init__(self, layouts: _Layouts, ref: LayoutReference) -> None:
        self._layouts = layouts
        self.ref = ref

    @property
    def reference(self) -> LayoutReference:
        """See :class:`Source`."""
        return self.ref

    @property
    def registry_reference(self) -> None:
        """A layout is in no registry."""
        return None

    async def _layout(self) -> OCILayout:
        return await self._layouts.get(self.ref.path, create=False)

    async def read_root(self) -> tuple[Descriptor, bytes]:
        """See :class:`Source` and :meth:`OCILayout.resolve`."""
        layout = await self._layout()
        descriptor = await layout.resolve(self.ref)
        return descriptor, await layout.read_blob(descriptor.digest)

    async def read_manifest(self, descriptor: Descriptor) -> bytes:
        """See :class:`Source`."""
        return await (await self._layout()).read_blob(descriptor.digest)

    async def read_config(self, digest: str) -> bytes:
        """See :class:`Source`."""
        return await (await self._layout()).read_blob(digest)

    async def pull_blob(
        self, digest: str, size: int, store: BlobStore, progress: ProgressCallback | None
    ) -> Path:
        """Copy the layout's blob into ``store`` (:meth:`BlobStore.put_file`)."""
        layout = await self._layout()
        try:
            await store.put_file(layout.blob_path(digest), digest, size)
        except FileNotFoundError:
            raise LayoutError(f"blob {digest} is missing from {layout.root}") from None
        if progress is not None:
            progress(digest, size, size)
        return store.path(digest)


class LayoutTarget:
    """A :class:`Target` in an OCI image-layout directory (created on the first write).

    The tag defaults to ``latest``: an untagged image in a layout cannot be named by
    other tools (``skopeo copy oci:DIR:latest``).
    """

    def __init__(self, layouts: _Layouts, ref: LayoutReference) -> None:
        self._layouts = layouts
        self.ref = ref

    @property
    def reference(self) -> LayoutReference:
        """See :class:`Target`."""
        return self.ref

    async def check(self) -> None:
        """LayoutError unless the directory is missing, empty or a layout.

        See :meth:`OCILayout.check_target`.
        """
        await OCILayout.check_target(self.ref.path)

    async def _layout(self) -> OCILayout:
        return await self._layouts.get(self.ref.path, create=True)

    async def push_blob(
        self,
        digest: str,
        size: int,
        path: Path,
        *,
        source: Source | None,
        progress: ProgressCallback | None,
        mount_from: RegistryReference | None = None,
    ) -> PushOutcome:
        """Ingest the file (verified) unless the layout has it already."""
        layout = await self._layout()
        if await layout.has_blob(digest):
            outcome: PushOutcome = "exists"
        else:
            await layout.add_file(path, digest, size)
            outcome = "uploaded"
        if progress is not None:
            progress(digest, size, size)
        return outcome

    async def push_config(self, content: bytes, digest: str) -> None:
        """See :class:`Target`."""
        await (await self._layout()).write_blob(content, digest)

    async def push_manifest(
        self, content: bytes, media_type: str, references: Sequence[Descriptor], *, tag: bool
    ) -> Descriptor:
        """Write the document; with ``tag``, point the tag (default ``latest``) at it."""
        layout = await self._layout()
        descriptor = await layout.add_document(content, media_type)
        if tag:
            await layout.set_tag(self.ref.tag or DEFAULT_TAG, descriptor)
        return descriptor


# ---------------------------------------------------------------------- the run's endpoints


class Endpoints:
    """The sources and targets of one run: one registry client, one object per layout."""

    def __init__(self, client: RegistryClient) -> None:
        self.client = client
        self._layouts = _Layouts()
        self._pushed: dict[str, RegistryReference] = {}

    def source(self, ref: Reference) -> Source:
        """The :class:`Source` reading ``ref``."""
        if isinstance(ref, LayoutReference):
            return LayoutSource(self._layouts, ref)
        return RegistrySource(self.client, ref)

    def target(self, ref: Reference) -> Target:
        """The :class:`Target` writing ``ref``."""
        if isinstance(ref, LayoutReference):
            return LayoutTarget(self._layouts, ref)
        return RegistryTarget(self.client, ref, self._pushed)


@asynccontextmanager
async def open_endpoints(
    registries: Mapping[str, RegistryOptions], *, max_transfers: int = 8
) -> AsyncIterator[Endpoints]:
    """Endpoints with one registry client for the whole run."""
    async with RegistryClient(
        options=dict(registries), max_concurrent_transfers=max_transfers
    ) as client:
        yield Endpoints(client)
