"""A conversion cache kept in a registry repository, shared by every machine that names it.

``cache: {registry: "HOST[:PORT]/REPO"}`` (``--cache-registry``) keeps one entry per
:class:`~esgz.pipeline.cache.ConversionKey` — source layer digest, conversion options,
prioritized files — as a small OCI artifact tagged ``conv-<fingerprint>``::

    manifest (application/vnd.oci.image.manifest.v1+json,
              artifactType application/vnd.esgz.conversion.v1+json)
      config  application/vnd.esgz.conversion.v1+json   the key and the output's facts
      layers  [the converted blob, with its descriptor annotations]
      annotations: io.esgz.conversion.{diff-id,toc-digest,uncompressed-size,format,key}

A lookup is one manifest ``GET``. On a hit the converted blob reaches a target on the
same registry by cross-repository mount (it is not downloaded); for any other target it
is pulled into the local store, verified. An entry is written after a conversion: the
blob, then the config, then the manifest (which the registry only accepts once both are
there), so a reader never sees an entry whose blob is missing. Two machines converting
the same layer at once write identical bytes (the writer is reproducible), so the second
entry simply replaces the first with the same content.

Credentials and TLS come from the run's registry client, as for any other registry
(Docker's ``config.json``, ``registries:`` in the pipeline config).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Final, Protocol

from esgz.errors import NotFoundError
from esgz.levels import LayerFormat
from esgz.oci.digest import is_digest
from esgz.oci.mediatypes import OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_MANIFEST
from esgz.oci.reference import LayoutReference, RegistryReference, parse_reference
from esgz.pipeline.cache import ConversionKey, LocalStore
from esgz.pipeline.jobs import LayerOutput
from esgz.registry.client import RegistryClient

__all__ = [
    "ARTIFACT_TYPE",
    "CLAIMS",
    "Claims",
    "RegistryConversionCache",
    "cache_repository",
    "entry_tag",
]

logger = logging.getLogger(__name__)

#: The artifact type of a cache entry, also the media type of its config.
ARTIFACT_TYPE: Final = "application/vnd.esgz.conversion.v1+json"
_PREFIX: Final = "io.esgz.conversion."
_LAYER_MEDIA_TYPES: Final = {"estargz": OCI_LAYER_GZIP, "zstdchunked": OCI_LAYER_ZSTD}


class Claims(Protocol):
    """Exclusive claims on names, across machines (see :class:`RegistryConversionCache`)."""

    def claim(self, name: str) -> AbstractAsyncContextManager[None]:
        """Hold the claim ``name`` while the context is open (waiting for it first)."""
        ...


#: The claims of the fleet a run belongs to (set by an ``esgz worker`` job), if any.
CLAIMS: ContextVar[Claims | None] = ContextVar("esgz_claims", default=None)


def cache_repository(text: str) -> RegistryReference:
    """The repository named by ``HOST[:PORT]/REPO`` (``http://`` for plain HTTP)."""
    ref = parse_reference(text)
    assert isinstance(ref, RegistryReference), "checked by CacheConfig"
    return ref.with_tag(None)


def entry_tag(key: ConversionKey) -> str:
    """The tag of ``key``'s entry: ``conv-<fingerprint>``."""
    return f"conv-{key.fingerprint()}"


@dataclass(frozen=True, slots=True)
class _Entry:
    digest: str
    size: int
    diff_id: str
    format: str
    toc_digest: str | None
    uncompressed_size: int | None
    annotations: dict[str, str]


def _parse_entry(document: Any) -> _Entry | None:
    """The facts of a cache entry manifest, or None if it is not one of ours."""
    if not isinstance(document, dict) or document.get("artifactType") != ARTIFACT_TYPE:
        return None
    layers = document.get("layers")
    notes = document.get("annotations")
    if not isinstance(layers, list) or len(layers) != 1 or not isinstance(notes, dict):
        return None
    layer = layers[0]
    if not isinstance(layer, dict):
        return None
    digest, size = layer.get("digest"), layer.get("size")
    diff_id, layer_format = notes.get(_PREFIX + "diff-id"), notes.get(_PREFIX + "format")
    annotations = layer.get("annotations", {})
    if (
        not isinstance(digest, str)
        or not is_digest(digest)
        or not isinstance(size, int)
        or not isinstance(diff_id, str)
        or not is_digest(diff_id)
        or layer_format not in _LAYER_MEDIA_TYPES
        or not isinstance(annotations, dict)
    ):
        return None
    toc = notes.get(_PREFIX + "toc-digest")
    uncompressed = notes.get(_PREFIX + "uncompressed-size")
    return _Entry(
        digest=digest,
        size=size,
        diff_id=diff_id,
        format=str(layer_format),
        toc_digest=toc if isinstance(toc, str) and toc else None,
        uncompressed_size=int(uncompressed)
        if isinstance(uncompressed, str) and uncompressed.isdigit()
        else None,
        annotations={str(k): str(v) for k, v in annotations.items()},
    )


class RegistryConversionCache:
    """The conversion cache in the registry repository ``repository``.

    Implements :class:`~esgz.pipeline.cache.SharedConversionCache`; ``client`` is the
    run's registry client (its credentials and per-registry TLS options apply).
    ``claims`` (default: :data:`CLAIMS`, set in workers) makes one machine of a fleet
    convert a key while the others wait for its entry; without it, :meth:`claim` is free.
    """

    def __init__(
        self,
        client: RegistryClient,
        repository: RegistryReference,
        claims: Claims | None = None,
    ) -> None:
        self.client = client
        self.repository = repository.with_tag(None)
        self.claims = claims if claims is not None else CLAIMS.get()

    def claim(self, key: ConversionKey) -> AbstractAsyncContextManager[None]:
        """Hold the fleet's claim on ``key`` (nothing to hold outside a fleet)."""
        if self.claims is None:
            return _unclaimed()
        return self.claims.claim(f"{self.repository.name}:{key.fingerprint()}")

    def _ref(self, key: ConversionKey) -> RegistryReference:
        return self.repository.with_tag(entry_tag(key))

    async def lookup(
        self, key: ConversionKey, store: LocalStore, target: RegistryReference | LayoutReference
    ) -> LayerOutput | None:
        """The cached output for ``key``, or None.

        The blob is pulled into ``store`` (verified) unless ``store`` has it or
        ``target`` is on the cache's registry, where it is mounted from the cache.
        """
        ref = self._ref(key)
        try:
            fetched = await self.client.fetch_manifest(ref)
        except NotFoundError:
            return None
        try:
            document = fetched.json()
        except ValueError:
            document = None
        entry = _parse_entry(document)
        if entry is None:
            logger.warning("cache: %s is not an esgz conversion cache entry; ignored", ref)
            return None
        same_registry = (
            isinstance(target, RegistryReference) and target.endpoint == self.repository.endpoint
        )
        if await store.has(entry.digest):
            pass
        elif same_registry:
            # mounted later: the blob must still be there (not garbage-collected)
            if await self.client.blob_size(self.repository, entry.digest) != entry.size:
                logger.warning("cache: the blob of %s is gone; converting again", ref)
                return None
        else:
            await self.client.pull_blob_into(self.repository, entry.digest, entry.size, store.blobs)
            store.mark_used(entry.digest)
        layer_format: LayerFormat = "zstdchunked" if entry.format == "zstdchunked" else "estargz"
        return LayerOutput(
            path=store.blob_path(entry.digest),
            digest=entry.digest,
            size=entry.size,
            diff_id=entry.diff_id,
            format=layer_format,
            annotations=entry.annotations,
            toc_digest=entry.toc_digest,
            uncompressed_size=entry.uncompressed_size,
            mount_from=self.repository,
        )

    async def store_output(self, key: ConversionKey, output: LayerOutput) -> None:
        """Write the entry for ``key`` unless it exists: blob, config, then manifest."""
        ref = self._ref(key)
        # The blob first (a HEAD when it is there): it also repairs an entry whose blob
        # was garbage-collected.
        await self.client.push_blob(
            self.repository, output.digest, output.size, output.path, mount_from=output.mount_from
        )
        if await self.client.manifest_exists(ref):
            return
        record = {
            "key": key.describe(),
            "digest": output.digest,
            "diff_id": output.diff_id,
            "toc_digest": output.toc_digest,
            "uncompressed_size": output.uncompressed_size,
        }
        config = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
        config_digest = await self.client.push_blob_bytes(self.repository, config)
        notes = {
            _PREFIX + "key": key.fingerprint(),
            _PREFIX + "source-digest": key.source_digest,
            _PREFIX + "diff-id": output.diff_id,
            _PREFIX + "format": output.format,
        }
        if output.toc_digest is not None:
            notes[_PREFIX + "toc-digest"] = output.toc_digest
        if output.uncompressed_size is not None:
            notes[_PREFIX + "uncompressed-size"] = str(output.uncompressed_size)
        layer: dict[str, Any] = {
            "mediaType": _LAYER_MEDIA_TYPES[output.format],
            "digest": output.digest,
            "size": output.size,
        }
        if output.annotations:
            layer["annotations"] = dict(output.annotations)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "config": {"mediaType": ARTIFACT_TYPE, "digest": config_digest, "size": len(config)},
            "layers": [layer],
            "annotations": notes,
        }
        content = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        info = await self.client.push_manifest_tagged(
            ref,
            content,
            OCI_MANIFEST,
            references=[_Blob(config_digest, len(config)), _Blob(output.digest, output.size)],
        )
        logger.debug("cache: stored %s as %s (%s)", output.digest, ref, info.digest)


@asynccontextmanager
async def _unclaimed() -> AsyncIterator[None]:
    yield


@dataclass(frozen=True, slots=True)
class _Blob:
    digest: str
    size: int
