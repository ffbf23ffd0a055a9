"""``run_pipeline`` with a broker, from an asyncio or trio application."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from esgz import (
    Event,
    ImageDone,
    LayerConverted,
    Pipeline,
    PipelineDone,
    PipelineError,
    Subscription,
    run_pipeline,
)
from tests.fixtures.images import SampleImage
from tests.fixtures.registry import RegistryServer
from tests.fixtures.workers import RedisServer, Worker, workers

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def fleet(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    with workers(redis_server.url, tmp_path_factory.mktemp("fleet"), "embedded") as (worker,):
        yield worker


@pytest.fixture(scope="module")
def pushed(plain_registry: RegistryServer, busybox_image: SampleImage) -> RegistryServer:
    plain_registry.skopeo_push_layout(busybox_image.layout, "emb/busybox:1", tag="latest")
    return plain_registry


async def test_events_and_result_through_workers(
    pushed: RegistryServer, redis_server: RedisServer, fleet: Worker, tmp_path: Path
) -> None:
    host = pushed.host
    run = uuid.uuid4().hex[:6]
    config = {
        "defaults": {"oci": True, "no_optimize": True},
        "registries": {host: {"plain_http": True}},
        "executor": {"broker": redis_server.url},
        "images": [
            {"source": f"http://{host}/emb/busybox:1", "target": f"http://{host}/e{run}/b:e"}
        ],
    }
    pipeline = Pipeline(config)
    seen: list[Event] = []

    async def collect(events: Subscription) -> None:
        async for event in events:
            seen.append(event)

    async with anyio.create_task_group() as tg:
        tg.start_soon(collect, pipeline.events())
        result = await pipeline.run()
    (image,) = result.images
    assert image.target == f"http://{host}/e{run}/b:e"
    (done,) = [e for e in seen if isinstance(e, ImageDone)]
    assert done.digest == image.digest
    assert isinstance(seen[-1], PipelineDone)
    assert seen[-1].error is None
    assert any(isinstance(e, LayerConverted) for e in seen)

    # a failing image fails the batch with the worker's one-line error
    config["images"] = [
        {"source": f"http://{host}/emb/missing:1", "target": f"http://{host}/e{run}/m:e"}
    ]
    with pytest.raises(PipelineError, match="missing") as caught:
        await run_pipeline(config)
    assert "\n" not in str(caught.value)
