"""CNI networking with Debian's containernetworking-plugins (bridge, host-local, portmap)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import anyio
import anyio.abc
import pytest

from esgz.errors import SandboxError
from esgz.runtime.network import cni_network, load_network_config
from esgz.runtime.profile import profile_workload
from esgz.runtime.workload import DEFAULT_CNI_PLUGIN_DIRS, WorkloadOptions
from tests.fixtures.images import SampleImage
from tests.runtime.conftest import GATEWAY, layer_sources, netns_names

pytestmark = pytest.mark.root


def test_first_config_is_loaded(cni_conf_dir: Path) -> None:
    network = load_network_config(cni_conf_dir)
    assert network.name == "esgz-test"
    assert [p["type"] for p in network.plugins] == ["bridge", "portmap"]


def test_empty_conf_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="no CNI network config"):
        load_network_config(tmp_path)


@pytest.mark.anyio
async def test_cni_workload_reaches_a_server_on_the_bridge(
    busybox_image: SampleImage, work_dir: Path, layer_cache: Path, cni_conf_dir: Path
) -> None:
    before = netns_names()
    listener = await anyio.create_tcp_listener(local_host="0.0.0.0", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def serve(client: anyio.abc.SocketStream) -> None:
        async with client:
            await client.receive()
            await client.send(b"HTTP/1.0 200 OK\r\nContent-Length: 15\r\n\r\nhello-from-host")

    lines: list[str] = []
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, serve)
        result = await profile_workload(
            layer_sources(busybox_image),
            busybox_image.config(),
            WorkloadOptions(
                entrypoint=["/bin/busybox", "sh", "-c"],
                args=[
                    f"/bin/busybox wget -q -O - http://{GATEWAY}:{port}/; echo;"
                    " cat /proc/net/dev | tail -n +3 | cut -d: -f1"
                ],
                cni=True,
                cni_plugin_conf_dir=cni_conf_dir,
            ),
            work_dir=work_dir,
            layer_cache=layer_cache,
            on_output=lambda _stream, line: lines.append(line.strip()),
        )
        group.cancel_scope.cancel()
    assert result.exit_status == 0
    assert lines[0] == "hello-from-host"
    assert sorted(lines[1:]) == ["eth0", "lo"]
    # The namespace is gone and the address was released.
    assert netns_names() == before
    ipam_dir = cni_conf_dir.parent / "ipam" / "esgz-test"
    leases = [n for n in os.listdir(ipam_dir) if n.startswith("10.231.")]
    assert leases == []


@pytest.mark.anyio
async def test_cni_network_context_tears_down_on_error(cni_conf_dir: Path) -> None:
    before = netns_names()
    seen: list[bool] = []

    async def fail_inside() -> None:
        async with cni_network(
            conf_dir=cni_conf_dir,
            plugin_dirs=DEFAULT_CNI_PLUGIN_DIRS,
            container_id="esgz-nettest",
        ) as attachment:
            seen.append(attachment.netns_path.exists() and "esgz-nettest" in netns_names())
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await fail_inside()
    assert seen == [True]
    assert netns_names() == before


@pytest.mark.anyio
async def test_missing_plugin_is_reported_before_anything(
    cni_conf_dir: Path, tmp_path: Path
) -> None:
    before = netns_names()
    with pytest.raises(SandboxError, match="'bridge' not found"):
        async with cni_network(
            conf_dir=cni_conf_dir, plugin_dirs=[tmp_path], container_id="esgz-nettest2"
        ):
            pass
    assert netns_names() == before


def test_single_plugin_conf_and_file_order(tmp_path: Path) -> None:
    (tmp_path / "README").write_text("not a config")
    (tmp_path / "50-later.conflist").write_text(
        json.dumps({"cniVersion": "1.0.0", "name": "later", "plugins": [{"type": "bridge"}]})
    )
    (tmp_path / "10-single.conf").write_text(
        json.dumps({"cniVersion": "0.4.0", "name": "single", "type": "ptp", "ipam": {}})
    )
    network = load_network_config(tmp_path)
    assert (network.name, network.cni_version) == ("single", "0.4.0")
    assert [p["type"] for p in network.plugins] == ["ptp"]


def test_config_without_type_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "10-bad.conf").write_text(json.dumps({"name": "bad"}))
    with pytest.raises(SandboxError, match="needs a 'type'"):
        load_network_config(tmp_path)
