"""The conversion cache in a registry repository, through the CLI, without any worker."""

from __future__ import annotations

import base64
import json
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from asyncclick.testing import CliRunner, Result

from esgz.cli.main import cli
from esgz.distributed.regcache import ARTIFACT_TYPE
from tests.cli.outputcheck import check_converted, manifests_of
from tests.fixtures.images import SampleImage
from tests.fixtures.registry import RegistryServer

pytestmark = pytest.mark.anyio

DONE_RE = re.compile(r"done: (\S+)@(sha256:[0-9a-f]{64}) \(converted (\d+), cached (\d+)")


async def esgz(*args: str) -> Result:
    return await CliRunner().invoke(cli, list(args), catch_exceptions=False, env={"LANGUAGE": "C"})


def counts(result: Result) -> list[tuple[int, int]]:
    return [(int(m[3]), int(m[4])) for m in DONE_RE.finditer(result.output)]


@pytest.fixture(scope="module")
def pushed(plain_registry: RegistryServer, busybox_image: SampleImage) -> RegistryServer:
    plain_registry.skopeo_push_layout(busybox_image.layout, "rc/busybox:1", tag="latest")
    return plain_registry


async def get_json(url: str, **headers: str) -> Any:
    async with httpx.AsyncClient() as client:
        response = await client.get(url, headers=headers)
    response.raise_for_status()
    return response.json()


async def tags_of(registry: RegistryServer, repository: str) -> list[str]:
    data = await get_json(f"{registry.base_url}/v2/{repository}/tags/list")
    return list(data["tags"] or [])


async def test_second_machine_converts_nothing(
    pushed: RegistryServer, busybox_image: SampleImage, tmp_path: Path
) -> None:
    host = pushed.host
    run = uuid.uuid4().hex[:8]
    cache = f"http://{host}/cache{run}/esgz"
    common = ["convert", "--oci", "--plain-http", "--cache-registry", cache]
    first = await esgz(
        *common,
        "--cache-dir",
        str(tmp_path / "a"),
        f"http://{host}/rc/busybox:1",
        f"http://{host}/out{run}/one:e",
    )
    assert first.exit_code == 0, first.output
    assert counts(first) == [(2, 0)]
    tags = await tags_of(pushed, f"cache{run}/esgz")
    assert len(tags) == 2
    assert all(tag.startswith("conv-") for tag in tags)
    entry = await get_json(
        f"{pushed.base_url}/v2/cache{run}/esgz/manifests/{tags[0]}",
        Accept="application/vnd.oci.image.manifest.v1+json",
    )
    assert entry["artifactType"] == ARTIFACT_TYPE
    assert entry["annotations"]["io.esgz.conversion.diff-id"].startswith("sha256:")
    assert "containerd.io/snapshot/stargz/toc.digest" in entry["layers"][0]["annotations"]

    # another machine (fresh local cache), same registry: mounted from the cache
    second = await esgz(
        *common,
        "--log-format",
        "json",
        "--cache-dir",
        str(tmp_path / "b"),
        f"http://{host}/rc/busybox:1",
        f"http://{host}/out{run}/two:e",
    )
    assert second.exit_code == 0, second.output
    events = [json.loads(line) for line in second.stdout.splitlines() if line.startswith("{")]
    (done,) = [e for e in events if e["event"] == "image_done"]
    assert (done["layers_converted"], done["layers_cached"]) == (0, 2)
    uploads = [e["outcome"] for e in events if e["event"] == "layer_uploaded"]
    assert uploads == ["mounted", "mounted"]
    assert not list((tmp_path / "b" / "conversions").iterdir())  # nothing was downloaded

    # a layout target: the cached blobs are pulled (verified), the output is the same
    third = await esgz(
        *common,
        "--cache-dir",
        str(tmp_path / "c"),
        f"http://{host}/rc/busybox:1",
        f"local://{tmp_path / 'layout'}:e",
    )
    assert third.exit_code == 0, third.output
    assert counts(third) == [(0, 2)]
    _, (output,) = manifests_of(tmp_path / "layout", "e")
    check_converted(tmp_path / "layout", output, [layer.files for layer in busybox_image.layers])
    digests = {m[2] for r in (first, third) for m in DONE_RE.finditer(r.output)}
    assert len(digests) == 1  # reproducible: the same manifest from a conversion or a hit


async def test_cache_registry_behind_tls_and_auth(
    tls_registry: RegistryServer,
    busybox_image: SampleImage,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert tls_registry.ca_file is not None
    tls_registry.skopeo_push_layout(busybox_image.layout, "rct/busybox:1", tag="latest")
    docker = tmp_path / "docker"
    docker.mkdir()
    secret = base64.b64encode(f"{tls_registry.username}:{tls_registry.password}".encode()).decode()
    (docker / "config.json").write_text(
        json.dumps({"auths": {tls_registry.host: {"auth": secret}}})
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(docker))
    host = tls_registry.host
    run = uuid.uuid4().hex[:8]
    layout = tmp_path / "out"
    config = tmp_path / "p.yaml"
    config.write_text(
        "defaults: {oci: true, no_optimize: true}\n"
        f"cache: {{registry: '{host}/cache{run}/esgz', dir: '{tmp_path / 'one'}'}}\n"
        f"registries:\n  '{host}': {{ca_file: '{tls_registry.ca_file}'}}\n"
        f"images:\n  - {{source: '{host}/rct/busybox:1', target: 'local://{layout}:e'}}\n"
    )
    first = await esgz("run", str(config))
    assert first.exit_code == 0, first.output
    assert counts(first) == [(2, 0)]
    config.write_text(config.read_text().replace(str(tmp_path / "one"), str(tmp_path / "two")))
    second = await esgz("run", str(config))
    assert second.exit_code == 0, second.output
    assert counts(second) == [(0, 2)]

    # without credentials the cache registry says no: one line, exit 1
    (docker / "config.json").write_text("{}")
    config.write_text(config.read_text().replace(str(tmp_path / "two"), str(tmp_path / "three")))
    failed = await esgz("run", str(config))
    assert failed.exit_code == 1
    assert len(failed.stderr.strip().splitlines()) == 1


async def test_an_entry_whose_blob_is_gone_is_a_miss(
    pushed: RegistryServer, tmp_path: Path
) -> None:
    host = pushed.host
    run = uuid.uuid4().hex[:8]
    cache = f"http://{host}/gone{run}/esgz"
    common = ["convert", "--oci", "--plain-http", "--cache-registry", cache]
    source = f"http://{host}/rc/busybox:1"
    first = await esgz(*common, "--cache-dir", str(tmp_path / "a"), source, f"{cache}-out:1")
    assert first.exit_code == 0, first.output
    for tag in await tags_of(pushed, f"gone{run}/esgz"):
        entry = await get_json(
            f"{pushed.base_url}/v2/gone{run}/esgz/manifests/{tag}",
            Accept="application/vnd.oci.image.manifest.v1+json",
        )
        async with httpx.AsyncClient() as client:
            response = await client.delete(
                f"{pushed.base_url}/v2/gone{run}/esgz/blobs/{entry['layers'][0]['digest']}"
            )
        assert response.status_code == 202
    again = await esgz(*common, "--cache-dir", str(tmp_path / "b"), source, f"{cache}-out2:1")
    assert again.exit_code == 0, again.output
    assert counts(again) == [(2, 0)]
    # ... and the conversion repaired the entries
    third = await esgz(*common, "--cache-dir", str(tmp_path / "c"), source, f"{cache}-out3:1")
    assert third.exit_code == 0, third.output
    assert counts(third) == [(0, 2)]
