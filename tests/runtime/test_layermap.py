"""Path → layer mapping, with whiteouts and opaque directories, as overlayfs serves files."""

from __future__ import annotations

from pathlib import Path

import pytest

from esgz.estargz.layerindex import LayerIndex
from esgz.runtime.layermap import cleaned_names, layer_of, prioritized_by_layer
from esgz.runtime.unpack import unpack_layer_sync
from esgz.stages.layerindex import index_layer_file
from tests.fixtures.images import SampleImage
from tests.runtime.conftest import layer_sources


def index(entries: set[str], whiteouts: set[str] = set(), opaque: set[str] = set()) -> LayerIndex:  # noqa: B006
    """A LayerIndex from plain sets."""
    return LayerIndex(frozenset(entries), frozenset(whiteouts), frozenset(opaque))


LAYERS = [
    index({"a", "a/x", "a/y", "b", "b/old", "c", "c/deep", "c/deep/f", "shared", "gone"}),
    index({"shared", "a/z"}, whiteouts={"gone", "b"}),
    index({"c", "c/new"}, opaque={"c"}),
]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a/x", 0),
        ("/a/x", 0),
        ("shared", 1),  # topmost wins
        ("a/z", 1),  # parent dir "a" has no entry in layer 1: fine
        ("gone", None),  # whiteout
        ("b/old", None),  # parent deleted
        ("c/deep/f", None),  # ancestor made opaque above
        ("c/new", 2),
        ("c", 2),
        ("created/at/runtime", None),
        ("", None),
        ("../escape", None),
    ],
)
def test_layer_of(path: str, expected: int | None) -> None:
    assert layer_of(path, LAYERS) == expected


def test_cleaned_names_drop_the_root_and_escapes_and_keep_first_order() -> None:
    paths = ["/a/x", "./b", "a/x", "/", "../up", "b/", "c//d"]
    assert cleaned_names(paths) == ["a/x", "b", "c/d"]


def test_prioritized_keeps_first_access_order_per_layer() -> None:
    paths = ["/shared", "a/x", "tmp/new", "c/new", "a/y", "/a/x", "shared", "gone"]
    assert prioritized_by_layer(paths, LAYERS) == [["a/x", "a/y"], ["shared"], ["c/new"]]


def test_sample_image_whiteouts_and_opaque_dir(busybox_image: SampleImage, tmp_path: Path) -> None:
    layers = [unpack_layer_sync(s, tmp_path / "cache").index for s in layer_sources(busybox_image)]
    assert layers[1].whiteouts == {"etc/motd"}
    assert layers[1].opaque_dirs == {"opt/replaced"}
    assert layer_of("etc/motd", layers) is None
    assert layer_of("opt/replaced/old1.txt", layers) is None
    assert layer_of("opt/replaced/new.txt", layers) == 1
    assert layer_of("bin/busybox", layers) == 0
    assert layer_of("data/hardlink.txt", layers) == 1
    # The index lists exactly the tar's entries (whiteout markers aside).
    for layer, sample in zip(layers, busybox_image.layers, strict=True):
        assert layer.entries == {
            f for f in sample.files if "/.wh." not in f and not f.startswith(".wh.")
        }


def test_index_without_unpacking_matches_the_unpacked_one(
    busybox_image: SampleImage, tmp_path: Path
) -> None:
    for source in layer_sources(busybox_image):
        scanned = index_layer_file(source.path)
        assert scanned == unpack_layer_sync(source, tmp_path / "cache").index
