"""Fixtures for the profiling sandbox tests: sample images as layer sources, host checks."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from esgz.runtime.unpack import LayerFile
from esgz.runtime.workload import DEFAULT_CNI_PLUGIN_DIRS
from tests.fixtures.images import SampleImage, busybox_image, python_image

__all__ = ["busybox_image", "python_image"]


def sandbox_skip_reason() -> str | None:
    """Why real containers cannot run here (None if they can)."""
    if os.geteuid() != 0:
        return "needs root: overlay mounts, namespaces, fanotify and runc"
    if shutil.which("runc") is None:
        return "needs runc: apt-get install runc"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    return None


def require_sandbox() -> None:
    """Skip the calling test when containers cannot run here."""
    reason = sandbox_skip_reason()
    if reason is not None:
        pytest.skip(reason)


def layer_sources(image: SampleImage) -> list[LayerFile]:
    """The layers of a sample image as :class:`LayerFile` (bottom first)."""
    return [
        LayerFile(digest=layer.digest, path=image.blob_path(layer.digest), diff_id=layer.diff_id)
        for layer in image.layers
    ]


@pytest.fixture(scope="session")
def layer_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A layer unpack cache shared by the tests of one session."""
    return tmp_path_factory.mktemp("layer-cache")


@pytest.fixture
def work_dir(tmp_path: Path) -> Iterator[Path]:
    """A per-test work dir; after the test, nothing may be left mounted below it."""
    path = tmp_path / "work"
    path.mkdir()
    yield path
    mounts = subprocess.run(
        ["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True, check=False
    ).stdout.split()
    leftover = [m for m in mounts if m.startswith(str(path))]
    for target in leftover:  # keep the machine usable even when a test fails
        subprocess.run(["umount", "-l", target], check=False)
    assert not leftover, f"mounts left behind: {leftover}"


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, **fields: object) -> tarfile.TarInfo:
    """A tar header with a fixed mtime and the usual modes; ``fields`` override."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mtime = 1_700_000_000
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def make_layer(
    path: Path, members: list[tuple[tarfile.TarInfo, bytes]], compression: str = "gzip"
) -> LayerFile:
    """Write a layer blob from (TarInfo, data) pairs; return its source."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if info.isreg():
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    raw = buffer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    if compression == "gzip":
        blob = gzip.compress(raw)
    elif compression == "zstd":
        blob = zstandard.ZstdCompressor().compress(raw)
    else:
        blob = raw
    path.write_bytes(blob)
    return LayerFile(
        digest="sha256:" + hashlib.sha256(blob).hexdigest(), path=path, diff_id=diff_id
    )


BRIDGE = "esgzbr231"
GATEWAY = "10.231.0.1"
SUBNET = "10.231.0.0/24"


def netns_names() -> set[str]:
    """Names of the named network namespaces on this machine."""
    output = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in output.splitlines() if line.strip()}


@pytest.fixture
def cni_conf_dir(tmp_path: Path) -> Iterator[Path]:
    """A conf dir with a bridge network on an unusual subnet; the bridge is removed after."""
    require_sandbox()
    if not any((d / "bridge").is_file() for d in DEFAULT_CNI_PLUGIN_DIRS):
        pytest.skip("needs containernetworking-plugins (bridge, host-local, loopback)")
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    network = {
        "cniVersion": "1.0.0",
        "name": "esgz-test",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": SUBNET}]],
                    "dataDir": str(tmp_path / "ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    (conf_dir / "10-esgz-test.conflist").write_text(json.dumps(network))
    # A later file is ignored: only the first config (by name) is used.
    (conf_dir / "20-ignored.conf").write_text(json.dumps({"name": "x", "type": "nonexistent"}))
    yield conf_dir
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)
