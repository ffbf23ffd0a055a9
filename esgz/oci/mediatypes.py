"""Media types of Docker and OCI images, how to classify them, and how conversion maps them.

Classification:

* :func:`is_index` / :func:`is_manifest` / :func:`is_config` / :func:`is_layer` —
  whether a media type names that kind of object (Docker schema 2 or OCI).
* :func:`is_schema1` — Docker schema 1 manifests, which esgz rejects
  (:func:`reject_schema1` raises :class:`~esgz.errors.ImageError`).
* :func:`layer_compression` — ``"gzip"``, ``"zstd"`` or ``"none"`` for a layer type.
* :func:`is_docker` / :func:`is_nondistributable`.

Conversion (FORMAT.md §10):

* :func:`to_oci` — the Docker → OCI mapping applied by ``--oci`` (containerd's
  ``ConvertDockerMediaTypeToOCI``): index, manifest, config and layer types; anything
  else (including types that are already OCI) is returned unchanged.
* :func:`estargz_layer_type` — the media type of a layer converted to eStargz: the source
  type, except that uncompressed tar types gain the gzip suffix (OCI ``+gzip``, Docker
  ``.gzip``).
* :func:`zstd_chunked_layer_type` — OCI ``…tar+zstd`` (non-distributable layers keep
  being non-distributable).

Both layer functions raise :class:`~esgz.errors.ImageError` for a type that is not a
known layer type.
"""

from __future__ import annotations

from typing import Literal

from esgz.errors import ImageError

# --- Docker schema 2 --------------------------------------------------------------------
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar"
DOCKER_LAYER_FOREIGN_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

# --- Docker schema 1 (rejected) ---------------------------------------------------------
DOCKER_SCHEMA1_MANIFEST = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED_MANIFEST = "application/vnd.docker.distribution.manifest.v1+prettyjws"

# --- OCI image spec ---------------------------------------------------------------------
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_LAYOUT_HEADER = "application/vnd.oci.layout.header.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDISTRIBUTABLE = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDISTRIBUTABLE_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDISTRIBUTABLE_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

Compression = Literal["gzip", "zstd", "none"]

INDEX_TYPES: frozenset[str] = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
MANIFEST_TYPES: frozenset[str] = frozenset({DOCKER_MANIFEST, OCI_MANIFEST})
CONFIG_TYPES: frozenset[str] = frozenset({DOCKER_CONFIG, OCI_CONFIG})
SCHEMA1_TYPES: frozenset[str] = frozenset({DOCKER_SCHEMA1_MANIFEST, DOCKER_SCHEMA1_SIGNED_MANIFEST})

_LAYER_COMPRESSION: dict[str, Compression] = {
    DOCKER_LAYER: "none",
    DOCKER_LAYER_GZIP: "gzip",
    DOCKER_LAYER_ZSTD: "zstd",
    DOCKER_LAYER_FOREIGN: "none",
    DOCKER_LAYER_FOREIGN_GZIP: "gzip",
    OCI_LAYER: "none",
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    OCI_LAYER_NONDISTRIBUTABLE: "none",
    OCI_LAYER_NONDISTRIBUTABLE_GZIP: "gzip",
    OCI_LAYER_NONDISTRIBUTABLE_ZSTD: "zstd",
}
LAYER_TYPES: frozenset[str] = frozenset(_LAYER_COMPRESSION)

_NONDISTRIBUTABLE: frozenset[str] = frozenset(
    {
        DOCKER_LAYER_FOREIGN,
        DOCKER_LAYER_FOREIGN_GZIP,
        OCI_LAYER_NONDISTRIBUTABLE,
        OCI_LAYER_NONDISTRIBUTABLE_GZIP,
        OCI_LAYER_NONDISTRIBUTABLE_ZSTD,
    }
)

_DOCKER_TO_OCI: dict[str, str] = {
    DOCKER_MANIFEST_LIST: OCI_INDEX,
    DOCKER_MANIFEST: OCI_MANIFEST,
    DOCKER_CONFIG: OCI_CONFIG,
    DOCKER_LAYER: OCI_LAYER,
    DOCKER_LAYER_GZIP: OCI_LAYER_GZIP,
    DOCKER_LAYER_ZSTD: OCI_LAYER_ZSTD,
    DOCKER_LAYER_FOREIGN: OCI_LAYER_NONDISTRIBUTABLE,
    DOCKER_LAYER_FOREIGN_GZIP: OCI_LAYER_NONDISTRIBUTABLE_GZIP,
}

_GZIP_OF_UNCOMPRESSED: dict[str, str] = {
    DOCKER_LAYER: DOCKER_LAYER_GZIP,
    DOCKER_LAYER_FOREIGN: DOCKER_LAYER_FOREIGN_GZIP,
    OCI_LAYER: OCI_LAYER_GZIP,
    OCI_LAYER_NONDISTRIBUTABLE: OCI_LAYER_NONDISTRIBUTABLE_GZIP,
}

#: Accept header value naming every manifest and index type esgz can read, OCI first.
MANIFEST_ACCEPT: tuple[str, ...] = (OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST)


def is_index(media_type: str) -> bool:
    """Whether ``media_type`` is an OCI index or a Docker manifest list."""
    return media_type in INDEX_TYPES


def is_manifest(media_type: str) -> bool:
    """Whether ``media_type`` is an OCI image manifest or a Docker schema 2 manifest."""
    return media_type in MANIFEST_TYPES


def is_config(media_type: str) -> bool:
    """Whether ``media_type`` is an OCI or Docker image config."""
    return media_type in CONFIG_TYPES


def is_layer(media_type: str) -> bool:
    """Whether ``media_type`` is a (known) OCI or Docker layer type."""
    return media_type in _LAYER_COMPRESSION


def is_schema1(media_type: str) -> bool:
    """Whether ``media_type`` is a Docker schema 1 manifest type."""
    return media_type in SCHEMA1_TYPES


def is_docker(media_type: str) -> bool:
    """Whether ``media_type`` is a Docker (``application/vnd.docker.…``) type."""
    return media_type.startswith("application/vnd.docker.")


def is_nondistributable(media_type: str) -> bool:
    """Whether ``media_type`` is a non-distributable (Docker: foreign) layer type."""
    return media_type in _NONDISTRIBUTABLE


def reject_schema1(media_type: str, *, image: str | None = None) -> None:
    """Raise ImageError if ``media_type`` is a Docker schema 1 manifest type."""
    if is_schema1(media_type):
        raise ImageError(
            f"Docker schema 1 manifests ({media_type}) are not supported;"
            " push the image again with a current client to get schema 2",
            image=image,
        )


def layer_compression(media_type: str) -> Compression:
    """``"gzip"``, ``"zstd"`` or ``"none"`` for a layer media type; ImageError if unknown."""
    try:
        return _LAYER_COMPRESSION[media_type]
    except KeyError:
        raise ImageError(f"unknown layer media type {media_type!r}") from None


def to_oci(media_type: str) -> str:
    """The OCI equivalent of a Docker media type (``--oci``); other types unchanged."""
    return _DOCKER_TO_OCI.get(media_type, media_type)


def estargz_layer_type(media_type: str) -> str:
    """The media type of ``media_type``'s layer once converted to eStargz.

    eStargz is gzip, so gzip types are kept, uncompressed tar types gain the gzip suffix,
    and a zstd source becomes the gzip type of the same family.
    """
    compression = layer_compression(media_type)
    if compression == "gzip":
        return media_type
    if compression == "none":
        return _GZIP_OF_UNCOMPRESSED[media_type]
    if media_type == OCI_LAYER_NONDISTRIBUTABLE_ZSTD:
        return OCI_LAYER_NONDISTRIBUTABLE_GZIP
    if is_docker(media_type):
        return DOCKER_LAYER_GZIP
    return OCI_LAYER_GZIP


def zstd_chunked_layer_type(media_type: str) -> str:
    """The media type of ``media_type``'s layer once converted to zstd:chunked."""
    layer_compression(media_type)  # validates
    if is_nondistributable(media_type):
        return OCI_LAYER_NONDISTRIBUTABLE_ZSTD
    return OCI_LAYER_ZSTD
