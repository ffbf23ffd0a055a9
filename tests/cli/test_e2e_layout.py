"""End to end: `esgz convert` between OCI layouts, checked by the Go reference reader."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from asyncclick.testing import CliRunner, Result

from esgz.cli.main import cli
from tests.cli.outputcheck import check_converted, manifests_of, tagged
from tests.fixtures.images import (
    HOST_PLATFORM,
    OTHER_ARCH,
    SampleImage,
)
from tests.optimize.support import require_sandbox

pytestmark = pytest.mark.anyio


async def esgz(*args: str) -> Result:
    return await CliRunner().invoke(cli, list(args), catch_exceptions=False, env={"LANGUAGE": "C"})


def events_of(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def files_of(image: SampleImage) -> list[tuple[str, ...]]:
    return [layer.files for layer in image.layers]


async def test_convert_layout_to_layout(busybox_image: SampleImage, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = await esgz(
        "convert",
        "--oci",
        "--cache-dir",
        str(tmp_path / "cache"),
        busybox_image.reference,
        f"local://{out}:v1",
    )
    assert result.exit_code == 0, result.output
    document, (output,) = manifests_of(out, "v1")
    assert document["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert result.stdout.strip() == f"local://{out}:v1 {tagged(out, 'v1')['digest']}"
    check_converted(out, output, files_of(busybox_image))
    for layer in output.manifest["layers"]:
        assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    source_config = busybox_image.config()
    assert output.config["config"] == source_config["config"]
    assert output.config["rootfs"]["diff_ids"] != source_config["rootfs"]["diff_ids"]
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


async def test_rerun_uses_the_cache_and_reuse_passes_layers_through(
    busybox_image: SampleImage,
    tmp_path: Path,
) -> None:
    cache = str(tmp_path / "cache")
    out = tmp_path / "out"

    async def convert_cached(tag: str) -> Result:
        return await esgz(
            "convert",
            "--oci",
            "--log-format",
            "json",
            "--cache-dir",
            cache,
            busybox_image.reference,
            f"local://{out}:{tag}",
        )

    first = await convert_cached("v1")
    assert first.exit_code == 0, first.output
    converted = [e for e in events_of(first) if e["event"] == "layer_converted"]
    assert [e["cached"] for e in converted] == [False, False]

    again = await convert_cached("v2")
    assert again.exit_code == 0, again.output
    events = events_of(again)
    assert [e["cached"] for e in events if e["event"] == "layer_converted"] == [True, True]
    assert {e["cached"] for e in events if e["event"] == "layer_fetched"} == {True}
    assert tagged(out, "v1")["digest"] == tagged(out, "v2")["digest"]

    # the converted image as a source: --reuse passes every layer through unchanged
    reused_out = tmp_path / "reused"
    reuse = await esgz(
        "convert",
        "--oci",
        "--reuse",
        "--log-format",
        "json",
        "--no-cache",
        f"local://{out}:v1",
        f"local://{reused_out}:v1",
    )
    assert reuse.exit_code == 0, reuse.output
    events = events_of(reuse)
    assert len([e for e in events if e["event"] == "layer_reused"]) == 2
    assert not [e for e in events if e["event"] == "layer_converted"]
    _, (source_output,) = manifests_of(out, "v1")
    _, (reused_output,) = manifests_of(reused_out, "v1")
    assert reused_output.manifest["layers"] == source_output.manifest["layers"]
    check_converted(reused_out, reused_output)
    done = events[-1]
    assert done["event"] == "pipeline_done"
    assert done["error"] is None


async def test_all_platforms_of_an_index(multiplatform_image: SampleImage, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = await esgz(
        "convert",
        "--oci",
        "--all-platforms",
        "--no-cache",
        multiplatform_image.reference,
        f"local://{out}:multi",
    )
    assert result.exit_code == 0, result.output
    document, outputs = manifests_of(out, "multi")
    assert document["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [o.platform for o in outputs] == [HOST_PLATFORM, f"linux/{OTHER_ARCH}"]
    for output, source in zip(outputs, multiplatform_image.manifests, strict=True):
        check_converted(out, output, files_of(source))

    host_only = tmp_path / "host"
    result = await esgz(
        "convert", "--oci", "--no-cache", multiplatform_image.reference, f"local://{host_only}:h"
    )
    assert result.exit_code == 0, result.output
    _, outputs = manifests_of(host_only, "h")
    assert [o.platform for o in outputs] == [HOST_PLATFORM]


async def test_docker_types_kept_without_oci(
    busybox_docker_image: SampleImage,
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    result = await esgz("convert", "--no-cache", busybox_docker_image.reference, f"local://{out}:d")
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr
    assert "use --oci" in result.stderr
    document, (output,) = manifests_of(out, "d")
    assert document["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert {layer["mediaType"] for layer in output.manifest["layers"]} == {
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    }
    check_converted(out, output, files_of(busybox_docker_image))


async def test_zstd_chunked_from_mixed_compression(
    busybox_mixed_image: SampleImage,
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    result = await esgz(
        "convert",
        "--oci",
        "--zstdchunked",
        "--no-cache",
        busybox_mixed_image.reference,
        f"local://{out}:z",
    )
    assert result.exit_code == 0, result.output
    _, (output,) = manifests_of(out, "z")
    assert {layer["mediaType"] for layer in output.manifest["layers"]} == {
        "application/vnd.oci.image.layer.v1.tar+zstd"
    }
    check_converted(out, output, files_of(busybox_mixed_image))


async def test_record_in_prioritizes_paths(busybox_image: SampleImage, tmp_path: Path) -> None:
    record = tmp_path / "record.json"
    record.write_text(
        '{"path":"bin/busybox","manifestDigest":"sha256:x","layerIndex":0}\n'
        '{"path":"data/small.txt","layerIndex":1}\n'
    )
    out = tmp_path / "out"
    result = await esgz(
        "convert",
        "--oci",
        "--no-cache",
        "--record-in",
        str(record),
        busybox_image.reference,
        f"local://{out}:r",
    )
    assert result.exit_code == 0, result.output
    inspect = await esgz(
        "inspect", "--json", "--files", f"local://{out}:r", "--cache-dir", str(tmp_path / "c")
    )
    assert inspect.exit_code == 0, inspect.output
    report = json.loads(inspect.stdout)
    layers = report["manifests"][0]["layers"]
    assert "bin/busybox" in layers[0]["prioritized"]
    assert "data/small.txt" in layers[1]["prioritized"]
    assert [layer["landmark"] for layer in layers] == [".prefetch.landmark"] * 2


async def test_verify_accepts_the_converted_image(
    busybox_image: SampleImage, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    assert (
        await esgz("convert", "--oci", "--no-cache", busybox_image.reference, f"local://{out}:v")
    ).exit_code == 0
    result = await esgz("verify", f"local://{out}:v", "--cache-dir", str(tmp_path / "c"))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("ok: 2 layer(s) verified")
    # corrupt one layer blob: verify must fail
    _, (output,) = manifests_of(out, "v")
    layer_path = out / "blobs" / "sha256" / output.manifest["layers"][1]["digest"][7:]
    data = bytearray(layer_path.read_bytes())
    data[100] ^= 0xFF
    layer_path.write_bytes(bytes(data))
    result = await esgz("verify", f"local://{out}:v", "--cache-dir", str(tmp_path / "c2"))
    assert result.exit_code == 1
    assert "esgz: error:" in result.stderr


async def test_optimize_with_a_prefetch_list(busybox_image: SampleImage, tmp_path: Path) -> None:
    listing = tmp_path / "prefetch.txt"
    listing.write_text(
        "# files the workload reads\n"
        "/bin/busybox\n"
        "data/*.txt\n"
        "etc/motd\n"  # deleted by layer 1: no layer serves it
        "opt/replaced/old1.txt\n"  # hidden by layer 1's opaque directory
        "opt/replaced/new.txt\n"
        "\n"
    )
    out = tmp_path / "out"
    result = await esgz(
        "optimize",
        "--oci",
        "--no-cache",
        "--prefetch-list",
        str(listing),
        busybox_image.reference,
        f"local://{out}:p",
    )
    assert result.exit_code == 0, result.output
    inspect = await esgz(
        "inspect", "--json", f"local://{out}:p", "--cache-dir", str(tmp_path / "c")
    )
    layers = json.loads(inspect.stdout)["manifests"][0]["layers"]
    assert layers[0]["prioritized"][-1] == "bin/busybox"
    assert "etc/motd" not in layers[0]["prioritized"]
    assert "opt/replaced/old1.txt" not in layers[0]["prioritized"]
    prioritized_1 = [name for name in layers[1]["prioritized"] if not name.endswith("/")]
    assert {"data/small.txt", "data/hardlink.txt", "opt/replaced/new.txt"} <= set(prioritized_1)
    assert [layer["landmark"] for layer in layers] == [".prefetch.landmark"] * 2
    _, (output,) = manifests_of(out, "p")
    check_converted(out, output, files_of(busybox_image))


async def test_empty_prefetch_list_warns(busybox_image: SampleImage, tmp_path: Path) -> None:
    listing = tmp_path / "empty.txt"
    listing.write_text("# nothing\n\n")
    result = await esgz(
        "optimize",
        "--oci",
        "--no-cache",
        "--prefetch-list",
        str(listing),
        busybox_image.reference,
        f"local://{tmp_path}/out:e",
    )
    assert result.exit_code == 0, result.output
    assert "prefetch list is empty" in result.stderr


def add_attestation(layout: Path) -> str:
    """Add a BuildKit-style attestation manifest to the layout's tagged index."""

    def put(data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        (layout / "blobs" / "sha256" / digest[7:]).write_bytes(data)
        return digest

    statement = b'{"_type":"https://in-toto.io/Statement/v0.1"}'
    config = b"{}"
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": put(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.in-toto+json",
                    "digest": put(statement),
                    "size": len(statement),
                }
            ],
        }
    ).encode()
    manifest_digest = put(manifest)
    top = json.loads((layout / "index.json").read_text())
    entry = top["manifests"][0]
    index = json.loads((layout / "blobs" / "sha256" / entry["digest"][7:]).read_text())
    index["manifests"].append(
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": len(manifest),
            "platform": {"architecture": "unknown", "os": "unknown"},
            "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
        }
    )
    data = json.dumps(index).encode()
    entry.update(digest=put(data), size=len(data))
    (layout / "index.json").write_text(json.dumps(top))
    return manifest_digest


async def test_attestation_manifests_are_left_out(
    multiplatform_image: SampleImage, tmp_path: Path
) -> None:
    layout = tmp_path / "src"
    shutil.copytree(multiplatform_image.layout, layout)
    for path in layout.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    attestation = add_attestation(layout)
    out = tmp_path / "out"
    result = await esgz(
        "convert",
        "--oci",
        "--all-platforms",
        "--no-cache",
        f"local://{layout}:{multiplatform_image.tag}",
        f"local://{out}:a",
    )
    assert result.exit_code == 0, result.output
    assert f"skipping attestation manifest {attestation}" in result.stderr
    _, outputs = manifests_of(out, "a")
    assert [o.platform for o in outputs] == [HOST_PLATFORM, f"linux/{OTHER_ARCH}"]


def copy_layout(image: SampleImage, layout: Path) -> None:
    shutil.copytree(image.layout, layout)
    for path in layout.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def break_diff_ids(layout: Path) -> None:
    """Replace every diff_id of the (single-manifest) image's config by the same wrong one."""

    def put(data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        (layout / "blobs" / "sha256" / digest[7:]).write_bytes(data)
        return digest

    top = json.loads((layout / "index.json").read_text())
    entry = top["manifests"][0]
    manifest = json.loads((layout / "blobs" / "sha256" / entry["digest"][7:]).read_text())
    config = json.loads(
        (layout / "blobs" / "sha256" / manifest["config"]["digest"][7:]).read_text()
    )
    config["rootfs"]["diff_ids"] = ["sha256:" + "ab" * 32 for _ in manifest["layers"]]
    config_data = json.dumps(config).encode()
    manifest["config"].update(digest=put(config_data), size=len(config_data))
    manifest_data = json.dumps(manifest).encode()
    entry.update(digest=put(manifest_data), size=len(manifest_data))
    (layout / "index.json").write_text(json.dumps(top))


async def test_wrong_diff_ids_are_an_error_naming_the_layer(
    busybox_image: SampleImage, tmp_path: Path
) -> None:
    layout = tmp_path / "src"
    copy_layout(busybox_image, layout)
    break_diff_ids(layout)
    out = tmp_path / "out"
    result = await esgz(
        "convert", "--oci", "--no-cache", f"local://{layout}:latest", f"local://{out}:x"
    )
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("esgz: error: ")]
    assert "stage fetch" in line
    assert f"the config's diff_id is sha256:{'ab' * 32}" in line
    assert any(layer.digest in line for layer in busybox_image.layers)
    assert not (out / "index.json").exists() or tagged_digests(out) == []


async def test_optimize_with_wrong_diff_ids_fails_before_running_the_workload(
    busybox_image: SampleImage, tmp_path: Path
) -> None:
    require_sandbox()
    layout = tmp_path / "src"
    copy_layout(busybox_image, layout)
    break_diff_ids(layout)
    result = await esgz(
        "optimize",
        "--oci",
        "--no-cache",
        "--args",
        '["true"]',
        f"local://{layout}:latest",
        f"local://{tmp_path}/out:x",
    )
    assert result.exit_code == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("esgz: error: ")]
    assert f"the config's diff_id is sha256:{'ab' * 32}" in line
    assert "symbolic links" not in result.stderr


def tagged_digests(layout: Path) -> list[str]:
    return [e["digest"] for e in json.loads((layout / "index.json").read_text())["manifests"]]


async def test_an_untagged_layout_target_is_tagged_latest(
    busybox_image: SampleImage, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = await esgz("convert", "--oci", "--no-cache", busybox_image.reference, f"local://{out}")
    assert result.exit_code == 0, result.output
    _, (output,) = manifests_of(out, "latest")
    check_converted(out, output, files_of(busybox_image))


async def test_a_target_that_is_not_a_layout_is_refused_before_converting(
    busybox_image: SampleImage, tmp_path: Path
) -> None:
    target = tmp_path / "etc"
    target.mkdir()
    (target / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    cache = tmp_path / "cache"
    result = await esgz(
        "convert",
        "--oci",
        "--cache-dir",
        str(cache),
        "--log-format",
        "json",
        busybox_image.reference,
        f"local://{target}",
    )
    assert result.exit_code == 1
    assert "not empty and not an OCI image layout" in result.stderr
    assert not any(e.get("event") == "layer_fetched" for e in events_of(result))
    assert not list(cache.glob("blobs/sha256/*"))
    assert sorted(p.name for p in target.iterdir()) == ["passwd"]
