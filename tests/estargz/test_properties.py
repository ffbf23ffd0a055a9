"""Properties of writer + reader on random trees (every entry type, xattrs, hardlinks,
empty and multi-chunk files, unicode names, duplicates, prioritized lists).

* esgz writer → esgz reader: same entries, metadata and bytes as the source tar; the
  result's digests and sizes are what the blob really has; prioritized entries come
  first with their parents; the blob is reusable under its own TOC digest.
* esgz writer → Go reader (fewer examples): the Go checker accepts the blob and agrees with
  the source tar, and the TOC equals the Go builder's for the same input, offsets aside.

``ESGZ_PROPERTY_SCALE=N`` multiplies the example counts for longer local runs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esgz.estargz.ordering import clean_name
from esgz.estargz.reader import LayerReader, is_reusable_layer, open_layer
from tests.fixtures.gotools import go_build, go_check, go_tool
from tests.interop.sourcetar import assert_reader_matches_tar, write_tar
from tests.interop.trees import CHUNK, Tree, examples, trees
from tests.interop.writer import toc_without_offsets, write_with_esgz

formats = st.sampled_from(["estargz", "zstdchunked"])


def _ancestors(name: str) -> list[str]:
    parts = name.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _check_prioritized(layer: LayerReader, tree: Tree, missing: tuple[str, ...]) -> None:
    landmark = layer.prefetch_landmark()
    assert landmark is not None
    if not tree.prioritized:
        assert landmark.name == ".no.prefetch.landmark"
        assert layer.entries()[0].name == ".no.prefetch.landmark"
        return
    assert landmark.name == ".prefetch.landmark"
    before = layer.prioritized_names()
    explicit = {e.name for e in layer.entries()}
    for path in tree.prioritized:
        name = clean_name(path)
        if path in missing:
            continue
        assert name in before, name
        for parent in _ancestors(name):
            if parent in explicit:
                assert before.index(parent) < before.index(name), (parent, name)
    assert "does/not/exist" not in before
    if "does/not/exist" in tree.prioritized:
        assert "does/not/exist" in missing


@settings(
    max_examples=examples(40),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(tree=trees(), fmt=formats, workers=st.sampled_from([1, 2]))
def test_writer_round_trip(tree: Tree, fmt: str, workers: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source = write_tar(Path(tmp) / "in.tar", tree.items)
        blob = Path(tmp) / "blob"
        result = write_with_esgz(
            source,
            blob,
            format=fmt,
            chunk_size=CHUNK,
            compression_level=1,
            prioritized_files=tuple(tree.prioritized),
            workers=workers,
        )
        with open_layer(blob) as layer:
            assert layer.format == fmt
            layer.verify(result.toc_digest, check_data=True)
            assert layer.uncompressed_digest() == (result.diff_id, result.uncompressed_size)
            assert_reader_matches_tar(layer, source)
            _check_prioritized(layer, tree, result.missing_prioritized)
        assert is_reusable_layer(blob, result.toc_digest)


def test_go_tools_available() -> None:
    """Skips (with the reason) here rather than inside hypothesis when Go is missing."""
    assert go_tool("checker").is_file()


@settings(
    max_examples=examples(10),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(tree=trees(), fmt=formats)
def test_writer_blobs_pass_go_and_match_go_toc(tree: Tree, fmt: str) -> None:
    go_tool("checker")
    zstd = fmt == "zstdchunked"
    with tempfile.TemporaryDirectory() as tmp:
        source = write_tar(Path(tmp) / "in.tar", tree.items)
        ours = Path(tmp) / "ours"
        result = write_with_esgz(
            source, ours, format=fmt, chunk_size=CHUNK, prioritized_files=tuple(tree.prioritized)
        )
        go = go_check(ours, result.toc_digest, zstd=zstd, source_tar=source)
        assert go.ok, go.errors
        assert go.report["diff_id"] == result.diff_id
        theirs = Path(tmp) / "theirs"
        built = go_build(
            source,
            theirs,
            zstd=zstd,
            chunk_size=CHUNK,
            prioritized=tree.prioritized or None,
            gomaxprocs=1,
        )
        assert tuple(built.missed) == result.missing_prioritized
        assert toc_without_offsets(ours) == toc_without_offsets(theirs)
