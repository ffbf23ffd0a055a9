"""End to end against Debian's docker-registry: push with skopeo, convert, pull, verify."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from asyncclick.testing import CliRunner, Result

from esgz.cli.main import cli
from tests.cli.outputcheck import check_converted, manifests_of
from tests.fixtures.images import HOST_PLATFORM, OTHER_ARCH, SampleImage
from tests.fixtures.registry import RegistryServer

pytestmark = pytest.mark.anyio


async def esgz(*args: str) -> Result:
    return await CliRunner().invoke(cli, list(args), catch_exceptions=False, env={"LANGUAGE": "C"})


def events_of(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def pushed(
    plain_registry: RegistryServer, busybox_image: SampleImage, multiplatform_image: SampleImage
) -> RegistryServer:
    plain_registry.skopeo_push_layout(busybox_image.layout, "src/busybox:1", tag="latest")
    plain_registry.skopeo_push_layout(multiplatform_image.layout, "src/multi:1", tag="latest")
    return plain_registry


async def test_registry_to_registry(
    pushed: RegistryServer, busybox_image: SampleImage, tmp_path: Path
) -> None:
    host = pushed.host
    result = await esgz(
        "convert",
        "--oci",
        "--plain-http",
        "--log-format",
        "json",
        "--cache-dir",
        str(tmp_path / "cache"),
        f"http://{host}/src/busybox:1",
        f"http://{host}/out/busybox:esgz",
    )
    assert result.exit_code == 0, result.output
    events = events_of(result)
    done = [e for e in events if e["event"] == "image_done"]
    assert len(done) == 1

    pulled = tmp_path / "pulled"
    pushed.skopeo_pull_layout("out/busybox:esgz", pulled, tag="esgz", all_platforms=False)
    _, (output,) = manifests_of(pulled, "esgz")
    check_converted(pulled, output, [layer.files for layer in busybox_image.layers])
    assert (
        pushed.skopeo_inspect_raw("out/busybox:esgz")
        == (pulled / "blobs" / "sha256" / done[0]["digest"][7:]).read_bytes()
    )

    # --reuse from the converted image into another repository: layers pass through
    again = await esgz(
        "convert",
        "--oci",
        "--plain-http",
        "--reuse",
        "--log-format",
        "json",
        "--no-cache",
        f"http://{host}/out/busybox:esgz",
        f"http://{host}/copy/busybox:esgz",
    )
    assert again.exit_code == 0, again.output
    events = events_of(again)
    assert len([e for e in events if e["event"] == "layer_reused"]) == 2
    assert [e["digest"] for e in events if e["event"] == "image_done"] == [done[0]["digest"]]


async def test_multi_platform_registry_image(pushed: RegistryServer, tmp_path: Path) -> None:
    host = pushed.host
    result = await esgz(
        "convert",
        "--oci",
        "--plain-http",
        "--all-platforms",
        "--no-cache",
        f"http://{host}/src/multi:1",
        f"http://{host}/out/multi:esgz",
    )
    assert result.exit_code == 0, result.output
    pulled = tmp_path / "pulled"
    pushed.skopeo_pull_layout("out/multi:esgz", pulled, tag="esgz")
    document, outputs = manifests_of(pulled, "esgz")
    assert document["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [o.platform for o in outputs] == [HOST_PLATFORM, f"linux/{OTHER_ARCH}"]
    for output in outputs:
        check_converted(pulled, output)


async def test_missing_image_is_a_one_line_error(pushed: RegistryServer, tmp_path: Path) -> None:
    result = await esgz(
        "convert",
        "--plain-http",
        "--no-cache",
        f"http://{pushed.host}/src/nothing:1",
        f"local://{tmp_path}/out",
    )
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("esgz: error: image http://")
    assert "stage resolve" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_unreachable_registry_is_a_one_line_error(tmp_path: Path) -> None:
    # (one backend only: the registry client retries with backoff for a few seconds)
    result = await esgz(
        "convert", "--plain-http", "--no-cache", "http://127.0.0.1:1/x:1", f"local://{tmp_path}/o"
    )
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert "cannot connect to 127.0.0.1:1" in line


async def test_batch_run_mounts_blobs_already_pushed(
    pushed: RegistryServer, tmp_path: Path
) -> None:
    host = pushed.host
    run = uuid.uuid4().hex[:8]  # fresh repositories: the registry lives for the session
    config = tmp_path / "batch.yaml"
    config.write_text(
        "defaults: {oci: true, no_optimize: true, plain_http: true}\n"
        "concurrency: {upload: 1}\n"
        f"cache: {{dir: {tmp_path / 'cache'}}}\n"
        "images:\n"
        f"  - {{source: 'http://{host}/src/busybox:1', target: 'http://{host}/a{run}/busybox:e'}}\n"
        f"  - {{source: 'http://{host}/src/busybox:1', target: 'http://{host}/b{run}/busybox:e'}}\n"
    )
    result = await esgz("run", str(config), "--log-format", "json")
    assert result.exit_code == 0, result.output
    events = events_of(result)
    uploads = [e["outcome"] for e in events if e["event"] == "layer_uploaded"]
    # the first image uploads its two layers, the second mounts them from the first
    assert sorted(uploads) == ["mounted", "mounted", "uploaded", "uploaded"]
    assert len([e for e in events if e["event"] == "layer_fetched"]) == 2
    digests = {e["digest"] for e in events if e["event"] == "image_done"}
    assert len(digests) == 1
    assert pushed.skopeo_inspect_raw(f"a{run}/busybox:e") == pushed.skopeo_inspect_raw(
        f"b{run}/busybox:e"
    )


async def test_tls_registry_with_ca_file_and_credentials(
    tls_registry: RegistryServer,
    busybox_image: SampleImage,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert tls_registry.ca_file is not None
    assert tls_registry.username is not None
    assert tls_registry.password is not None
    tls_registry.skopeo_push_layout(busybox_image.layout, "tls/busybox:1", tag="latest")
    docker = tmp_path / "docker"
    docker.mkdir()
    secret = base64.b64encode(f"{tls_registry.username}:{tls_registry.password}".encode()).decode()
    (docker / "config.json").write_text(
        json.dumps({"auths": {tls_registry.host: {"auth": secret}}})
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(docker))
    host = tls_registry.host
    run = uuid.uuid4().hex[:8]
    config = tmp_path / "tls.yaml"
    config.write_text(
        "defaults: {oci: true, no_optimize: true}\n"
        f"cache: {{enabled: false}}\n"
        f"registries:\n  '{host}': {{ca_file: '{tls_registry.ca_file}'}}\n"
        f"images:\n  - {{source: '{host}/tls/busybox:1', target: '{host}/tls{run}/b:e'}}\n"
    )
    result = await esgz("run", str(config))
    assert result.exit_code == 0, result.output
    pulled = tmp_path / "pulled"
    tls_registry.skopeo_pull_layout(f"tls{run}/b:e", pulled, tag="e", all_platforms=False)
    _, (output,) = manifests_of(pulled, "e")
    check_converted(pulled, output, [layer.files for layer in busybox_image.layers])

    # without the CA the registry's certificate is refused: one line, exit 1
    config.write_text(config.read_text().replace(f"ca_file: '{tls_registry.ca_file}'", ""))
    failed = await esgz("run", str(config))
    assert failed.exit_code == 1
    (line,) = failed.stderr.strip().splitlines()
    assert line.startswith(f"esgz: error: image {host}/tls/busybox:1, stage resolve")


async def test_each_manifest_is_read_once_and_written_once(
    pushed: RegistryServer, multiplatform_image: SampleImage, tmp_path: Path
) -> None:
    """One GET of the source's root, one PUT per manifest (the single one by tag)."""
    from tests.fixtures.faultproxy import run_fault_proxy

    with run_fault_proxy(pushed.host) as proxy:
        for source, target, platforms in (
            ("src/busybox:1", "once/busybox:t", ()),
            ("src/multi:1", "once/multi:t", ("--all-platforms",)),
        ):
            proxy.reset()
            result = await esgz(
                "convert",
                "--oci",
                "--plain-http",
                *platforms,
                "--no-cache",
                f"http://{proxy.host}/{source}",
                f"http://{proxy.host}/{target}",
            )
            assert result.exit_code == 0, result.output
            repository, _, tag = source.partition(":")
            manifests = [(e.method, e.path) for e in proxy.log if "/manifests/" in e.path]
            root = [m for m in manifests if m[1] == f"/v2/{repository}/manifests/{tag}"]
            assert root == [("GET", f"/v2/{repository}/manifests/{tag}")]
            puts = [path for method, path in manifests if method == "PUT"]
            target_repository, _, target_tag = target.partition(":")
            if not platforms:
                assert puts == [f"/v2/{target_repository}/manifests/{target_tag}"]
            else:
                count = len(multiplatform_image.manifests)
                assert len(puts) == count + 1
                assert puts[-1] == f"/v2/{target_repository}/manifests/{target_tag}"
                assert all("/manifests/sha256:" in path for path in puts[:-1])
