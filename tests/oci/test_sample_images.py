"""The sample images of tests.fixtures.images are what their documentation says."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from tests.fixtures import images
from tests.fixtures.images import SampleImage, SampleLayer


def _uncompressed(image: SampleImage, layer: SampleLayer) -> bytes:
    blob = image.blob(layer.digest)
    assert "sha256:" + hashlib.sha256(blob).hexdigest() == layer.digest
    assert len(blob) == layer.size
    if layer.media_type.endswith("gzip"):
        return gzip.decompress(blob)
    if layer.media_type.endswith("zstd"):
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)).read()
    return blob


def _check_image(image: SampleImage) -> None:
    manifest = image.manifest()
    config = image.config()
    assert manifest["config"]["digest"] == image.config_digest
    assert [layer["digest"] for layer in manifest["layers"]] == [
        layer.digest for layer in image.layers
    ]
    assert [layer["mediaType"] for layer in manifest["layers"]] == [
        layer.media_type for layer in image.layers
    ]
    assert config["rootfs"]["diff_ids"] == [layer.diff_id for layer in image.layers]
    assert f"{config['os']}/{config['architecture']}" == (image.platform or "").rsplit("/v", 1)[0]
    for layer in image.layers:
        tar_bytes = _uncompressed(image, layer)
        assert "sha256:" + hashlib.sha256(tar_bytes).hexdigest() == layer.diff_id
        assert len(tar_bytes) == layer.uncompressed_size
        with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
            members = tar.getmembers()
        assert tuple(m.name for m in members) == layer.files
        assert {m.mtime for m in members} == {images.MTIME}


@pytest.mark.parametrize(
    "fixture", ["busybox_image", "busybox_docker_image", "busybox_mixed_image", "python_image"]
)
def test_single_platform_images_are_consistent(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    _check_image(request.getfixturevalue(fixture))


def test_busybox_contents(busybox_image: SampleImage) -> None:
    base, data = busybox_image.layers
    assert "bin/busybox" in base.files
    assert {f"bin/{a}" for a in images.BUSYBOX_APPLETS} <= set(base.files)
    assert {"etc/passwd", "etc/group", "tmp", "proc", "dev", "sys", "root"} <= set(base.files)
    assert data.files.index("data/hardlink.txt") > data.files.index("data/small.txt")
    assert "etc/.wh.motd" in data.files
    assert "opt/replaced/.wh..wh..opq" in data.files
    with tarfile.open(busybox_image.blob_path(data.digest)) as tar:
        big = tar.getmember("data/big.bin")
        assert big.size == images.BIG_SIZE
        link = tar.getmember("data/hardlink.txt")
        assert link.islnk()
        assert link.linkname == "data/small.txt"
    config = busybox_image.config()
    assert config["config"]["Entrypoint"] == ["/bin/sh", "-c"]
    assert config["config"]["WorkingDir"] == "/data"


def test_variants_share_layers_and_types(
    busybox_image: SampleImage, busybox_docker_image: SampleImage, busybox_mixed_image: SampleImage
) -> None:
    assert [layer.diff_id for layer in busybox_docker_image.layers] == [
        layer.diff_id for layer in busybox_image.layers
    ]
    assert [layer.digest for layer in busybox_docker_image.layers] == [
        layer.digest for layer in busybox_image.layers
    ]
    assert busybox_docker_image.manifest()["mediaType"] == images.DOCKER_MANIFEST
    assert [layer.diff_id for layer in busybox_mixed_image.layers] == [
        layer.diff_id for layer in busybox_image.layers
    ]
    assert [layer.media_type for layer in busybox_mixed_image.layers] == [
        images.OCI_LAYER,
        images.OCI_LAYER_ZSTD,
    ]


def test_multiplatform_index(multiplatform_image: SampleImage) -> None:
    index = multiplatform_image.manifest()
    assert index["mediaType"] == images.OCI_INDEX
    host, other = multiplatform_image.manifests
    assert [m["digest"] for m in index["manifests"]] == [
        host.manifest_digest,
        other.manifest_digest,
    ]
    assert index["manifests"][0]["platform"]["architecture"] == images.HOST_ARCH
    assert index["manifests"][1]["platform"]["architecture"] == images.OTHER_ARCH
    for child in (host, other):
        _check_image(child)
    assert other.config()["architecture"] == images.OTHER_ARCH


def test_builds_are_deterministic(tmp_path: Path, busybox_image: SampleImage) -> None:
    build = images._busybox_builder(
        "busybox", ("gzip", "gzip"), (images.OCI_LAYER_GZIP, images.OCI_LAYER_GZIP), False
    )
    again = build(tmp_path / "layout")
    assert again.manifest_digest == busybox_image.manifest_digest
    assert again.layers == busybox_image.layers


def test_skopeo_dir_export(busybox_docker_image: SampleImage) -> None:
    if shutil.which("skopeo") is None:
        pytest.skip("needs skopeo (apt-get install skopeo)")
    directory = busybox_docker_image.skopeo_dir()
    result = subprocess.run(
        ["skopeo", "inspect", "--raw", f"dir:{directory}"], capture_output=True, check=True
    )
    assert result.stdout.strip() == busybox_docker_image.blob(busybox_docker_image.manifest_digest)


def _unpack(image: SampleImage, root: Path) -> None:
    for layer in image.layers:
        with tarfile.open(image.blob_path(layer.digest)) as tar:
            for member in tar.getmembers():
                name = os.path.basename(member.name)
                parent = root / os.path.dirname(member.name)
                if name == ".wh..wh..opq":
                    for child in parent.iterdir():
                        if child.is_dir() and not child.is_symlink():
                            shutil.rmtree(child)
                        else:
                            child.unlink()
                elif name.startswith(".wh."):
                    (parent / name[4:]).unlink()
                else:
                    tar.extract(member, root, filter="tar")


@pytest.mark.parametrize(
    ("fixture", "argv", "expected"),
    [
        ("busybox_image", ["/bin/sh", "-c", images.BUSYBOX_CMD], images.SMALL_TEXT),
        ("python_image", ["/bin/env", "PATH=/usr/bin:/bin", "python3", "-c",
                          "import json; print(json.dumps([1]))"], b"[1]\n"),
    ],
)  # fmt: skip
def test_images_run(
    tmp_path: Path, fixture: str, argv: list[str], expected: bytes, request: pytest.FixtureRequest
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: runs the unpacked image with chroot")
    image: SampleImage = request.getfixturevalue(fixture)
    root = tmp_path / "rootfs"
    root.mkdir()
    _unpack(image, root)
    if fixture == "busybox_image":
        assert not (root / "etc" / "motd").exists()
        assert sorted(p.name for p in (root / "opt" / "replaced").iterdir()) == ["new.txt"]
    result = subprocess.run(["chroot", str(root), *argv], capture_output=True, check=True)
    assert result.stdout == expected
