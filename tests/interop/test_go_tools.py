"""The Go reference tools themselves: the builder's blobs pass the checker, bad ones fail."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from tests.fixtures.gotools import go_build, go_check


def _write_tar(path: Path) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        directory = tarfile.TarInfo("dir")
        directory.type = tarfile.DIRTYPE
        directory.mode = 0o755
        tar.addfile(directory)
        for name, data in (("dir/big.bin", bytes(range(256)) * 300), ("a.txt", b"hello\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("zstd", [False, True], ids=["gzip", "zstd"])
def test_go_builder_blob_passes_go_checker(tmp_path: Path, zstd: bool) -> None:
    source = tmp_path / "in.tar"
    _write_tar(source)
    blob = tmp_path / "out.blob"
    built = go_build(source, blob, zstd=zstd, chunk_size=10_000, prioritized=["dir/big.bin"])
    assert blob.stat().st_size == built.size
    checked = go_check(blob, built.toc_digest, zstd=zstd, source_tar=source)
    assert checked.ok, checked.errors
    assert checked.report["diff_id"] == built.diff_id
    assert checked.report["landmark"] == ".prefetch.landmark"
    assert checked.report["prioritized"] == ["dir", "dir/big.bin"]
    assert checked.report["data_entries"] > 3  # dir/big.bin is split into chunks


def test_go_checker_rejects_wrong_digest_and_corruption(tmp_path: Path) -> None:
    source = tmp_path / "in.tar"
    _write_tar(source)
    blob = tmp_path / "out.blob"
    built = go_build(source, blob, chunk_size=10_000)
    wrong = "sha256:" + "0" * 64
    assert not go_check(blob, wrong).ok

    corrupt = tmp_path / "corrupt.blob"
    data = bytearray(blob.read_bytes())
    data[200] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    result = go_check(corrupt, built.toc_digest)
    assert not result.ok
    assert result.errors

    altered = tmp_path / "altered.tar"
    with tarfile.open(altered, "w") as tar:
        info = tarfile.TarInfo("a.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bye"))
    mismatch = go_check(blob, built.toc_digest, source_tar=altered)
    assert not mismatch.ok
    assert any("a.txt" in error for error in mismatch.errors)
