"""FORMAT.md §15 worked example through the Go builder and our reader (and the Go checker)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from esgz.estargz.reader import LayerReader, open_layer
from tests.fixtures.gotools import go_build, go_check
from tests.interop.spec_example import ORDER, PRIORITIZED, example_toc_json, write_example_tar


def _first_offset(layer: LayerReader, name: str) -> int:
    entry = layer.lookup(name)
    assert entry is not None
    return entry.chunks[0].offset


@pytest.mark.parametrize("zstd", [False, True], ids=["gzip", "zstd"])
def test_spec_example_go_builder(tmp_path: Path, zstd: bool) -> None:
    source = write_example_tar(tmp_path / "in.tar")
    blob = tmp_path / "blob"
    built = go_build(
        source, blob, zstd=zstd, level=None if zstd else 9, prioritized=PRIORITIZED, gomaxprocs=1
    )
    with open_layer(blob) as layer:
        layer.verify(built.toc_digest, check_data=True)
        assert [e.name for e in layer.entries()] == ORDER
        assert layer.prioritized_names() == ["dir", "dir/b.bin"]
        offsets = [_first_offset(layer, n) for n in ("dir/b.bin", ".prefetch.landmark", "a.txt")]
        expected_json = example_toc_json(*offsets)
        # The TOC JSON is byte-for-byte the §15 text (modulo the offsets).
        assert layer.toc_digest == "sha256:" + hashlib.sha256(expected_json).hexdigest()
        assert layer.read_bytes("dir/b.bin") == b"0123456789AB"
        assert layer.read_bytes("dir/c.txt") == b""
        diff_id, size = layer.uncompressed_digest()
    assert diff_id == built.diff_id
    if not zstd:
        # Go 0.12.0 at GOMAXPROCS=1, level 9 (FORMAT.md §15 "Variants"): members of
        # 118/99/98/106 bytes, a 499-byte TOC member, the 51-byte footer.
        assert offsets == [118, 217, 315]
        assert layer.toc_offset == 421
        assert blob.stat().st_size == 421 + 499 + 51
        assert size == 7168
    else:
        assert size == 4096  # no TOC entry, no end-of-archive blocks
    assert go_check(blob, built.toc_digest, zstd=zstd, source_tar=source).ok
