"""A layer 1,200 directories deep: optimize and convert finish and leave no scratch dir."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.cli.process import esgz_command
from tests.fixtures.cache import REPO_ROOT
from tests.fixtures.images import SampleImage
from tests.runtime.conftest import require_sandbox

DEPTH = 1200


def _put_blob(layout: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return f"sha256:{digest}"


def deep_image(base: SampleImage, layout: Path) -> str:
    """``base`` plus a layer holding ``d/d/…/d/file`` (DEPTH dirs); its reference."""
    shutil.copytree(base.layout, layout)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for level in range(1, DEPTH + 1):
            info = tarfile.TarInfo("/".join(["d"] * level))
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        info = tarfile.TarInfo("/".join(["d"] * DEPTH + ["file"]))
        info.size = 5
        tar.addfile(info, io.BytesIO(b"deep\n"))
    tar_bytes = raw.getvalue()
    blob = gzip.compress(tar_bytes, mtime=0)
    layer_digest = _put_blob(layout, blob)
    index = json.loads((layout / "index.json").read_text())
    (entry,) = [m for m in index["manifests"] if m["digest"] == base.manifest_digest]
    manifest = json.loads(base.blob_path(base.manifest_digest).read_bytes())
    config = json.loads(base.blob_path(str(base.config_digest)).read_bytes())
    config["rootfs"]["diff_ids"].append(f"sha256:{hashlib.sha256(tar_bytes).hexdigest()}")
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    manifest["config"] = {
        **manifest["config"],
        "digest": _put_blob(layout, config_bytes),
        "size": len(config_bytes),
    }
    manifest["layers"].append(
        {
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer_digest,
            "size": len(blob),
        }
    )
    manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()
    entry.update(digest=_put_blob(layout, manifest_bytes), size=len(manifest_bytes))
    (layout / "index.json").write_text(json.dumps(index))
    return f"local://{layout}:{base.tag}"


def esgz(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        esgz_command(*args), cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize("command", ["convert", "optimize"])
def test_deep_layer_leaves_a_clean_cache(
    busybox_image: SampleImage, tmp_path: Path, command: str
) -> None:
    if command == "optimize":
        require_sandbox()
    source = deep_image(busybox_image, tmp_path / "src")
    cache = tmp_path / "cache"
    extra = ["--args", '["cat /d/d/d/d/../../../../etc/passwd >/dev/null"]']
    result = esgz(
        command, "--oci", "--cache-dir", str(cache), *(extra if command == "optimize" else []),
        source, f"local://{tmp_path / 'out'}:x",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert list((cache / "tmp").iterdir()) == []
    # and the cache dir stays usable
    again = esgz(
        "convert", "--oci", "--cache-dir", str(cache), busybox_image.reference,
        f"local://{tmp_path / 'out2'}:x",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
