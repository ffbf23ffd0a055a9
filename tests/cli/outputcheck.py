"""Independent checks of a converted image, read with plain Python and the Go reader."""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import zstandard

from tests.fixtures.gotools import go_check

TOC_DIGEST = "containerd.io/snapshot/stargz/toc.digest"
UNCOMPRESSED_SIZE = "io.containers.estargz.uncompressed-size"
INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}


@dataclass
class OutputManifest:
    platform: str | None
    digest: str
    manifest: dict[str, Any]
    config: dict[str, Any]


def blob_path(layout: Path, digest: str) -> Path:
    algorithm, hex_digest = digest.split(":", 1)
    return layout / "blobs" / algorithm / hex_digest


def read_blob(layout: Path, digest: str) -> bytes:
    data = blob_path(layout, digest).read_bytes()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
    return data


def tagged(layout: Path, tag: str) -> dict[str, Any]:
    index = json.loads((layout / "index.json").read_text())
    entries = [
        entry
        for entry in index["manifests"]
        if entry.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag
    ]
    assert len(entries) == 1, index
    entry: dict[str, Any] = entries[0]
    return entry


def manifests_of(layout: Path, tag: str) -> tuple[dict[str, Any], list[OutputManifest]]:
    """The tagged document and every image manifest it leads to."""
    entry = tagged(layout, tag)
    document = json.loads(read_blob(layout, entry["digest"]))
    if entry["mediaType"] in INDEX_TYPES:
        items = [(item.get("platform"), item["digest"]) for item in document["manifests"]]
    else:
        items = [(None, entry["digest"])]
    result = []
    for platform, digest in items:
        manifest = json.loads(read_blob(layout, digest))
        config = json.loads(read_blob(layout, manifest["config"]["digest"]))
        name = None if platform is None else f"{platform['os']}/{platform['architecture']}"
        result.append(OutputManifest(name, digest, manifest, config))
    return document, result


@contextmanager
def uncompressed(path: Path, media_type: str) -> Iterator[IO[bytes]]:
    with path.open("rb") as raw:
        if media_type.endswith("zstd"):
            reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
            with reader:
                yield reader
        else:
            with gzip.GzipFile(fileobj=raw) as unzipped:
                yield unzipped


def layer_facts(path: Path, media_type: str) -> tuple[str, int, list[str]]:
    """(sha256 of the uncompressed tar, its size, the tar entry names)."""
    hasher = hashlib.sha256()
    size = 0
    with uncompressed(path, media_type) as stream:
        while chunk := stream.read(1 << 20):
            hasher.update(chunk)
            size += len(chunk)
    with uncompressed(path, media_type) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        names = [member.name for member in tar]
    return "sha256:" + hasher.hexdigest(), size, names


def check_converted(
    layout: Path,
    output: OutputManifest,
    source_files: list[tuple[str, ...]] | None = None,
) -> None:
    """Every layer: Go reader verifies it against its annotation; diff_ids and sizes match."""
    diff_ids = output.config["rootfs"]["diff_ids"]
    layers = output.manifest["layers"]
    assert len(diff_ids) == len(layers)
    for index, layer in enumerate(layers):
        path = blob_path(layout, layer["digest"])
        read_blob(layout, layer["digest"])
        zstd = layer["mediaType"].endswith("zstd")
        verdict = go_check(path, layer["annotations"][TOC_DIGEST], zstd=zstd)
        assert verdict.ok, verdict.errors
        diff_id, size, names = layer_facts(path, layer["mediaType"])
        assert diff_id == diff_ids[index]
        if not zstd:
            assert int(layer["annotations"][UNCOMPRESSED_SIZE]) == size
        if source_files is not None:
            cleaned = {name.removeprefix("./").rstrip("/") for name in names}
            missing = [f for f in source_files[index] if f.rstrip("/") not in cleaned]
            assert missing == []
