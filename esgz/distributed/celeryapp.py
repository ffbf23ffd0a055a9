"""The Celery application of esgz: its reliability settings and the job task.

One job converts one image of a batch: the worker runs the ordinary pipeline on a
one-image config (:func:`esgz.distributed.wire.config_for_job`) under anyio (asyncio or
trio), relays the run's events to the batch's Redis channel, and returns the
:class:`~esgz.pipeline.results.ImageResult` (or the failure as one line).

Reliability, all Celery's own mechanisms:

- ``task_acks_late``: a job is acknowledged when it ends, not when it starts; a worker
  that dies mid-job leaves it unacknowledged.
- ``task_reject_on_worker_lost``: a pool process that dies (SIGKILL, OOM) gives its job
  back to the queue at once.
- the Redis ``visibility_timeout`` (default 300 s, not Redis's hour) with a restore sweep
  every tenth of it: the job of a whole worker machine that died is delivered again
  within minutes. A job running longer than the timeout is delivered a second time;
  that is safe (outputs are content-addressed and reproducible, a manifest is only pushed
  after its blobs) but wasteful, so set it above the longest image's conversion time.
- ``worker_prefetch_multiplier = 1``: a worker holds no more jobs than it runs.

Workers keep no state beyond their local cache directory.
"""

from __future__ import annotations

import logging
import threading
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import Any, Final

import anyio
import anyio.to_thread
import redis
from celery import Celery, Task

from esgz.distributed import regcache
from esgz.distributed.wire import (
    TASK_NAME,
    config_for_job,
    event_channel,
    event_to_wire,
    image_result_to_data,
)
from esgz.errors import EsgzError
from esgz.pipeline.events import EventBus, PipelineDone, Subscription

__all__ = ["DEFAULT_VISIBILITY_TIMEOUT", "RedisClaims", "make_app"]

logger = logging.getLogger(__name__)

#: Seconds before Redis redelivers the unacknowledged job of a dead worker.
DEFAULT_VISIBILITY_TIMEOUT: Final = 300
#: Seconds between two attempts to take a conversion claim held by another worker.
_CLAIM_POLL: Final = 0.2


def make_app(
    broker: str,
    *,
    visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT,
    cache_dir: str | None = None,
    backend: str = "asyncio",
    results: bool = True,
) -> Celery:
    """The Celery app for ``broker`` (also the result backend) with the job task.

    ``cache_dir`` and ``backend`` (anyio's ``asyncio`` or ``trio``) only matter in a
    worker. ``results=False`` makes an app that only sends jobs: it does not listen for
    their results (the sender reads them from the backend by itself).
    """
    app = Celery("esgz", broker=broker, backend=broker if results else None, set_as_current=False)
    transport = {
        "visibility_timeout": visibility_timeout,
        "unacked_restore_interval": max(1, visibility_timeout // 10),
        "unacked_restore_throttle": 1,
    }
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=True,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        broker_connection_retry_on_startup=True,
        result_expires=24 * 3600,
        worker_hijack_root_logger=False,
        esgz_cache_dir=cache_dir,
        esgz_backend=backend,
        esgz_visibility_timeout=visibility_timeout,
    )
    app.task(name=TASK_NAME, bind=True)(_convert_image)
    return app


def _convert_image(task: Task[Any, Any], config: dict[str, Any], index: int, batch: str) -> Any:
    """The job: convert image ``index`` of the batch config ``config``.

    The job's event loop runs in a thread of its own: a pool process is forked from a
    command that is itself an event loop, whose "already running" marks it inherits.
    """
    conf = task.app.conf
    outcome: list[Any] = []
    failure: list[BaseException] = []

    def job() -> None:
        try:
            outcome.append(
                anyio.run(
                    _run_job,
                    config,
                    index,
                    batch,
                    conf.esgz_cache_dir,
                    str(conf.broker_url),
                    int(conf.esgz_visibility_timeout),
                    backend=str(conf.esgz_backend),
                )
            )
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=job, name=f"esgz-job-{batch}-{index}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


async def _run_job(
    data: dict[str, Any],
    index: int,
    batch: str,
    cache_dir: str | None,
    broker: str,
    claim_timeout: int,
) -> dict[str, Any]:
    from esgz.pipeline.api import run_pipeline

    try:
        config = config_for_job(data, index, cache_dir)
    except EsgzError as exc:
        return {"error": str(exc)}
    client = redis.Redis.from_url(broker, socket_timeout=10)
    bus = EventBus()
    subscription = bus.subscribe(max_buffer=1024)
    outcome: dict[str, Any]
    token = regcache.CLAIMS.set(RedisClaims(client, claim_timeout))
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_relay, subscription, client, batch, index)
            try:
                result = await run_pipeline(config, events=bus)
            except EsgzError as exc:
                outcome = {"error": str(exc)}
            else:
                outcome = {"result": image_result_to_data(result.images[0])}
    finally:
        regcache.CLAIMS.reset(token)
        await anyio.to_thread.run_sync(client.close)
    return outcome


async def _relay(subscription: Subscription, client: redis.Redis, batch: str, index: int) -> None:
    """Publish the run's events on the batch channel; then the job's end marker.

    A broker that cannot be reached only stops the relay: the job itself goes on.
    """
    channel = event_channel(batch)
    working = True
    async with subscription:
        async for event in subscription:
            if isinstance(event, PipelineDone) or not working:
                continue
            try:
                await anyio.to_thread.run_sync(client.publish, channel, event_to_wire(event))
            except redis.RedisError as exc:
                logger.warning("events of %s not relayed: %s", event.image, exc)
                working = False
    if working:
        end = f'{{"type":"_end","index":{index}}}'
        with suppress(redis.RedisError):
            await anyio.to_thread.run_sync(client.publish, channel, end)


class RedisClaims:
    """Fleet-wide claims on conversion keys (Redis locks that expire), so that a layer
    shared by several images is converted by one worker while the others wait for its
    registry cache entry."""

    def __init__(self, client: redis.Redis, timeout: int) -> None:
        self.client = client
        self.timeout = timeout

    def claim(self, name: str) -> AbstractAsyncContextManager[None]:
        """Hold the claim ``name`` (waiting while another worker holds it)."""
        return self._claim(name)

    @asynccontextmanager
    async def _claim(self, name: str) -> Any:
        # taken and released from different worker threads: no thread-local token
        lock = self.client.lock(f"esgz:claim:{name}", timeout=self.timeout, thread_local=False)
        try:
            while not await anyio.to_thread.run_sync(lambda: lock.acquire(blocking=False)):  # noqa: ASYNC110  (held in another machine: polled)
                await anyio.sleep(_CLAIM_POLL)
        except redis.RedisError as exc:
            # Without the broker there is no claim to hold; converting the layer twice
            # is harmless (the same bytes), failing the job is not.
            logger.warning("claim %s not taken, converting anyway: %s", name, exc)
            yield
            return
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await anyio.to_thread.run_sync(lock.release)
                except redis.RedisError as exc:  # expired, or the broker is gone
                    logger.debug("claim %s not released: %s", name, exc)
