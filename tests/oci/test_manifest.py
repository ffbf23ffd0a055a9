from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from esgz.errors import ImageError
from esgz.oci import mediatypes as mt
from esgz.oci.manifest import (
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    digest_of,
    parse_index,
    parse_manifest,
    parse_manifest_or_index,
    rewrite_config,
    to_bytes,
)
from esgz.oci.platform import Platform
from tests.fixtures.images import SampleImage
from tests.oci.gocheck import ask


def _digest(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, indent=3).encode()


MANIFEST: dict[str, Any] = {
    "schemaVersion": 2,
    "mediaType": mt.OCI_MANIFEST,
    "config": {"mediaType": mt.OCI_CONFIG, "digest": _digest("config"), "size": 1234},
    "layers": [
        {
            "mediaType": mt.OCI_LAYER_GZIP,
            "digest": _digest("layer0"),
            "size": 10,
            "annotations": {"z.last": "<&>", "a.first": "é\u2028"},
        },
        {
            "mediaType": mt.OCI_LAYER_NONDISTRIBUTABLE_GZIP,
            "digest": _digest("layer1"),
            "size": 20,
            "urls": ["https://example.com/layer1"],
        },
    ],
    "subject": {"mediaType": mt.OCI_MANIFEST, "digest": _digest("subject"), "size": 7},
    "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
}

INDEX: dict[str, Any] = {
    "schemaVersion": 2,
    "mediaType": mt.OCI_INDEX,
    "manifests": [
        {
            "mediaType": mt.OCI_MANIFEST,
            "digest": _digest("amd64"),
            "size": 500,
            "platform": {"architecture": "amd64", "os": "linux"},
        },
        {
            "mediaType": mt.OCI_MANIFEST,
            "digest": _digest("arm64"),
            "size": 501,
            "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
            "annotations": {"k": "v"},
        },
        {
            "mediaType": mt.OCI_MANIFEST,
            "digest": _digest("windows"),
            "size": 502,
            "platform": {
                "architecture": "amd64",
                "os": "windows",
                "os.version": "10.0.17763.1",
                "os.features": ["win32k"],
            },
        },
    ],
    "annotations": {"b": "2", "a": "1"},
}


@pytest.mark.parametrize(("op", "document"), [("manifest", MANIFEST), ("index", INDEX)])
def test_serialization_matches_go(op: str, document: dict[str, Any]) -> None:
    """Known fields come out byte-identical to Go's json.Marshal of the ocispec structs."""
    raw = _dumps(document)
    (expected,) = ask([{"op": op, "config": raw.decode()}])
    model = parse_manifest(raw) if op == "manifest" else parse_index(raw)
    assert to_bytes(model) == expected["json"].encode()
    assert digest_of(model) == "sha256:" + hashlib.sha256(expected["json"].encode()).hexdigest()


def test_manifest_fields() -> None:
    manifest = parse_manifest(_dumps(MANIFEST))
    assert manifest.media_type == mt.OCI_MANIFEST
    assert not manifest.is_docker
    assert manifest.config.digest == _digest("config")
    assert [layer.size for layer in manifest.layers] == [10, 20]
    assert manifest.layers[0].annotations["z.last"] == "<&>"
    assert manifest.layers[1].urls == ("https://example.com/layer1",)
    assert manifest.subject is not None
    assert manifest.subject.size == 7


def test_index_fields() -> None:
    index = parse_index(_dumps(INDEX))
    assert [d.platform for d in index.manifests] == [
        Platform("linux", "amd64"),
        Platform("linux", "arm64", "v8"),
        Platform("windows", "amd64", os_version="10.0.17763.1", os_features=("win32k",)),
    ]


def test_unknown_fields_survive_round_trip_and_edits() -> None:
    document = json.loads(json.dumps(MANIFEST))
    document["x-top"] = {"nested": [1, 2.5, None]}
    document["config"]["x-config"] = True
    document["layers"][0]["x-layer"] = "kept"
    document["layers"][0]["data"] = "aGVsbG8="
    manifest = parse_manifest(_dumps(document))
    again = json.loads(to_bytes(manifest))
    assert again == document
    # Edit a layer the way a converter does: unknown fields stay, stale inline data goes.
    new_layer = dataclasses.replace(
        manifest.layers[0],
        digest=_digest("converted"),
        size=99,
        annotations={
            **manifest.layers[0].annotations,
            "containerd.io/snapshot/stargz/toc.digest": _digest("toc"),
        },
    )
    edited = dataclasses.replace(manifest, layers=(new_layer, *manifest.layers[1:]))
    out = json.loads(to_bytes(edited))
    assert out["x-top"] == document["x-top"]
    assert out["config"]["x-config"] is True
    assert out["layers"][0]["x-layer"] == "kept"
    assert "data" not in out["layers"][0]
    assert out["layers"][0]["digest"] == _digest("converted")
    assert out["layers"][0]["annotations"]["containerd.io/snapshot/stargz/toc.digest"]


def test_index_platform_unknown_fields_survive() -> None:
    document = json.loads(json.dumps(INDEX))
    document["manifests"][0]["platform"]["features"] = ["sse4"]
    index = parse_index(_dumps(document))
    assert json.loads(to_bytes(index)) == document


def test_serialization_is_compact_with_go_escaping_and_documented_order() -> None:
    text = to_bytes(parse_manifest(_dumps(MANIFEST))).decode()
    assert " " not in text.replace("\u00e9", "")
    assert "\\u003c\\u0026\\u003e" in text
    assert "\\u2028" in text
    assert "é" in text
    keys = list(json.loads(text))
    assert keys == ["schemaVersion", "mediaType", "config", "layers", "subject", "annotations"]
    layer0 = json.loads(text)["layers"][0]
    assert list(layer0) == ["mediaType", "digest", "size", "annotations"]
    assert list(layer0["annotations"]) == ["a.first", "z.last"]


def test_manifest_without_media_type_keeps_it_absent() -> None:
    document = {key: value for key, value in MANIFEST.items() if key != "mediaType"}
    manifest = parse_manifest(_dumps(document))
    assert manifest.media_type == ""
    assert "mediaType" not in json.loads(to_bytes(manifest))


def test_docker_manifest_and_list() -> None:
    document = {
        "schemaVersion": 2,
        "mediaType": mt.DOCKER_MANIFEST,
        "config": {"mediaType": mt.DOCKER_CONFIG, "digest": _digest("c"), "size": 1},
        "layers": [{"mediaType": mt.DOCKER_LAYER_GZIP, "digest": _digest("l"), "size": 2}],
    }
    manifest = parse_manifest_or_index(_dumps(document))
    assert isinstance(manifest, Manifest)
    assert manifest.is_docker
    listing = {
        "schemaVersion": 2,
        "mediaType": mt.DOCKER_MANIFEST_LIST,
        "manifests": [
            {
                "mediaType": mt.DOCKER_MANIFEST,
                "digest": _digest("m"),
                "size": 3,
                "platform": {"architecture": "amd64", "os": "linux"},
            }
        ],
    }
    index = parse_manifest_or_index(_dumps(listing))
    assert isinstance(index, Index)
    assert index.is_docker


def test_parse_either_kind_by_hint_or_shape() -> None:
    no_type_index = {key: value for key, value in INDEX.items() if key != "mediaType"}
    no_type_manifest = {key: value for key, value in MANIFEST.items() if key != "mediaType"}
    assert isinstance(parse_manifest_or_index(_dumps(no_type_index)), Index)
    assert isinstance(parse_manifest_or_index(_dumps(no_type_manifest)), Manifest)
    assert isinstance(parse_manifest_or_index(_dumps(no_type_index), mt.OCI_INDEX), Index)
    assert isinstance(
        parse_manifest_or_index(_dumps(no_type_manifest), "application/json"), Manifest
    )


@pytest.mark.parametrize(
    ("data", "media_type", "problem"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"\xff\xfe", None, "not valid JSON"),
        (b"[1, 2]", None, "must be a JSON object"),
        (b'{"schemaVersion": 1, "name": "x", "fsLayers": []}', None, "schema 1"),
        (b'{"schemaVersion": 2}', mt.DOCKER_SCHEMA1_SIGNED_MANIFEST, "schema 1"),
        (b'{"schemaVersion": 3, "manifests": []}', None, "schemaVersion 3"),
        (b'{"manifests": []}', None, "schemaVersion None"),
        (b'{"schemaVersion": 2, "mediaType": "text/plain"}', None, "unsupported"),
        (b'{"schemaVersion": 2}', None, "neither"),
    ],
)
def test_parse_errors(data: bytes, media_type: str | None, problem: str) -> None:
    with pytest.raises(ImageError, match=problem):
        parse_manifest_or_index(data, media_type)


def _broken(change: dict[str, Any]) -> bytes:
    document = json.loads(json.dumps(MANIFEST))
    for key, value in change.items():
        target = document
        *path, last = key.split(".")
        for part in path:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is None:
            del target[last]
        else:
            target[last] = value
    return _dumps(document)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"config": None}, "no 'config'"),
        ({"config.digest": "sha256:abc"}, "64 hex"),
        ({"config.size": -1}, "valid 'size'"),
        ({"config.size": "12"}, "valid 'size'"),
        ({"layers.0.mediaType": None}, "no 'mediaType'"),
        ({"layers": {"a": 1}}, "must be a list"),
        ({"layers.1.urls": "https://x"}, "urls"),
        ({"layers.0.annotations": {"a": 1}}, "annotations"),
        ({"manifests": []}, "looks like an index"),
        ({"mediaType": mt.OCI_INDEX}, "unsupported media type"),
    ],
)
def test_manifest_field_errors(change: dict[str, Any], problem: str) -> None:
    with pytest.raises(ImageError, match=problem):
        parse_manifest(_broken(change))


def test_fixture_manifest_round_trips_byte_for_byte(busybox_image: SampleImage) -> None:
    raw = busybox_image.blob(busybox_image.manifest_digest)
    manifest = parse_manifest(raw)
    assert to_bytes(manifest) == raw
    assert [layer.digest for layer in manifest.layers] == [
        layer.digest for layer in busybox_image.layers
    ]


@pytest.fixture(scope="module")
def skopeo_converted(busybox_image: SampleImage, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The busybox image converted by skopeo (Go) to a Docker schema 2 manifest."""
    if shutil.which("skopeo") is None:
        pytest.skip("needs skopeo (apt-get install skopeo)")
    target = tmp_path_factory.mktemp("skopeo") / "v2s2"
    subprocess.run(
        ["skopeo", "copy", "-q", "--format", "v2s2", f"oci:{busybox_image.layout}:latest",
         f"dir:{target}"],
        check=True,
    )  # fmt: skip
    return target


def test_go_written_docker_manifest_round_trips(skopeo_converted: Path) -> None:
    raw = (skopeo_converted / "manifest.json").read_bytes()
    manifest = parse_manifest(raw)
    assert manifest.media_type == mt.DOCKER_MANIFEST
    assert manifest.config.media_type == mt.DOCKER_CONFIG
    assert {layer.media_type for layer in manifest.layers} == {mt.DOCKER_LAYER_GZIP}
    # Docker's own structs put "size" before "digest"; esgz writes the order containerd's
    # converter writes (the ocispec structs), so only the content is the same.
    out = to_bytes(manifest)
    assert json.loads(out) == json.loads(raw)
    assert list(json.loads(out)["layers"][0]) == ["mediaType", "digest", "size"]
    (expected,) = ask([{"op": "manifest", "config": raw.decode()}])
    assert out == expected["json"].encode()


# --- image configs ------------------------------------------------------------------------


def test_image_config_accessors(busybox_image: SampleImage) -> None:
    config = ImageConfig.parse(busybox_image.blob(busybox_image.config_digest or ""))
    assert config.diff_ids == [layer.diff_id for layer in busybox_image.layers]
    assert str(config.platform) == busybox_image.platform
    assert config.entrypoint == ["/bin/sh", "-c"]
    assert config.cmd is not None
    assert config.working_dir == "/data"
    assert "GREETING=hello" in config.env
    assert config.user == ""


def test_image_config_errors() -> None:
    with pytest.raises(ImageError, match="rootfs"):
        ImageConfig.parse(b'{"architecture": "amd64"}')
    with pytest.raises(ImageError, match="not valid JSON"):
        ImageConfig.parse(b"{")
    bad_cmd = ImageConfig.parse(
        b'{"rootfs": {"type": "layers", "diff_ids": []}, "config": {"Cmd": "ls"}}'
    )
    with pytest.raises(ImageError, match="Cmd"):
        _ = bad_cmd.cmd


OLD = [_digest(f"old{i}") for i in range(3)]
NEW = [_digest(f"new{i}") for i in range(3)]

CONFIGS = {
    "docker-with-dummy-image": {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Image": "sha256:dummy",
            "Cmd": ["/bin/sh", "-c", "echo <hi> && true"],
            "Env": ["A=1"],
            "Labels": {"z": "1", "a": "2"},
        },
        "container_config": {"Image": "sha256:dummy", "Hostname": "x", "Cmd": None},
        "rootfs": {"type": "layers", "diff_ids": [OLD[0], OLD[1], OLD[0]]},
        "history": [
            {"created": "2024-01-01T00:00:00Z", "created_by": "a\u2028b", "empty_layer": True}
        ],
        "created": "2024-01-01T00:00:00.123456789Z",
        "unknown_number": 1.50,
        "unknown_unicode": "\u00e9\\u00e9\\/",
    },
    "oci-minimal": {
        "os": "linux",
        "architecture": "arm64",
        "variant": "v8",
        "rootfs": {"type": "layers", "diff_ids": [OLD[2]], "extra": 1},
        "config": None,
    },
    "no-change": {"rootfs": {"type": "layers", "diff_ids": [NEW[0]]}, "config": {"Image": "x"}},
    "not-layers": {"rootfs": {"type": "other", "diff_ids": [OLD[0]]}},
}
DIFF_ID_MAP = {OLD[0]: NEW[0], OLD[1]: NEW[1], OLD[2]: NEW[2], NEW[0]: NEW[0]}


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("indent", [None, 2])
def test_rewrite_config_matches_containerd(name: str, indent: int | None) -> None:
    text = json.dumps(CONFIGS[name], indent=indent, ensure_ascii=False)
    # Keep raw number and escape spellings that Python's json would normalise.
    text = text.replace("1.5,", "1.50,").replace('"é\\\\u00e9\\\\/"', '"é\\u00e9\\/"')
    (expected,) = ask([{"op": "rewrite", "config": text, "map": DIFF_ID_MAP}])
    result = rewrite_config(text.encode(), DIFF_ID_MAP)
    assert result == expected["config"].encode()
    if not expected["modified"]:
        assert result == text.encode()


def test_rewrite_config_replaces_by_value_and_drops_image() -> None:
    raw = json.dumps(CONFIGS["docker-with-dummy-image"]).encode()
    rewritten = json.loads(rewrite_config(raw, DIFF_ID_MAP))
    assert rewritten["rootfs"] == {"type": "layers", "diff_ids": [NEW[0], NEW[1], NEW[0]]}
    assert "Image" not in rewritten["config"]
    assert "Image" not in rewritten["container_config"]
    assert rewritten["config"]["Cmd"] == CONFIGS["docker-with-dummy-image"]["config"]["Cmd"]
    assert list(rewritten) == sorted(rewritten)


def test_rewrite_config_rejects_non_objects() -> None:
    with pytest.raises(ImageError):
        rewrite_config(b"[1]", DIFF_ID_MAP)
    with pytest.raises(ImageError):
        rewrite_config(b'{"rootfs": ', DIFF_ID_MAP)


def test_descriptor_round_trip_alone() -> None:
    obj = {"mediaType": mt.OCI_LAYER, "digest": _digest("x"), "size": 0, "artifactType": "a/b"}
    descriptor = Descriptor.from_json(obj)
    assert descriptor.artifact_type == "a/b"
    assert json.loads(to_bytes(descriptor)) == obj


@pytest.mark.parametrize("parse", [parse_manifest_or_index, ImageConfig.parse])
def test_deeply_nested_json_is_an_image_error(parse: Callable[[bytes], object]) -> None:
    with pytest.raises(ImageError, match=r"nested too deeply|not valid JSON"):
        parse(b"[" * 100_000)
    with pytest.raises(ImageError, match="nested too deeply"):
        parse(b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
