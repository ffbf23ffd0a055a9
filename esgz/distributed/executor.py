"""``esgz run --broker``: send the batch's images to ``esgz worker`` processes.

Each image is one Celery job (:data:`~esgz.distributed.wire.TASK_NAME`). The workers'
events come back on the batch's Redis channel and are published on the run's
:class:`~esgz.pipeline.events.EventBus`, so the renderers print the same lines as for a
local run; the jobs' answers come from the result backend. Like a local run, the first
failure ends the batch (the other jobs are revoked) and is raised as one
:class:`~esgz.errors.PipelineError`; cancelling the run (Ctrl-C) revokes every job not
finished yet. A broker that cannot be reached, or goes away, is a PipelineError naming it.

Celery and redis-py are synchronous: every call to them runs in a worker thread, so
this works under asyncio and trio alike.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

import anyio
import anyio.to_thread
import redis

from esgz.distributed.celeryapp import make_app
from esgz.distributed.wire import (
    TASK_NAME,
    event_channel,
    event_from_json,
    image_result_from_data,
    job_config_data,
)
from esgz.errors import PipelineError
from esgz.pipeline.config import PipelineConfig
from esgz.pipeline.events import EventBus, PipelineDone
from esgz.pipeline.results import ImageResult, PipelineResult

__all__ = ["run_on_workers"]

logger = logging.getLogger(__name__)

#: Seconds between two looks at the jobs' states.
_POLL: Final = 0.25
#: Seconds to wait for a finished job's last events after its answer.
_EVENT_GRACE: Final = 2.0


@dataclass
class _Job:
    index: int
    source: str
    id: str
    answer: ImageResult | None = None
    ended: bool = False  # its end marker was seen on the channel


def _broker_error(broker: str, exc: BaseException) -> PipelineError:
    return PipelineError(f"broker {broker}: {' '.join(str(exc).split()) or type(exc).__name__}")


async def run_on_workers(config: PipelineConfig, bus: EventBus) -> PipelineResult:
    """Convert every image of ``config`` on the workers of ``config.executor.broker``.

    Publishes the workers' events and a final :class:`PipelineDone` on ``bus`` (which
    the caller closes).
    """
    executor = config.executor
    broker = executor.broker
    assert broker is not None
    started = time.monotonic()
    error_text: str | None = None
    jobs: list[_Job] = []
    try:
        result = await _run(config, broker, bus, jobs)
    except PipelineError as exc:
        error_text = str(exc)
        raise
    except BaseException:
        error_text = "cancelled"
        raise
    finally:
        bus.publish(
            PipelineDone(
                image="",
                images_done=sum(1 for job in jobs if job.answer is not None),
                seconds=time.monotonic() - started,
                error=error_text,
            )
        )
    return result


async def _run(
    config: PipelineConfig, broker: str, bus: EventBus, jobs: list[_Job]
) -> PipelineResult:
    started = time.monotonic()
    timeout = config.executor.visibility_timeout

    def connect() -> tuple[Any, Any, redis.Redis, Any]:
        # Jobs go out through an app without a result listener (its reconnection loop
        # would outlive a broker that went away); _poll reads the answers from the
        # backend. Celery reads its configuration files on first use: in this thread.
        app = make_app(broker, visibility_timeout=timeout, results=False)
        app.conf.table()  # loads the configuration now
        backend = make_app(broker, visibility_timeout=timeout).backend
        client = redis.Redis.from_url(broker, socket_timeout=30, socket_connect_timeout=10)
        return app, backend, client, client.pubsub(ignore_subscribe_messages=True)

    app, backend, client, pubsub = await anyio.to_thread.run_sync(connect)
    batch = uuid.uuid4().hex
    try:
        try:
            await anyio.to_thread.run_sync(pubsub.subscribe, event_channel(batch))
        except redis.RedisError as exc:
            raise _broker_error(broker, exc) from None
        data = job_config_data(config)
        try:
            for image in config.resolved_images():
                send = partial(
                    app.send_task,
                    TASK_NAME,
                    args=[data, image.index, batch],
                    queue=config.executor.queue,
                )
                sent = await anyio.to_thread.run_sync(send)
                jobs.append(_Job(image.index, image.source, sent.id))
            await _follow(broker, bus, pubsub, backend, jobs)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await _revoke(app, [job for job in jobs if job.answer is None])
            raise
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_close, pubsub, client, app, backend.app)
    images = tuple(job.answer for job in jobs if job.answer is not None)
    return PipelineResult(
        images=images,
        seconds=time.monotonic() - started,
        layers_fetched=0,
        layers_converted=sum(
            1
            for image in images
            for m in image.manifests
            for layer in m.layers
            if layer.action == "converted"
        ),
    )


def _close(pubsub: Any, client: redis.Redis, app: Any, backend_app: Any) -> None:
    for close in (pubsub.close, client.close, app.close, backend_app.close):
        try:
            close()
        except Exception as exc:  # the broker may be gone
            logger.debug("closing: %s", exc)


async def _revoke(app: Any, jobs: list[_Job]) -> None:
    """Revoke ``jobs`` (terminating those running); best effort."""
    if not jobs:
        return
    ids = [job.id for job in jobs]
    try:
        await anyio.to_thread.run_sync(
            lambda: app.control.revoke(ids, terminate=True, signal="SIGTERM")
        )
    except Exception as exc:  # a broker that is gone cannot be told
        logger.info("could not revoke %d jobs: %s", len(ids), exc)


async def _follow(broker: str, bus: EventBus, pubsub: Any, backend: Any, jobs: list[_Job]) -> None:
    """Relay events and collect answers until every job has answered (or one failed)."""
    by_index = {job.index: job for job in jobs}
    last_poll = 0.0
    answered_at: float | None = None
    while True:
        try:
            message = await anyio.to_thread.run_sync(
                lambda: pubsub.get_message(ignore_subscribe_messages=True, timeout=_POLL)
            )
        except (redis.RedisError, OSError) as exc:
            raise _broker_error(broker, exc) from None
        if message is not None and message.get("type") == "message":
            _dispatch(message["data"], bus, by_index)
        now = time.monotonic()
        if answered_at is None and now - last_poll >= _POLL:
            last_poll = now
            await _poll(broker, backend, jobs)
            if all(job.answer is not None for job in jobs):
                answered_at = now
        if answered_at is not None and (
            all(job.ended for job in jobs) or now - answered_at > _EVENT_GRACE
        ):
            return


def _dispatch(data: bytes, bus: EventBus, jobs: dict[int, _Job]) -> None:
    if data.startswith(b'{"type":"_end"'):
        job = jobs.get(int(json.loads(data)["index"]))
        if job is not None:
            job.ended = True
        return
    event = event_from_json(data)
    if event is not None and not isinstance(event, PipelineDone):
        bus.publish(event)


async def _poll(broker: str, backend: Any, jobs: list[_Job]) -> None:
    """Collect the answers of finished jobs; raise the first failure."""
    pending = [job for job in jobs if job.answer is None]

    def states() -> list[tuple[str, Any]]:
        found = []
        for job in pending:
            meta = backend.get_task_meta(job.id)
            found.append((str(meta["status"]), meta.get("result")))
        return found

    try:
        answers = await anyio.to_thread.run_sync(states)
    except Exception as exc:  # kombu / redis connection errors
        raise _broker_error(broker, exc) from None
    for job, (state, value) in zip(pending, answers, strict=True):
        if state == "SUCCESS" and isinstance(value, dict) and "result" in value:
            job.answer = image_result_from_data(value["result"])
        elif state == "SUCCESS" and isinstance(value, dict) and "error" in value:
            raise PipelineError(str(value["error"]))
        elif state in _FINISHED:
            raise PipelineError(
                f"the job of {job.source} ended {state.lower()} on a worker: {value!r}",
                image=job.source,
            )


_FINISHED: Final = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
