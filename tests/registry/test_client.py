"""Pull and push against the real Distribution registry, cross-checked with skopeo."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import anyio
import pytest

from esgz.errors import NotFoundError, VerificationError
from esgz.oci.blobstore import BlobStore
from esgz.oci.mediatypes import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from tests.fixtures.faultproxy import Fault, FaultProxy
from tests.fixtures.registry import RegistryServer
from tests.registry.helpers import client_for, push_sample, ref_for, server_ref, unique_repo
from tests.registry.sample_images import SampleImage, build_sample_image

pytestmark = pytest.mark.anyio


def _listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def _sha256_file(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


async def test_pull_image_pushed_by_skopeo(
    plain_registry: RegistryServer,
    multi_platform_image: SampleImage,
    plain_multi_repo: str,
    tmp_path: Path,
) -> None:
    repo = plain_multi_repo
    ref = server_ref(plain_registry, repo)
    async with client_for(plain_registry) as client:
        info = await client.resolve(ref)
        assert info.media_type == OCI_INDEX
        index = await client.fetch_manifest(ref)
        assert index.digest == info.digest
        assert index.media_type == OCI_INDEX
        by_digest = await client.fetch_manifest(ref.with_digest(info.digest))
        assert by_digest.content == index.content
        entries = index.json()["manifests"]  # type: ignore[index]
        assert {e["platform"]["architecture"] for e in entries} == {"amd64", "arm64"}
        for entry in entries:
            manifest = await client.fetch_manifest(ref.with_digest(entry["digest"]))
            assert manifest.media_type == OCI_MANIFEST
            document = json.loads(manifest.content)
            config = await client.pull_blob_bytes(ref, document["config"]["digest"])
            assert json.loads(config)["architecture"] == entry["platform"]["architecture"]
            for layer in document["layers"]:
                dest = tmp_path / layer["digest"].replace(":", "-")
                await client.pull_blob(ref, layer["digest"], layer["size"], dest)
                assert _sha256_file(dest) == layer["digest"]
                assert dest.stat().st_size == layer["size"]
                # Identical to the layer skopeo read from the layout.
                source = multi_platform_image.blobs[layer["digest"]].path
                assert dest.read_bytes() == source.read_bytes()


async def test_pull_blob_into_store_fetches_only_what_the_store_lacks(
    plain_registry: RegistryServer,
    faults: FaultProxy,
    multi_platform_image: SampleImage,
    plain_multi_repo: str,
    tmp_path: Path,
) -> None:
    layer = multi_platform_image.platforms[0].layers[0]
    store = BlobStore(tmp_path / "store")
    ref = ref_for(faults.host, plain_multi_repo)

    def fetches() -> int:
        return sum(e.method == "GET" and layer.digest in e.path for e in faults.log)

    async with client_for(plain_registry) as client:
        first = await client.pull_blob_into(ref, layer.digest, layer.size, store)
        assert await client.pull_blob_into(ref, layer.digest, layer.size, store) == first
        assert await client.pull_blob_into(ref, layer.digest, None, store) == first
        assert fetches() == 1
        # A stored copy of the wrong size is fetched again and replaced.
        first.write_bytes(b"truncated")
        assert await client.pull_blob_into(ref, layer.digest, layer.size, store) == first
        assert fetches() == 2
    assert first == store.path(layer.digest)
    assert first.read_bytes() == layer.path.read_bytes()


async def test_pull_docker_schema2_pushed_by_skopeo(
    plain_registry: RegistryServer, plain_v2s2_repo: str, tmp_path: Path
) -> None:
    repo = plain_v2s2_repo
    ref = server_ref(plain_registry, repo)
    async with client_for(plain_registry) as client:
        manifest = await client.fetch_manifest(ref)
        assert manifest.media_type == DOCKER_MANIFEST
        document = json.loads(manifest.content)
        assert document["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
        for layer in document["layers"]:
            assert layer["mediaType"] == "application/vnd.docker.image.rootfs.diff.tar.gzip"
            dest = await client.pull_blob(ref, layer["digest"], layer["size"], tmp_path / "l")
            assert _sha256_file(dest) == layer["digest"]


async def test_push_is_read_back_by_skopeo(
    plain_registry: RegistryServer, multi_platform_image: SampleImage, tmp_path: Path
) -> None:
    repo = unique_repo("to-skopeo")
    ref = server_ref(plain_registry, repo, tag="v1")
    async with client_for(plain_registry) as client:
        digest = await push_sample(client, ref, multi_platform_image)
    assert digest == multi_platform_image.top.digest
    raw = plain_registry.skopeo_inspect_raw(f"{repo}:v1")
    assert raw == multi_platform_image.top_bytes
    # skopeo copies every platform into a layout, verifying every digest on the way.
    out = tmp_path / "copy"
    plain_registry.skopeo_pull_layout(f"{repo}:v1", out, tag="v1")
    copied = json.loads((out / "index.json").read_text())
    assert copied["manifests"][0]["digest"] == digest
    for blob in multi_platform_image.blobs.values():
        assert (out / "blobs" / "sha256" / blob.digest.split(":")[1]).read_bytes() == (
            blob.path.read_bytes()
        )


async def test_docker_manifest_list_round_trip(
    plain_registry: RegistryServer, docker_image: SampleImage, tmp_path: Path
) -> None:
    repo = unique_repo("docker-list")
    ref = server_ref(plain_registry, repo)
    async with client_for(plain_registry) as client:
        digest = await push_sample(client, ref, docker_image)
        info = await client.resolve(ref)
        assert (info.digest, info.media_type) == (digest, docker_image.top.media_type)
        for platform in docker_image.platforms:
            fetched = await client.fetch_manifest(ref.with_digest(platform.manifest.digest))
            assert fetched.media_type == DOCKER_MANIFEST
            assert fetched.content == platform.manifest_bytes
    assert plain_registry.skopeo_inspect_raw(repo) == docker_image.top_bytes
    plain_registry.skopeo_pull_layout(repo, tmp_path / "copy")


async def test_existing_blobs_are_skipped_and_mounts_used(
    plain_registry: RegistryServer, oci_image: SampleImage
) -> None:
    source = server_ref(plain_registry, unique_repo("mount-src"))
    target = server_ref(plain_registry, unique_repo("mount-dst"))
    layer = oci_image.platforms[0].layers[1]
    async with client_for(plain_registry) as client:
        assert await client.push_blob(source, layer.digest, layer.size, layer.path) == "uploaded"
    async with client_for(plain_registry) as client:
        assert await client.push_blob(source, layer.digest, layer.size, layer.path) == "exists"
        outcome = await client.push_blob(
            target, layer.digest, layer.size, layer.path, mount_from=source
        )
        assert outcome == "mounted"
        assert await client.blob_size(target, layer.digest) == layer.size
        # A mount from a repository without the blob falls back to an upload.
        other = oci_image.platforms[0].layers[0]
        third = server_ref(plain_registry, unique_repo("mount-3"))
        outcome = await client.push_blob(
            third, other.digest, other.size, other.path, mount_from=target
        )
        assert outcome == "uploaded"
        assert await client.blob_size(third, other.digest) == other.size


async def test_chunked_upload_and_progress(
    plain_registry: RegistryServer, big_image: SampleImage, tmp_path: Path
) -> None:
    ref = server_ref(plain_registry, unique_repo("chunked"))
    events: list[tuple[str, int, int]] = []
    async with client_for(
        plain_registry,
        monolithic_threshold=1 << 20,
        chunk_size=700_000,
        on_progress=lambda d, n, t: events.append((d, n, t)),
    ) as client:
        digest = await push_sample(client, ref, big_image)
        big = big_image.platforms[0].layers[0]
        assert big.size > 3_000_000
        big_events = [e for e in events if e[0] == big.digest]
        assert big_events[-1][1:] == (big.size, big.size)
        assert len(big_events) > 3
        assert all(a[1] <= b[1] for a, b in itertools.pairwise(big_events))
        events.clear()
        dest = await client.pull_blob(ref, big.digest, big.size, tmp_path / "big")
        assert dest.read_bytes() == big.path.read_bytes()
        assert events[-1] == (big.digest, big.size, big.size)
    raw = plain_registry.skopeo_inspect_raw(ref.repository)
    assert hashlib.sha256(raw).hexdigest() == digest.split(":")[1]


async def test_manifest_is_not_pushed_before_its_blobs(
    plain_registry: RegistryServer, oci_image: SampleImage
) -> None:
    ref = server_ref(plain_registry, unique_repo("no-blobs"))
    platform = oci_image.platforms[0]
    async with client_for(plain_registry) as client:
        await client.push_blob(
            ref, platform.config.digest, platform.config.size, platform.config.path
        )
        with pytest.raises(NotFoundError, match=r"not pushing manifest .*blob sha256:"):
            await client.push_manifest(
                ref,
                platform.manifest_bytes,
                platform.manifest.media_type,
                references=[platform.config, *platform.layers],
            )
        assert not await client.manifest_exists(ref)


async def test_missing_manifest_and_blob_are_not_found(
    plain_registry: RegistryServer, tmp_path: Path
) -> None:
    ref = server_ref(plain_registry, unique_repo("missing"))
    digest = "sha256:" + "ab" * 32
    async with client_for(plain_registry) as client:
        with pytest.raises(NotFoundError) as caught:
            await client.resolve(ref)
        assert caught.value.status_code == 404
        assert "\n" not in str(caught.value)
        assert plain_registry.host in str(caught.value)
        with pytest.raises(NotFoundError):
            await client.pull_blob(ref, digest, 10, tmp_path / "x")
        assert _listing(tmp_path) == []


async def test_wrong_expected_digest_leaves_nothing(
    plain_registry: RegistryServer, oci_image: SampleImage, tmp_path: Path
) -> None:
    ref = server_ref(plain_registry, unique_repo("wrong-size"))
    layer = oci_image.platforms[0].layers[1]
    async with client_for(plain_registry) as client:
        await client.push_blob(ref, layer.digest, layer.size, layer.path)
        with pytest.raises(VerificationError, match=r"sends \d+ bytes, expected"):
            await client.pull_blob(ref, layer.digest, layer.size - 1, tmp_path / "blob")
    assert _listing(tmp_path) == []


async def test_concurrent_transfers_are_bounded(
    plain_registry: RegistryServer, faults: FaultProxy, tmp_path: Path
) -> None:
    """Twelve blobs pushed and pulled at once through a slow proxy: at most 3 in flight."""
    image = build_sample_image(
        tmp_path / "many", layer_sizes=tuple(50_000 + i for i in range(12)), seed=5
    )
    layers = image.platforms[0].layers
    ref = ref_for(faults.host, unique_repo("many"))
    faults.add(Fault("delay", r"/blobs/", seconds=0.15, times=1000))
    async with client_for(plain_registry, max_concurrent_transfers=3) as client:
        async with anyio.create_task_group() as group:
            for layer in layers:
                group.start_soon(client.push_blob, ref, layer.digest, layer.size, layer.path)
        assert 1 < faults.peak_active <= 3
        faults.peak_active = 0
        async with anyio.create_task_group() as group:
            for layer in layers:
                group.start_soon(
                    client.pull_blob, ref, layer.digest, layer.size, tmp_path / layer.digest
                )
        assert 1 < faults.peak_active <= 3
    for layer in layers:
        assert (tmp_path / layer.digest).read_bytes() == layer.path.read_bytes()
