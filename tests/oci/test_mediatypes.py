from __future__ import annotations

import pytest

from esgz.errors import ImageError
from esgz.oci import mediatypes as mt

DOCKER_TO_OCI = {
    # FORMAT.md §10 / containerd ConvertDockerMediaTypeToOCI
    "application/vnd.docker.distribution.manifest.list.v2+json": (
        "application/vnd.oci.image.index.v1+json"
    ),
    "application/vnd.docker.distribution.manifest.v2+json": (
        "application/vnd.oci.image.manifest.v1+json"
    ),
    "application/vnd.docker.container.image.v1+json": "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": (
        "application/vnd.oci.image.layer.v1.tar+gzip"
    ),
    "application/vnd.docker.image.rootfs.diff.tar": "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": (
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
    ),
    "application/vnd.docker.image.rootfs.foreign.diff.tar": (
        "application/vnd.oci.image.layer.nondistributable.v1.tar"
    ),
}


@pytest.mark.parametrize(("docker", "oci"), DOCKER_TO_OCI.items())
def test_docker_to_oci(docker: str, oci: str) -> None:
    assert mt.to_oci(docker) == oci
    assert mt.to_oci(oci) == oci  # OCI types are left alone
    assert mt.is_docker(docker)
    assert not mt.is_docker(oci)


def test_unknown_types_pass_through_to_oci() -> None:
    assert mt.to_oci("application/vnd.example+json") == "application/vnd.example+json"


@pytest.mark.parametrize(
    ("media_type", "compression"),
    [
        (mt.OCI_LAYER, "none"),
        (mt.OCI_LAYER_GZIP, "gzip"),
        (mt.OCI_LAYER_ZSTD, "zstd"),
        (mt.OCI_LAYER_NONDISTRIBUTABLE, "none"),
        (mt.OCI_LAYER_NONDISTRIBUTABLE_GZIP, "gzip"),
        (mt.OCI_LAYER_NONDISTRIBUTABLE_ZSTD, "zstd"),
        (mt.DOCKER_LAYER, "none"),
        (mt.DOCKER_LAYER_GZIP, "gzip"),
        (mt.DOCKER_LAYER_ZSTD, "zstd"),
        (mt.DOCKER_LAYER_FOREIGN, "none"),
        (mt.DOCKER_LAYER_FOREIGN_GZIP, "gzip"),
    ],
)
def test_layer_compression(media_type: str, compression: str) -> None:
    assert mt.layer_compression(media_type) == compression
    assert mt.is_layer(media_type)
    assert not mt.is_manifest(media_type)
    assert not mt.is_index(media_type)


def test_classification() -> None:
    assert mt.is_index(mt.OCI_INDEX)
    assert mt.is_index(mt.DOCKER_MANIFEST_LIST)
    assert mt.is_manifest(mt.OCI_MANIFEST)
    assert mt.is_manifest(mt.DOCKER_MANIFEST)
    assert mt.is_config(mt.OCI_CONFIG)
    assert mt.is_config(mt.DOCKER_CONFIG)
    assert not mt.is_manifest(mt.OCI_INDEX)
    assert not mt.is_layer(mt.OCI_CONFIG)
    assert mt.is_schema1(mt.DOCKER_SCHEMA1_MANIFEST)
    assert mt.is_schema1(mt.DOCKER_SCHEMA1_SIGNED_MANIFEST)
    assert mt.is_nondistributable(mt.DOCKER_LAYER_FOREIGN_GZIP)
    assert not mt.is_nondistributable(mt.OCI_LAYER_GZIP)
    with pytest.raises(ImageError, match="unknown layer media type"):
        mt.layer_compression("application/octet-stream")


def test_schema1_is_rejected_with_a_clear_error() -> None:
    with pytest.raises(ImageError, match="schema 1") as info:
        mt.reject_schema1(mt.DOCKER_SCHEMA1_SIGNED_MANIFEST, image="docker.io/library/old")
    assert str(info.value).startswith("image docker.io/library/old: ")
    mt.reject_schema1(mt.DOCKER_MANIFEST)  # no error


@pytest.mark.parametrize(
    ("source", "estargz", "zstd_chunked"),
    [
        (mt.OCI_LAYER_GZIP, mt.OCI_LAYER_GZIP, mt.OCI_LAYER_ZSTD),
        (mt.OCI_LAYER, mt.OCI_LAYER_GZIP, mt.OCI_LAYER_ZSTD),
        (mt.OCI_LAYER_ZSTD, mt.OCI_LAYER_GZIP, mt.OCI_LAYER_ZSTD),
        (mt.DOCKER_LAYER_GZIP, mt.DOCKER_LAYER_GZIP, mt.OCI_LAYER_ZSTD),
        (mt.DOCKER_LAYER, mt.DOCKER_LAYER_GZIP, mt.OCI_LAYER_ZSTD),
        (
            mt.OCI_LAYER_NONDISTRIBUTABLE,
            mt.OCI_LAYER_NONDISTRIBUTABLE_GZIP,
            mt.OCI_LAYER_NONDISTRIBUTABLE_ZSTD,
        ),
        (
            mt.OCI_LAYER_NONDISTRIBUTABLE_GZIP,
            mt.OCI_LAYER_NONDISTRIBUTABLE_GZIP,
            mt.OCI_LAYER_NONDISTRIBUTABLE_ZSTD,
        ),
        (
            mt.DOCKER_LAYER_FOREIGN,
            mt.DOCKER_LAYER_FOREIGN_GZIP,
            mt.OCI_LAYER_NONDISTRIBUTABLE_ZSTD,
        ),
    ],
)
def test_converted_layer_types(source: str, estargz: str, zstd_chunked: str) -> None:
    assert mt.estargz_layer_type(source) == estargz
    assert mt.zstd_chunked_layer_type(source) == zstd_chunked
    assert mt.layer_compression(estargz) == "gzip"


def test_converted_layer_type_of_unknown_type_is_an_error() -> None:
    with pytest.raises(ImageError):
        mt.estargz_layer_type("application/vnd.example.layer")
    with pytest.raises(ImageError):
        mt.zstd_chunked_layer_type(mt.OCI_CONFIG)
