"""Source images of the image benchmark, as OCI layouts, and pushing them with skopeo.

* :func:`single_image` — ``tests.fixtures.images.big_image``: installed files from
  ``/usr/lib`` and ``/usr/share``, several gzip layers (default 256 MiB in layers of 48 MiB).
* :func:`golang_image` — a golang-like image for ``optimize``: four gzip layers (busybox
  with the C library, Debian's Go toolchain ``/usr/lib/go-1.19`` split into its packages
  and its tools, a small settings layer); the workload is ``go version``.
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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from tests.fixtures.images import (
    HOST_ARCH,
    OCI_LAYER_GZIP,
    PATH_ENV,
    SampleImage,
    SampleLayer,
    _base_entries,
    _cached,
    _config,
    _Entry,
    _file,
    _fingerprint,
    _host_file,
    _image,
    _LayoutWriter,
    _symlink,
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


GO_ROOT = Path("/usr/lib/go-1.19")
_LIBC = (
    Path("/lib/x86_64-linux-gnu/libc.so.6"),
    Path("/lib64/ld-linux-x86-64.so.2"),
)


def _tree_entries(root: Path, select: Callable[[Path], bool]) -> list[_Entry]:
    """Files and symlinks under ``root`` (sorted) for which ``select`` holds."""
    entries: list[_Entry] = []
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files) + [d for d in dirs if (Path(directory) / d).is_symlink()]:
            path = Path(directory) / name
            if not select(path):
                continue
            inside = str(path).lstrip("/")
            if path.is_symlink():
                entries.append(_symlink(inside, os.readlink(path)))
            elif path.is_file() and os.access(path, os.R_OK):
                entries.append(_host_file(inside, path))
    return entries


def golang_image() -> SampleImage:
    """A golang-like image (≈ 330 MiB uncompressed in 4 gzip layers), workload ``go version``.

    Needs Debian's ``golang-1.19-go`` and ``busybox-static``.
    """
    if not (GO_ROOT / "bin" / "go").is_file():
        raise RuntimeError(f"{GO_ROOT}/bin/go is missing (apt-get install golang-1.19-go)")

    def in_pkg(path: Path) -> bool:
        return path.is_relative_to(GO_ROOT / "pkg") and not path.is_relative_to(
            GO_ROOT / "pkg" / "tool"
        )

    groups = [
        _tree_entries(GO_ROOT, in_pkg),
        _tree_entries(GO_ROOT, lambda path: not in_pkg(path)),
    ]
    key = _fingerprint([*_LIBC, *(e.source for g in groups for e in g if e.source)], "golang-v1")

    def build(layout: Path) -> SampleImage:
        writer = _LayoutWriter(layout)
        base = _base_entries() + [_host_file(str(p).lstrip("/"), p) for p in _LIBC]
        layers = [
            writer.layer(_with_parents(base), "gzip", OCI_LAYER_GZIP),
            writer.layer(_with_parents(groups[0]), "gzip", OCI_LAYER_GZIP),
            writer.layer(_with_parents(groups[1]), "gzip", OCI_LAYER_GZIP),
            writer.layer(
                _with_parents([_file("etc/golang.conf", b"GOTOOLCHAIN=local\n")]),
                "gzip",
                OCI_LAYER_GZIP,
            ),
        ]
        run_config = {
            "Env": [PATH_ENV.replace("PATH=", f"PATH={GO_ROOT}/bin:")],
            "Cmd": [f"/{GO_ROOT.relative_to('/')}/bin/go", "version"],
            "WorkingDir": "/",
        }
        image = _image(writer, "golang", layers, _config(layers, HOST_ARCH, run_config))
        _tag_image(writer, image)
        writer.finish()
        return image

    return _cached("bench-golang", key, build)
