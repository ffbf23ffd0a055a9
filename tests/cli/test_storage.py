"""Unusable directories and full, read-only disks: one line naming the path, exit 1."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from esgz import StorageError, convert
from tests.cli.process import esgz_command
from tests.fixtures.cache import REPO_ROOT
from tests.fixtures.images import SampleImage


def esgz(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        esgz_command(*args),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("esgz: error:")]


@pytest.mark.parametrize(
    ("cache_dir", "problem"),
    [
        ("/proc", "not writable (no files can be created in it)"),
        ("/etc/hostname", "not a directory"),
        ("/etc/hostname/sub", "/etc/hostname is not a directory"),
    ],
)
def test_unusable_cache_dir_says_what_is_wrong(
    busybox_image: SampleImage, tmp_path: Path, cache_dir: str, problem: str
) -> None:
    result = esgz(
        "convert", "--oci", "--cache-dir", cache_dir, busybox_image.reference,
        f"local://{tmp_path / 'out'}:x",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"esgz: error: cannot use cache directory {cache_dir}: {problem}"
    ]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: smaller than the python image."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


@pytest.mark.root
def test_full_cache_disk(python_image: SampleImage, tmp_path: Path, small_disk: Path) -> None:
    cache = small_disk / "cache"
    result = esgz(
        "convert", "--oci", "--cache-dir", str(cache), python_image.reference,
        f"local://{tmp_path / 'out'}:x",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    (line,) = error_lines(result)
    assert line.endswith(f"no space left on device: cannot write {cache}"), line
    assert "Traceback" not in result.stderr
    assert list((cache / "tmp").iterdir()) == []


@pytest.mark.root
def test_full_output_disk(python_image: SampleImage, small_disk: Path) -> None:
    out = small_disk / "out"
    result = esgz("convert", "--oci", "--no-cache", python_image.reference, f"local://{out}:x")
    assert result.returncode == 1, result.stderr
    (line,) = error_lines(result)
    assert line.endswith(f"no space left on device: cannot write {out}"), line


@pytest.mark.root
@pytest.mark.anyio
async def test_full_disk_through_the_python_api(
    python_image: SampleImage, small_disk: Path
) -> None:
    """Embedding applications get the same StorageError naming the path as the CLI."""
    out = small_disk / "out"
    with pytest.raises(StorageError) as caught:
        await convert(python_image.reference, f"local://{out}:x", oci=True, cache=False)
    assert caught.value.path == str(out)
    assert str(caught.value).endswith(f"no space left on device: cannot write {out}")


@pytest.mark.root
def test_read_only_disks(busybox_image: SampleImage, tmp_path: Path, small_disk: Path) -> None:
    (small_disk / "cache").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    result = esgz(
        "convert", "--oci", "--cache-dir", str(small_disk / "cache"), busybox_image.reference,
        f"local://{tmp_path / 'out'}:x",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert error_lines(result) == [
        f"esgz: error: cannot use cache directory {small_disk / 'cache'}: read-only file system"
    ]
    out = small_disk / "out"
    result = esgz("convert", "--oci", "--no-cache", busybox_image.reference, f"local://{out}:x")
    assert result.returncode == 1, result.stderr
    (line,) = error_lines(result)
    assert f"read-only file system: cannot write {out}" in line, line


def test_a_symlink_planted_in_the_cache_is_never_followed(
    busybox_image: SampleImage, tmp_path: Path
) -> None:
    """A blob path that is a symlink (to a file elsewhere) counts as absent: the blob is
    fetched again and stored as a file; the file pointed to is neither read nor touched."""
    cache = tmp_path / "cache"
    secret = tmp_path / "secret"
    secret.write_bytes(b"not a layer\n")
    os.utime(secret, (1_000_000, 1_000_000))
    layer = busybox_image.layers[0].digest
    planted = cache / "blobs" / "sha256" / layer.removeprefix("sha256:")
    planted.parent.mkdir(parents=True)
    planted.symlink_to(secret)
    out = tmp_path / "out"
    result = esgz(
        "convert", "--oci", "--cache-dir", str(cache), busybox_image.reference, f"local://{out}:x"
    )
    assert result.returncode == 0, result.stderr
    assert not planted.is_symlink()
    assert planted.read_bytes() == busybox_image.blob_path(layer).read_bytes()
    assert secret.read_bytes() == b"not a layer\n"
    assert secret.stat().st_mtime == 1_000_000
    verified = esgz("verify", f"local://{out}:x")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_file_size_limit(python_image: SampleImage, tmp_path: Path) -> None:
    """Python ignores SIGXFSZ, so ``ulimit -f`` shows as EFBIG: one line too."""
    result = subprocess.run(
        ["prlimit", "--fsize=1000000", *esgz_command(
            "convert", "--oci", "--cache-dir", str(tmp_path / "cache"), python_image.reference,
            f"local://{tmp_path / 'out'}:x",
        )],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    (line,) = error_lines(result)
    assert line.startswith(f"esgz: error: image {python_image.reference}, layer sha256:"), line
    assert line.endswith("file too large (a file-size limit, ulimit -f?) while writing"), line
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []
