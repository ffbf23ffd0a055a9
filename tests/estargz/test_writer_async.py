"""convert_layer_file: runs off the event loop, writes atomically, cleans up."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import anyio
import pytest

from esgz.errors import FormatError
from esgz.estargz import ConvertOptions, convert_layer_file
from tests.estargz.writer_support import Spec, gzip_toc, make_tar, sha256

pytestmark = pytest.mark.anyio


async def test_converts_a_file_atomically(tmp_path: Path) -> None:
    src = tmp_path / "layer.tar.gz"
    src.write_bytes(gzip.compress(make_tar([Spec("a", data=b"hello")])))
    dst = tmp_path / "out" / "blob"
    dst.parent.mkdir()
    result = await convert_layer_file(src, dst, ConvertOptions(prioritized_files=("a",)))
    blob = dst.read_bytes()
    assert result.digest == sha256(blob)
    assert result.source_compression == "gzip"
    assert [e["name"] for e in gzip_toc(blob)["entries"]] == ["a", ".prefetch.landmark"]
    assert os.listdir(dst.parent) == ["blob"]


async def test_a_failed_conversion_leaves_no_output(tmp_path: Path) -> None:
    src = tmp_path / "bad.tar"
    src.write_bytes(make_tar([Spec("../evil", data=b"x")]))
    dst = tmp_path / "blob"
    with pytest.raises(FormatError, match=r"'\.\.'"):
        await convert_layer_file(src, dst)
    assert os.listdir(tmp_path) == ["bad.tar"]


async def test_cancellation_stops_the_work_and_removes_the_temporary_file(
    tmp_path: Path,
) -> None:
    src = tmp_path / "big.tar"
    chunk = os.urandom(1 << 20)
    src.write_bytes(make_tar([Spec(f"f{i}", data=chunk) for i in range(60)]))
    dst = tmp_path / "blob"
    with anyio.move_on_after(0.3) as scope:
        await convert_layer_file(src, dst, ConvertOptions(workers=1))
    assert scope.cancelled_caught
    assert sorted(os.listdir(tmp_path)) == ["big.tar"]


async def test_cancellation_before_a_worker_thread_is_free_returns_at_once(
    tmp_path: Path,
) -> None:
    # Every worker-thread token is taken, so the conversion is still waiting for a thread
    # when it is cancelled: the cancellation must not wait for a conversion that never ran.
    src = tmp_path / "layer.tar.gz"
    src.write_bytes(gzip.compress(make_tar([Spec("a", data=b"hello")])))
    dst = tmp_path / "blob"
    limiter = anyio.to_thread.current_default_thread_limiter()
    borrowers = [object() for _ in range(int(limiter.total_tokens))]
    for borrower in borrowers:
        await limiter.acquire_on_behalf_of(borrower)
    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(convert_layer_file, src, dst)
                await anyio.sleep(0.1)
                tg.cancel_scope.cancel()
    finally:
        for borrower in borrowers:
            limiter.release_on_behalf_of(borrower)
    assert os.listdir(tmp_path) == ["layer.tar.gz"]


@pytest.mark.parametrize("prioritized", [(), ("f3",)])
async def test_progress_reports_bytes_read_and_written(
    tmp_path: Path, prioritized: tuple[str, ...]
) -> None:
    src = tmp_path / "layer.tar.gz"
    chunk = os.urandom(256 << 10)
    src.write_bytes(gzip.compress(make_tar([Spec(f"f{i}", data=chunk) for i in range(8)])))
    dst = tmp_path / "blob"
    seen: list[tuple[int, int]] = []
    result = await convert_layer_file(
        src,
        dst,
        ConvertOptions(prioritized_files=prioritized, workers=2),
        progress=lambda read, written: seen.append((read, written)),
    )
    assert seen[-1] == (src.stat().st_size, result.size)
    reads = [read for read, _ in seen]
    writes = [written for _, written in seen]
    assert reads == sorted(reads)
    assert writes == sorted(writes)
    # with prioritized files, the whole input is read before anything is written
    if prioritized:
        assert all(read == reads[-1] for read, written in seen if written)
