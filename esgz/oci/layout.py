"""OCI image-layout directories: read images from them and write images into them.

A layout is ``oci-layout`` (``{"imageLayoutVersion": "1.0.0"}``), ``index.json`` (an OCI
index whose entries may carry the tag in ``org.opencontainers.image.ref.name``) and
``blobs/<algorithm>/<hex>``.

Reading (:meth:`OCILayout.open`, :meth:`OCILayout.resolve`): the version must be 1.x.
A :class:`~esgz.oci.reference.LayoutReference` resolves to the ``index.json`` entry

* with its digest, if it has one (a blob present in the layout but not listed in
  ``index.json`` is found too; its media type is read from the blob);
* else with its tag;
* else (a source without a tag) the entry tagged ``latest``, else the only entry, else
  LayoutError listing the tags.

Writing (:meth:`OCILayout.create`): a missing or empty directory is initialised; an
existing layout is updated, never clobbered (a non-empty directory that is not a layout
is refused). Blobs are streamed in with their digest verified and appear under their
digest name only when complete (see :mod:`esgz.oci.blobstore`). :meth:`OCILayout.set_tag`
rewrites ``index.json`` atomically (temp file + rename): the entries of other tags are
kept in order, an entry for the same tag is removed and the new one appended (what
skopeo does). Updates are serialised: by a lock within the process and by ``flock`` on
the layout directory across processes (esgz processes; other tools do not take it).

All I/O methods are async (worker threads); ``*_sync`` helpers exist for tests and
command-line tools that are not async.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from pathlib import Path

import anyio
import anyio.to_thread

from esgz.errors import ImageError, LayoutError
from esgz.oci import mediatypes
from esgz.oci.blobstore import BlobIngest, BlobStore
from esgz.oci.digest import parse_digest, sha256_of
from esgz.oci.manifest import (
    Descriptor,
    Index,
    Manifest,
    go_json_bytes,
    parse_index,
    parse_manifest_or_index,
    to_bytes,
)
from esgz.oci.reference import LayoutReference

__all__ = ["LAYOUT_VERSION", "REF_NAME_ANNOTATION", "OCILayout"]

LAYOUT_VERSION = "1.0.0"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
_READ_CHUNK = 1 << 20
_MAX_DOCUMENT = 16 << 20  # manifests, indexes and configs larger than this are refused


class OCILayout:
    """An OCI image-layout directory. Build with :meth:`open` or :meth:`create`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = BlobStore(root / "blobs")
        self._index_lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"OCILayout({str(self.root)!r})"

    # --- opening ------------------------------------------------------------------------

    @classmethod
    async def open(cls, root: Path) -> OCILayout:
        """Open an existing layout for reading (and writing); LayoutError if unusable."""
        return await anyio.to_thread.run_sync(cls.open_sync, root)

    @classmethod
    def open_sync(cls, root: Path) -> OCILayout:
        """Blocking :meth:`open`."""
        layout = cls(root)
        layout._check_sync()
        return layout

    @classmethod
    async def create(cls, root: Path) -> OCILayout:
        """Open the layout at ``root``, initialising it if missing or empty."""
        return await anyio.to_thread.run_sync(cls.create_sync, root)

    @classmethod
    def create_sync(cls, root: Path) -> OCILayout:
        """Blocking :meth:`create`."""
        layout = cls(root)
        try:
            if root.exists() and not root.is_dir():
                raise LayoutError(f"{root} exists and is not a directory")
            root.mkdir(parents=True, exist_ok=True)
            with _locked_directory(root):
                layout._initialise_locked()
        except OSError as err:
            raise LayoutError(f"cannot create OCI layout at {root}: {err}") from err
        return layout

    @classmethod
    async def check_target(cls, root: Path) -> None:
        """LayoutError unless :meth:`create` would accept ``root``; changes nothing.

        Accepted: a missing directory (under a directory, not a file), an empty directory,
        or a layout of a supported version. Lets a run refuse a bad target before it
        converts anything.
        """
        await anyio.to_thread.run_sync(cls.check_target_sync, root)

    @classmethod
    def check_target_sync(cls, root: Path) -> None:
        """Blocking :meth:`check_target`."""
        try:
            if not root.exists():
                parent = root.parent
                while not parent.exists():
                    parent = parent.parent
                if not parent.is_dir():
                    raise LayoutError(f"cannot create OCI layout at {root}: {parent} is a file")
                return
            if not root.is_dir():
                raise LayoutError(f"{root} exists and is not a directory")
            if (root / "oci-layout").exists():
                cls(root)._check_sync()
            elif any(root.iterdir()):
                raise LayoutError(
                    f"{root} is not empty and not an OCI image layout; refusing to write into it"
                )
        except OSError as err:
            raise LayoutError(f"cannot use {root} as an OCI layout: {err}") from err

    def _initialise_locked(self) -> None:
        root = self.root
        if (root / "oci-layout").exists():
            self._check_sync()
            return
        if any(root.iterdir()):
            raise LayoutError(
                f"{root} is not empty and not an OCI image layout; refusing to write into it"
            )
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        empty = Index(media_type=mediatypes.OCI_INDEX, manifests=())
        _atomic_write(root / "index.json", to_bytes(empty))
        # The marker goes last: a directory with oci-layout is always complete.
        marker = go_json_bytes({"imageLayoutVersion": LAYOUT_VERSION})
        _atomic_write(root / "oci-layout", marker)

    def _check_sync(self) -> None:
        marker = self.root / "oci-layout"
        try:
            data = marker.read_bytes()
        except FileNotFoundError:
            raise LayoutError(
                f"{self.root} is not an OCI image layout: no oci-layout file"
            ) from None
        except OSError as err:
            raise LayoutError(f"cannot read {marker}: {err}") from err
        try:
            version = json.loads(data).get("imageLayoutVersion")
        except (ValueError, AttributeError, RecursionError):
            raise LayoutError(f"{marker} is not a JSON object") from None
        if not isinstance(version, str) or not version.startswith("1."):
            raise LayoutError(f"{marker}: unsupported imageLayoutVersion {version!r}")
        if not (self.root / "index.json").is_file():
            raise LayoutError(f"{self.root} is not an OCI image layout: no index.json")

    # --- index.json ---------------------------------------------------------------------

    async def read_index(self) -> Index:
        """The parsed ``index.json``."""
        return await anyio.to_thread.run_sync(self.read_index_sync)

    def read_index_sync(self) -> Index:
        """Blocking :meth:`read_index`."""
        path = self.root / "index.json"
        try:
            data = path.read_bytes()
        except OSError as err:
            raise LayoutError(f"cannot read {path}: {err}") from err
        try:
            return parse_index(data, mediatypes.OCI_INDEX)
        except ImageError as err:
            raise LayoutError(f"{path}: {err.message}") from None

    async def tags(self) -> dict[str, Descriptor]:
        """Tag → ``index.json`` entry (the last entry wins for a repeated tag)."""
        index = await self.read_index()
        return _tags(index)

    async def resolve(self, reference: LayoutReference | None = None) -> Descriptor:
        """The ``index.json`` entry a reference names (see the module docs)."""
        return await anyio.to_thread.run_sync(self.resolve_sync, reference)

    def resolve_sync(self, reference: LayoutReference | None = None) -> Descriptor:
        """Blocking :meth:`resolve`."""
        tag = reference.tag if reference else None
        digest = reference.digest if reference else None
        index = self.read_index_sync()
        where = str(self.root)
        if digest is not None:
            for entry in index.manifests:
                if entry.digest == digest:
                    return entry
            return self._descriptor_from_blob_sync(digest)
        tags = _tags(index)
        if tag is not None:
            if tag in tags:
                return tags[tag]
            raise LayoutError(f"no image tagged {tag!r} in {where}; {_describe_tags(tags)}")
        if "latest" in tags:
            return tags["latest"]
        if len(index.manifests) == 1:
            return index.manifests[0]
        if not index.manifests:
            raise LayoutError(f"the OCI layout {where} holds no image")
        raise LayoutError(
            f"the OCI layout {where} holds {len(index.manifests)} images and none is tagged"
            f" 'latest': name one with local://{where}:TAG; {_describe_tags(tags)}"
        )

    def _descriptor_from_blob_sync(self, digest: str) -> Descriptor:
        path = self.blobs.path(digest)
        if not path.is_file():
            raise LayoutError(f"no image with digest {digest} in {self.root}")
        data = self.read_blob_sync(digest)
        media_type = _media_type_of(parse_manifest_or_index(data))
        return Descriptor(media_type=media_type, digest=digest, size=len(data))

    async def set_tag(self, tag: str | None, descriptor: Descriptor) -> None:
        """Point ``tag`` at ``descriptor`` in ``index.json`` (atomically).

        ``tag=None`` adds an untagged entry unless one with that digest exists. The
        descriptor's ref-name annotation is set to ``tag``.
        """
        async with self._index_lock:
            await anyio.to_thread.run_sync(self.set_tag_sync, tag, descriptor)

    def set_tag_sync(self, tag: str | None, descriptor: Descriptor) -> None:
        """Blocking :meth:`set_tag` (no in-process lock; the directory lock is taken)."""
        with _locked_directory(self.root):
            self._set_tag_locked(tag, descriptor)

    def _set_tag_locked(self, tag: str | None, descriptor: Descriptor) -> None:
        index = self.read_index_sync()
        annotations = dict(descriptor.annotations)
        annotations.pop(REF_NAME_ANNOTATION, None)
        if tag is not None:
            annotations[REF_NAME_ANNOTATION] = tag
            kept = [e for e in index.manifests if e.annotations.get(REF_NAME_ANNOTATION) != tag]
        else:
            kept = list(index.manifests)
            if any(e.digest == descriptor.digest and not _tag_of(e) for e in kept):
                return
        entry = replace(descriptor, annotations=annotations)
        updated = replace(index, manifests=(*kept, entry))
        try:
            _atomic_write(self.root / "index.json", to_bytes(updated))
        except OSError as err:
            raise LayoutError(f"cannot update {self.root / 'index.json'}: {err}") from err

    # --- blobs --------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        """Where blob ``digest`` is in the layout."""
        return self.blobs.path(digest)

    async def has_blob(self, digest: str) -> bool:
        """Whether the layout holds blob ``digest``."""
        return await self.blobs.has(digest)

    async def read_blob(self, digest: str) -> bytes:
        """A small blob (manifest, index, config), verified against its digest."""
        return await anyio.to_thread.run_sync(self.read_blob_sync, digest)

    def read_blob_sync(self, digest: str) -> bytes:
        """Blocking :meth:`read_blob`."""
        path = self.blobs.path(digest)
        try:
            size = path.stat().st_size
            if size > _MAX_DOCUMENT:
                raise LayoutError(f"blob {digest} in {self.root} is too large ({size} bytes)")
            data = path.read_bytes()
        except FileNotFoundError:
            raise LayoutError(f"blob {digest} is missing from {self.root}") from None
        except OSError as err:
            raise LayoutError(f"cannot read blob {digest} in {self.root}: {err}") from err
        algorithm = parse_digest(digest).algorithm
        actual = f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
        if actual != digest:
            raise LayoutError(f"blob {digest} in {self.root} is corrupt: its digest is {actual}")
        return data

    async def iter_blob(self, digest: str, chunk_size: int = _READ_CHUNK) -> AsyncIterator[bytes]:
        """Stream a blob in chunks (not verified here: use a DigestingWriter if needed).

        Stopping early: wrap in ``contextlib.aclosing`` so the file is closed at once.
        """
        try:
            file = await anyio.open_file(self.blobs.path(digest), "rb")
        except FileNotFoundError:
            raise LayoutError(f"blob {digest} is missing from {self.root}") from None
        async with file:
            while chunk := await file.read(chunk_size):
                yield chunk

    @asynccontextmanager
    async def ingest_blob(
        self, expected_digest: str | None = None, expected_size: int | None = None
    ) -> AsyncIterator[BlobIngest]:
        """Stream a blob in (verified, atomic): see :meth:`BlobStore.ingest`."""
        async with self.blobs.ingest(expected_digest, expected_size) as blob:
            yield blob

    async def write_blob(self, data: bytes, expected_digest: str | None = None) -> str:
        """Store a small blob from memory; return its digest."""
        return await self.blobs.put_bytes(data, expected_digest)

    async def add_file(
        self, source: Path, expected_digest: str | None = None, expected_size: int | None = None
    ) -> str:
        """Copy a file in as a blob (streaming, verified); return its digest."""
        return await self.blobs.put_file(source, expected_digest, expected_size)

    async def add_document(
        self, document: Manifest | Index | bytes, media_type: str | None = None
    ) -> Descriptor:
        """Store a manifest or index (a model, or its exact bytes); return its descriptor.

        ``media_type`` defaults to the document's own ``mediaType`` (OCI when absent).
        """
        if isinstance(document, bytes):
            data = document
            parsed = parse_manifest_or_index(data, media_type)
        else:
            data, parsed = to_bytes(document), document
        if media_type is None:
            media_type = _media_type_of(parsed)
        digest = await self.write_blob(data, sha256_of(data))
        return Descriptor(media_type=media_type, digest=digest, size=len(data))


def _media_type_of(document: Manifest | Index) -> str:
    """The document's own ``mediaType``, else the OCI type of its kind."""
    if document.media_type:
        return document.media_type
    return mediatypes.OCI_INDEX if isinstance(document, Index) else mediatypes.OCI_MANIFEST


def _tag_of(entry: Descriptor) -> str | None:
    return entry.annotations.get(REF_NAME_ANNOTATION)


def _tags(index: Index) -> dict[str, Descriptor]:
    tags: dict[str, Descriptor] = {}
    for entry in index.manifests:
        tag = _tag_of(entry)
        if tag is not None:
            tags[tag] = entry
    return tags


def _describe_tags(tags: Mapping[str, Descriptor]) -> str:
    if not tags:
        return "it has no tags"
    return "tags: " + ", ".join(sorted(tags))


@contextmanager
def _locked_directory(directory: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``directory`` (blocking; call from a worker thread)."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # also releases the lock


def _atomic_write(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with temp.open("xb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
