"""Source images of the image benchmark, as OCI layouts, and pushing them with skopeo.

* :func:`single_image` — ``tests.fixtures.images.big_image``: installed files from
  ``/usr/lib`` and ``/usr/share``, several gzip layers (default 256 MiB in layers of 48 MiB).
* :func:`batch_images` — ``count`` images in one layout (tags ``app0`` … ``app<count-1>``)
  that share base layers (the first ``base_layers`` layers of the single image, the same
  blobs) and each add two layers of their own: a slice of ``/usr/bin`` (a few MiB, different
  files per image) and a small config layer naming the image.

Layers are built by the test fixtures' deterministic writer (sorted entries, fixed mtime,
gzip) and cached under ``.test-cache/`` like the other fixture images.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.fixtures.images import (
    HOST_ARCH,
    OCI_LAYER_GZIP,
    SampleImage,
    SampleLayer,
    _cached,
    _config,
    _file,
    _fingerprint,
    _host_file,
    _image,
    _LayoutWriter,
    _tag_image,
    _with_parents,
    big_image,
)

MiB = 1 << 20


def single_image(total_mib: int = 256, layer_mib: int = 48) -> SampleImage:
    """The benchmark image (built on first use, then cached)."""
    return big_image(total_mib, layer_mib)


def _binaries(count: int, slice_mib: int) -> list[list[Path]]:
    """``count`` disjoint groups of regular files from ``/usr/bin``, each about ``slice_mib``."""
    groups: list[list[Path]] = [[]]
    budget = slice_mib * MiB
    current = 0
    for path in sorted(Path("/usr/bin").iterdir()):
        if path.is_symlink() or not path.is_file() or not os.access(path, os.R_OK):
            continue
        size = path.stat().st_size
        if size > budget:
            continue
        if current + size > budget and groups[-1]:
            if len(groups) == count:
                break
            groups.append([])
            current = 0
        groups[-1].append(path)
        current += size
    if len(groups) < count:
        raise RuntimeError(f"/usr/bin has too few files for {count} slices of {slice_mib} MiB")
    return groups


def batch_images(
    base: SampleImage, count: int = 10, base_layers: int = 2, slice_mib: int = 4
) -> list[SampleImage]:
    """``count`` images sharing ``base``'s first ``base_layers`` layers (cached)."""
    shared = list(base.layers[:base_layers])
    groups = _binaries(count, slice_mib)
    key = _fingerprint(
        [p for group in groups for p in group],
        f"batch-{count}-{slice_mib}",
        *(layer.digest for layer in shared),
    )

    def build(layout: Path) -> SampleImage:
        writer = _LayoutWriter(layout)
        for layer in shared:
            target = writer.blobs / layer.digest.split(":", 1)[1]
            if not target.exists():
                os.link(base.blob_path(layer.digest), target)
        images: list[SampleImage] = []
        for index, group in enumerate(groups):
            name = f"app{index}"
            binaries = writer.layer(
                _with_parents(_host_file(f"opt/{name}/{p.name}", p) for p in group),
                "gzip",
                OCI_LAYER_GZIP,
            )
            settings = writer.layer(
                _with_parents([_file(f"etc/{name}.conf", f"name={name}\n".encode())]),
                "gzip",
                OCI_LAYER_GZIP,
            )
            layers = [*shared, binaries, settings]
            run_config = {"Cmd": ["/bin/sh"], "Env": [f"APP={name}"]}
            image = _image(writer, name, layers, _config(layers, HOST_ARCH, run_config))
            _tag_image(writer, image, name)
            images.append(image)
        writer.finish()
        # The cache stores one SampleImage; the others are found again by tag below.
        return images[0]

    first = _cached(f"bench-batch-{count}", key, build)
    return list(_tagged(first.layout))


def _tagged(layout: Path) -> Iterator[SampleImage]:
    """The images of a batch layout, in tag order (``app0`` …), read from its index."""
    index = json.loads((layout / "index.json").read_text())
    for entry in index["manifests"]:
        digest = entry["digest"]
        manifest = json.loads((layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_text())
        layers = tuple(
            SampleLayer(
                digest=layer["digest"],
                diff_id="",
                media_type=layer["mediaType"],
                size=layer["size"],
                uncompressed_size=0,
                files=(),
            )
            for layer in manifest["layers"]
        )
        yield SampleImage(
            name=entry["annotations"]["org.opencontainers.image.ref.name"],
            layout=layout,
            tag=entry["annotations"]["org.opencontainers.image.ref.name"],
            manifest_digest=digest,
            media_type=entry["mediaType"],
            config_digest=manifest["config"]["digest"],
            layers=layers,
        )


def skopeo(args: Sequence[str]) -> bytes:
    """Run ``skopeo --insecure-policy <args>``; its stdout, RuntimeError with stderr on failure."""
    command = ["skopeo", "--insecure-policy", *args]
    result = subprocess.run(command, capture_output=True, check=False, timeout=600)
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip()
        raise RuntimeError(f"{' '.join(command)} failed: {message}")
    return result.stdout


def push_layout(image: SampleImage, destination: str) -> None:
    """``skopeo copy oci:<layout>:<tag> docker://<destination>`` to a plain-HTTP registry."""
    skopeo(
        [
            "copy",
            "--dest-tls-verify=false",
            "--dest-no-creds",
            f"oci:{image.layout}:{image.tag}",
            f"docker://{destination}",
        ]
    )


def inspect_raw(reference: str) -> bytes:
    """The manifest bytes of ``reference`` (``host/repo:tag``) as skopeo fetches them."""
    return skopeo(["inspect", "--raw", "--tls-verify=false", "--no-creds", f"docker://{reference}"])
