"""Property: random trees built by the Go reference are read back exactly by our reader."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esgz.estargz.reader import open_layer
from tests.fixtures.gotools import go_build, go_tool
from tests.interop.sourcetar import assert_reader_matches_tar, write_tar
from tests.interop.trees import CHUNK, Tree, examples, trees


def test_go_tools_available() -> None:
    """Skips (with the reason) here rather than inside hypothesis when Go is missing."""
    assert go_tool("builder").is_file()


@settings(max_examples=examples(12), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees(), zstd=st.booleans())
def test_go_built_random_trees_read_back(tree: Tree, zstd: bool) -> None:
    go_tool("builder")
    with tempfile.TemporaryDirectory() as tmp:
        source = write_tar(Path(tmp) / "in.tar", tree.items)
        blob = Path(tmp) / "blob"
        built = go_build(
            source, blob, zstd=zstd, chunk_size=CHUNK, prioritized=tree.prioritized or None
        )
        with open_layer(blob) as layer:
            layer.verify(built.toc_digest, check_data=True)
            assert layer.uncompressed_digest()[0] == built.diff_id
            assert_reader_matches_tar(layer, source)
            landmark = layer.prefetch_landmark()
            assert landmark is not None
            if tree.prioritized:
                assert landmark.name == ".prefetch.landmark"
                found = [p for p in tree.prioritized if p not in built.missed]
                assert set(found) <= set(layer.prioritized_names())
            else:
                assert landmark.name == ".no.prefetch.landmark"
