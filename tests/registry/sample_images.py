"""Small sample images, built in plain Python, as OCI image layouts (for the registry tests).

Each image has gzip tar layers of pseudo-random (incompressible) files, a config whose
``rootfs.diff_ids`` match, a manifest per platform and, for several platforms, an index.
``docker=True`` uses the Docker schema 2 media types instead of the OCI ones.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Blob:
    """A blob of the sample image: descriptor fields and the file holding it."""

    digest: str
    size: int
    media_type: str
    path: Path

    def descriptor(self) -> dict[str, object]:
        """The JSON descriptor."""
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass
class PlatformImage:
    """One platform's manifest, config and layers."""

    platform: str
    manifest: Blob
    manifest_bytes: bytes
    config: Blob
    layers: list[Blob]


@dataclass
class SampleImage:
    """An image in an OCI layout: its top-level document and every blob."""

    layout: Path
    top: Blob  # the index (several platforms) or the manifest (one)
    top_bytes: bytes
    platforms: list[PlatformImage]
    blobs: dict[str, Blob] = field(default_factory=dict)

    @property
    def is_index(self) -> bool:
        """Whether the top-level document is an index / manifest list."""
        return self.top.media_type in (OCI_INDEX, DOCKER_LIST)


def _write_blob(layout: Path, data: bytes, media_type: str) -> Blob:
    digest = _sha256(data)
    path = layout / "blobs" / "sha256" / digest.split(":", 1)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return Blob(digest, len(data), media_type, path)


def _layer(rng: random.Random, size: int, name: str) -> tuple[bytes, str]:
    """A gzip tar with one pseudo-random file of ``size`` bytes; (blob, diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mtime = 1_700_000_000
        tar.addfile(info, io.BytesIO(rng.randbytes(size)))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, compresslevel=1, mtime=0), _sha256(tar_bytes)


def build_sample_image(
    layout: Path,
    *,
    platforms: tuple[str, ...] = ("linux/amd64",),
    layer_sizes: tuple[int, ...] = (2000, 30_000),
    docker: bool = False,
    seed: int = 0,
    tag: str = "latest",
) -> SampleImage:
    """Write a sample image into the OCI layout ``layout`` (created) and describe it."""
    rng = random.Random(seed)
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    blobs: dict[str, Blob] = {}
    images: list[PlatformImage] = []
    for platform in platforms:
        os_name, arch, *variant = platform.split("/")
        layers: list[Blob] = []
        diff_ids: list[str] = []
        for number, size in enumerate(layer_sizes):
            data, diff_id = _layer(rng, size, f"{arch}/file-{seed}-{number}.bin")
            layers.append(
                _write_blob(layout, data, DOCKER_LAYER_GZIP if docker else OCI_LAYER_GZIP)
            )
            diff_ids.append(diff_id)
        config_doc = {
            "architecture": arch,
            "os": os_name,
            **({"variant": variant[0]} if variant else {}),
            "config": {"Cmd": ["/bin/true"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
        config = _write_blob(
            layout, json.dumps(config_doc).encode(), DOCKER_CONFIG if docker else OCI_CONFIG
        )
        manifest_doc = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": [layer.descriptor() for layer in layers],
        }
        manifest_bytes = json.dumps(manifest_doc, indent=2).encode()
        manifest = _write_blob(layout, manifest_bytes, str(manifest_doc["mediaType"]))
        for blob in (*layers, config, manifest):
            blobs[blob.digest] = blob
        images.append(PlatformImage(platform, manifest, manifest_bytes, config, layers))
    if len(images) == 1:
        top, top_bytes = images[0].manifest, images[0].manifest_bytes
    else:
        entries = []
        for image in images:
            os_name, arch, *variant = image.platform.split("/")
            platform_doc = {"architecture": arch, "os": os_name}
            if variant:
                platform_doc["variant"] = variant[0]
            entries.append({**image.manifest.descriptor(), "platform": platform_doc})
        index_doc = {
            "schemaVersion": 2,
            "mediaType": DOCKER_LIST if docker else OCI_INDEX,
            "manifests": entries,
        }
        top_bytes = json.dumps(index_doc, indent=2).encode()
        top = _write_blob(layout, top_bytes, str(index_doc["mediaType"]))
        blobs[top.digest] = top
    layout_index = {
        "schemaVersion": 2,
        "manifests": [
            {**top.descriptor(), "annotations": {"org.opencontainers.image.ref.name": tag}}
        ],
    }
    (layout / "index.json").write_text(json.dumps(layout_index))
    return SampleImage(layout, top, top_bytes, images, blobs)
