"""The prepared path (compress in input order, assemble in the prioritized order) writes
exactly the bytes of the spooled reference path, for every backend and order (eStargz;
zstd:chunked with prioritized files keeps the spooled path)."""

from __future__ import annotations

import io
import tarfile
import threading
import zlib
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from esgz.errors import ConfigError, FormatError
from esgz.estargz.convert import PendingPreparation, convert_layer_file, finish_layer_file
from esgz.estargz.deflate import BACKENDS
from esgz.estargz.options import ConvertOptions, LayerResult
from esgz.estargz.writer import (
    ConversionCancelled,
    prepare_layer,
    write_layer,
    write_layer_spooled,
)
from tests.estargz.writer_support import Spec, make_tar

PAYLOAD = b"".join(bytes([i % 256]) * 700 + zlib.compress(bytes(i)) for i in range(900))


def _source() -> bytes:
    specs = [Spec("dir0/", tarfile.DIRTYPE, mode=0o755)]
    specs += [Spec(f"dir{i % 5}/file{i}", data=PAYLOAD[i * 991 :][: i * 613]) for i in range(60)]
    specs += [Spec(f"dir{i}/", tarfile.DIRTYPE, mode=0o755) for i in range(1, 5)]
    specs.append(Spec("big", data=PAYLOAD * 2))
    specs.append(Spec("dir2/empty"))
    specs.append(Spec("dir2/link", tarfile.SYMTYPE, linkname="../big"))
    specs.append(Spec("dir3/hard", tarfile.LNKTYPE, linkname="dir3/file13"))
    specs.append(Spec("dir1/file6", data=b"replaced"))  # duplicate: the last one wins
    specs.append(Spec("last", data=b"x" * 5))
    return make_tar(specs)


ORDERS: list[tuple[str, ...]] = [
    ("dir3/file13",),
    ("dir3/hard", "big", "dir1/file6", "missing/file"),
    ("last", "dir0/file0", "dir2/empty", "dir2/link"),
    tuple(f"dir{i % 5}/file{i}" for i in range(59, 0, -3)),
    ("big",),
]


def _spooled(source: bytes, options: ConvertOptions) -> tuple[bytes, LayerResult]:
    out = io.BytesIO()
    result = write_layer_spooled(io.BytesIO(source), out, options)
    return out.getvalue(), result


def _assembled(source: bytes, options: ConvertOptions) -> tuple[bytes, LayerResult]:
    out = io.BytesIO()
    result = write_layer(io.BytesIO(source), out, options)
    return out.getvalue(), result


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("fmt", ["estargz", "zstdchunked"])
def test_assembled_output_is_byte_identical_to_the_spooled_one(
    order: tuple[str, ...], fmt: str
) -> None:
    source = _source()
    for chunk_size in (4096, 65536, 1 << 22):
        options = ConvertOptions(
            format=fmt,  # type: ignore[arg-type]
            chunk_size=chunk_size,
            prioritized_files=order,
            workers=2,
        )
        assert _assembled(source, options) == _spooled(source, options)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_deflate_backend_assembles_identical_bytes(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ESGZ_DEFLATE_BACKEND", backend)
    source = _source()
    for order in ORDERS:
        options = ConvertOptions(chunk_size=300_000, prioritized_files=order, workers=3)
        assert _assembled(source, options) == _spooled(source, options)


def test_a_prepared_layer_finished_without_prioritized_files_is_the_streaming_output() -> None:
    source = _source()
    options = ConvertOptions(chunk_size=65536)
    expected = io.BytesIO()
    expected_result = write_layer(io.BytesIO(source), expected, options)
    prepared = prepare_layer(io.BytesIO(source), options)
    try:
        out = io.BytesIO()
        assert prepared.finish(out, ()) == expected_result
        assert out.getvalue() == expected.getvalue()
        with pytest.raises(RuntimeError):
            prepared.finish(io.BytesIO(), ())
    finally:
        prepared.close()


def test_strict_prioritized_and_cancellation_still_apply() -> None:
    source = _source()
    strict = ConvertOptions(prioritized_files=("missing",), strict_prioritized=True)
    with pytest.raises(FormatError, match="missing"):
        write_layer(io.BytesIO(source), io.BytesIO(), strict)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(ConversionCancelled):
        prepare_layer(io.BytesIO(source), ConvertOptions(), cancel)
    with pytest.raises(ConfigError):
        prepare_layer(io.BytesIO(source), ConvertOptions(format="zstdchunked"))


@pytest.mark.anyio
async def test_a_pending_preparation_finishes_into_the_same_file_as_a_conversion(
    tmp_path: Path,
) -> None:
    source = tmp_path / "layer.tar"
    source.write_bytes(_source())
    order = ORDERS[1]
    options = ConvertOptions(chunk_size=65536, workers=2)
    expected = await convert_layer_file(
        source, tmp_path / "expected", replace(options, prioritized_files=order)
    )
    preparation = PendingPreparation(source, options)
    async with anyio.create_task_group() as tg:
        tg.start_soon(preparation.run)
        prepared = await preparation.take()
    assert prepared is not None
    assert await preparation.take() is None  # taken once
    written: list[int] = []
    try:
        result = await finish_layer_file(
            prepared, tmp_path / "out", order, progress=lambda _r, w: written.append(w)
        )
    finally:
        prepared.close()
    assert result == expected
    assert (tmp_path / "out").read_bytes() == (tmp_path / "expected").read_bytes()
    assert written[-1] == result.size


@pytest.mark.anyio
async def test_a_failed_preparation_leaves_nothing_to_take(tmp_path: Path) -> None:
    source = tmp_path / "bad.tar"
    source.write_bytes(b"not a tar" * 100)
    preparation = PendingPreparation(source, ConvertOptions())
    await preparation.run()
    assert await preparation.take() is None
