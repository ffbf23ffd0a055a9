"""Optimize registry to registry, and through the embedding API (asyncio and trio)."""

from __future__ import annotations

from pathlib import Path

import pytest

from esgz.pipeline.api import Pipeline
from esgz.pipeline.config import config_from_data
from esgz.pipeline.events import ImageProfiled, WorkloadOutput
from tests.fixtures.images import SampleImage
from tests.fixtures.registry import RegistryServer
from tests.optimize.support import PREFETCH, read_layers, records_of, require_sandbox, run_esgz

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_registry_to_registry(
    plain_registry: RegistryServer, busybox_image: SampleImage, tmp_path: Path
) -> None:
    require_sandbox()
    plain_registry.skopeo_push_layout(busybox_image.layout, "opt-src/busybox:1", tag="latest")
    host = plain_registry.host
    record = tmp_path / "record.json"
    run = run_esgz(
        "optimize",
        "--plain-http",
        "--oci",
        "--no-cache",
        "--record-out",
        str(record),
        "--entrypoint",
        '["/bin/cat"]',
        "--args",
        '["/etc/group"]',
        f"http://{host}/opt-src/busybox:1",
        f"http://{host}/opt-out/busybox:esgz",
    )
    assert run.returncode == 0, run.stderr
    pulled = tmp_path / "pulled"
    plain_registry.skopeo_pull_layout("opt-out/busybox:esgz", pulled, tag="esgz")
    ((_, (base, data)),) = read_layers(pulled, "esgz")
    assert "etc/group" in base.prioritized
    assert base.landmark == PREFETCH
    assert data.prioritized == []
    assert [entry.path for entry in records_of(record)][-1] == "etc/group"


@pytest.mark.anyio
async def test_embedding_api_runs_the_workload(busybox_image: SampleImage, tmp_path: Path) -> None:
    require_sandbox()
    config = config_from_data(
        {
            "cache": {"enabled": False},
            "images": [
                {
                    "source": busybox_image.reference,
                    "target": f"local://{tmp_path}/out:x",
                    "oci": True,
                    "workload": {"args": ["echo hi; cat /data/small.txt >/dev/null"]},
                }
            ],
        }
    )
    pipeline = Pipeline(config)
    events = pipeline.events(max_buffer=4096)
    await pipeline.run()
    seen = [event async for event in events]
    output = [event.line for event in seen if isinstance(event, WorkloadOutput)]
    assert output == ["hi"]
    (profiled,) = [event for event in seen if isinstance(event, ImageProfiled)]
    assert profiled.exit_status == 0
    assert profiled.prioritized[1] == 1  # data/small.txt
    ((_, (_, data)),) = read_layers(tmp_path / "out", "x")
    assert "data/small.txt" in data.prioritized
