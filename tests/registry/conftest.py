"""Fixtures for the registry tests: the real registries, the fault proxy, sample images."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.faultproxy import FaultProxy, run_fault_proxy
from tests.fixtures.images import busybox_docker_image, busybox_image, multiplatform_image
from tests.fixtures.registry import (
    RegistryServer,
    plain_registry,
    tls_registry,
    token_registry,
)
from tests.registry.helpers import unique_repo
from tests.registry.sample_images import SampleImage, build_sample_image

__all__ = [
    "busybox_docker_image",
    "busybox_image",
    "multiplatform_image",
    "plain_registry",
    "tls_registry",
    "token_registry",
]


@pytest.fixture(scope="session")
def fault_proxy(plain_registry: RegistryServer) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the plain registry (faults reset per test)."""
    with run_fault_proxy(plain_registry.host) as proxy:
        yield proxy


@pytest.fixture
def faults(fault_proxy: FaultProxy) -> Iterator[FaultProxy]:
    """The fault proxy with no faults armed and an empty log; disarmed again afterwards."""
    fault_proxy.reset()
    yield fault_proxy
    fault_proxy.reset()


@pytest.fixture(scope="session")
def oci_image(tmp_path_factory: pytest.TempPathFactory) -> SampleImage:
    """A one-platform OCI image with two small layers."""
    return build_sample_image(tmp_path_factory.mktemp("oci-image"), seed=1)


@pytest.fixture(scope="session")
def multi_platform_image(tmp_path_factory: pytest.TempPathFactory) -> SampleImage:
    """An OCI index over linux/amd64 and linux/arm64/v8."""
    return build_sample_image(
        tmp_path_factory.mktemp("multi-image"),
        platforms=("linux/amd64", "linux/arm64/v8"),
        seed=2,
    )


@pytest.fixture(scope="session")
def docker_image(tmp_path_factory: pytest.TempPathFactory) -> SampleImage:
    """A Docker schema 2 manifest list over two platforms."""
    return build_sample_image(
        tmp_path_factory.mktemp("docker-image"),
        platforms=("linux/amd64", "linux/arm/v7"),
        docker=True,
        seed=3,
    )


@pytest.fixture(scope="session")
def big_image(tmp_path_factory: pytest.TempPathFactory) -> SampleImage:
    """One platform with a ~3 MiB layer (chunked uploads, resumed downloads)."""
    return build_sample_image(
        tmp_path_factory.mktemp("big-image"), layer_sizes=(3 << 20, 5000), seed=4
    )


def blob_file(root: Path, digest: str) -> Path:
    """Where a test stores a pulled blob."""
    return root / digest.replace(":", "-")


# Images pushed once per session by skopeo (the independent client) and only read after.


@pytest.fixture(scope="session")
def tls_oci_repo(tls_registry: RegistryServer, oci_image: SampleImage) -> str:
    """``oci_image`` pushed by skopeo to the TLS registry; the repository name."""
    repo = unique_repo("skopeo-oci")
    tls_registry.skopeo_push_layout(oci_image.layout, repo, all_platforms=False)
    return repo


@pytest.fixture(scope="session")
def token_oci_repo(token_registry: RegistryServer, oci_image: SampleImage) -> str:
    """``oci_image`` pushed by skopeo to the token-auth registry; the repository name."""
    repo = unique_repo("skopeo-oci")
    token_registry.skopeo_push_layout(oci_image.layout, repo, all_platforms=False)
    return repo


@pytest.fixture(scope="session")
def plain_multi_repo(plain_registry: RegistryServer, multi_platform_image: SampleImage) -> str:
    """``multi_platform_image`` (all platforms) pushed by skopeo to the plain registry."""
    repo = unique_repo("skopeo-multi")
    plain_registry.skopeo_push_layout(multi_platform_image.layout, repo)
    return repo


@pytest.fixture(scope="session")
def plain_v2s2_repo(plain_registry: RegistryServer, oci_image: SampleImage) -> str:
    """``oci_image`` pushed by skopeo as Docker schema 2 (``--format v2s2``)."""
    repo = unique_repo("skopeo-v2s2")
    plain_registry.skopeo_push_layout(
        oci_image.layout, repo, all_platforms=False, extra=["--format", "v2s2"]
    )
    return repo
