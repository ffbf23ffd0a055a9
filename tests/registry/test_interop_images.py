"""The shared sample images (busybox, Docker-typed, multi-platform) through real registries.

skopeo pushes them, esgz's client copies them (pull into a BlobStore, push elsewhere:
another registry, or another repository of the same registry by mounting), and skopeo
reads the copies back, checking every digest.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import anyio
import pytest

from esgz.oci.blobstore import BlobStore
from esgz.oci.mediatypes import DOCKER_MANIFEST, is_index
from esgz.oci.reference import RegistryReference
from esgz.registry import PushOutcome, RegistryClient
from tests.fixtures.images import SampleImage
from tests.fixtures.registry import RegistryServer
from tests.registry.helpers import client_for, server_ref, unique_repo

pytestmark = pytest.mark.anyio


class _Descriptor:
    def __init__(self, entry: dict[str, object]) -> None:
        self.digest = str(entry["digest"])
        self.size = int(entry["size"])  # type: ignore[call-overload]


async def copy_image(
    source_client: RegistryClient,
    source: RegistryReference,
    target_client: RegistryClient,
    target: RegistryReference,
    store: BlobStore,
    *,
    mount: bool = False,
) -> tuple[str, Counter[PushOutcome]]:
    """Copy ``source`` (manifest or index) to ``target`` through ``store``."""
    outcomes: Counter[PushOutcome] = Counter()
    top = await source_client.fetch_manifest(source)

    async def copy_manifest(digest: str, *, tag: bool) -> str:
        fetched = await source_client.fetch_manifest(source.with_digest(digest))
        document = json.loads(fetched.content)
        if is_index(fetched.media_type):
            children = document["manifests"]
            async with anyio.create_task_group() as group:
                for child in children:
                    group.start_soon(lambda d=child["digest"]: copy_manifest(d, tag=False))
            references = [_Descriptor(child) for child in children]
        else:
            references = [_Descriptor(document["config"])] + [
                _Descriptor(layer) for layer in document["layers"]
            ]

            async def copy_blob(item: _Descriptor) -> None:
                path = await source_client.pull_blob_into(source, item.digest, item.size, store)
                outcome = await target_client.push_blob(
                    target, item.digest, item.size, path, mount_from=source if mount else None
                )
                outcomes[outcome] += 1

            async with anyio.create_task_group() as group:
                for item in references:
                    group.start_soon(copy_blob, item)
        where = target if tag else target.with_digest(fetched.digest)
        return await target_client.push_manifest(
            where, fetched.content, fetched.media_type, references=references
        )

    digest = await copy_manifest(top.digest, tag=True)
    return digest, outcomes


def _layout_blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()


async def test_busybox_from_plain_to_tls_registry(
    plain_registry: RegistryServer,
    tls_registry: RegistryServer,
    busybox_image: SampleImage,
    tmp_path: Path,
) -> None:
    repo = unique_repo("busybox")
    plain_registry.skopeo_push_layout(busybox_image.layout, repo, all_platforms=False)
    store = BlobStore(tmp_path / "store")
    async with (
        client_for(plain_registry) as source_client,
        client_for(tls_registry) as target_client,
    ):
        digest, outcomes = await copy_image(
            source_client,
            server_ref(plain_registry, repo),
            target_client,
            server_ref(tls_registry, repo),
            store,
        )
    assert digest == busybox_image.manifest_digest
    assert outcomes == Counter({"uploaded": 1 + len(busybox_image.layers)})
    for layer in busybox_image.layers:
        assert (await anyio.Path(store.path(layer.digest)).read_bytes()) == _layout_blob(
            busybox_image.layout, layer.digest
        )
    out = tmp_path / "out"
    tls_registry.skopeo_pull_layout(repo, out, all_platforms=False)
    index = json.loads((out / "index.json").read_text())
    assert index["manifests"][0]["digest"] == busybox_image.manifest_digest


async def test_docker_typed_busybox_through_token_registry(
    token_registry: RegistryServer,
    plain_registry: RegistryServer,
    busybox_docker_image: SampleImage,
    tmp_path: Path,
) -> None:
    repo = unique_repo("busybox-docker")
    token_registry.skopeo_push(f"dir:{busybox_docker_image.skopeo_dir()}", repo)
    store = BlobStore(tmp_path / "store")
    async with (
        client_for(token_registry) as source_client,
        client_for(plain_registry) as target_client,
    ):
        info = await source_client.resolve(server_ref(token_registry, repo))
        assert (info.digest, info.media_type) == (
            busybox_docker_image.manifest_digest,
            DOCKER_MANIFEST,
        )
        digest, _ = await copy_image(
            source_client,
            server_ref(token_registry, repo),
            target_client,
            server_ref(plain_registry, repo),
            store,
        )
    assert digest == busybox_docker_image.manifest_digest
    raw = plain_registry.skopeo_inspect_raw(repo)
    assert raw == _layout_blob(busybox_docker_image.layout, digest)


async def test_multiplatform_index_mounted_within_registry(
    plain_registry: RegistryServer, multiplatform_image: SampleImage, tmp_path: Path
) -> None:
    source_repo, target_repo = unique_repo("multi-src"), unique_repo("multi-dst")
    plain_registry.skopeo_push_layout(multiplatform_image.layout, source_repo)
    store = BlobStore(tmp_path / "store")
    async with client_for(plain_registry) as client:
        digest, outcomes = await copy_image(
            client,
            server_ref(plain_registry, source_repo),
            client,
            server_ref(plain_registry, target_repo),
            store,
            mount=True,
        )
    assert digest == multiplatform_image.manifest_digest
    assert set(outcomes) == {"mounted"}
    assert plain_registry.skopeo_inspect_raw(target_repo) == _layout_blob(
        multiplatform_image.layout, digest
    )
    out = tmp_path / "out"
    plain_registry.skopeo_pull_layout(target_repo, out)
    for platform_image in multiplatform_image.manifests:
        for layer in platform_image.layers:
            copied = out / "blobs" / "sha256" / layer.digest.split(":", 1)[1]
            assert copied.read_bytes() == _layout_blob(multiplatform_image.layout, layer.digest)
