"""``esgz worker``: a Celery worker that converts the images of ``esgz run --broker``."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import asyncclick as click

from esgz.cli.options import DIR
from esgz.errors import ConfigError
from esgz.pipeline.config import ExecutorConfig

__all__ = ["worker"]


@click.command()
@click.option(
    "--broker",
    metavar="URL",
    required=True,
    help="The Redis broker (and result backend) of the batches: redis://HOST:PORT/DB.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Images converted at once (pool processes); each uses all cores for compression.",
)
@click.option(
    "--cache-dir",
    type=DIR,
    default=None,
    help="This worker's blob and conversion cache (replaces the batch's cache.dir).",
)
@click.option(
    "--queue",
    default=ExecutorConfig.model_fields["queue"].default,
    show_default=True,
    help="The Celery queue to take jobs from (executor.queue of the batches).",
)
@click.option(
    "--visibility-timeout",
    type=click.IntRange(10),
    default=ExecutorConfig.model_fields["visibility_timeout"].default,
    show_default=True,
    help="Seconds before the job of a worker that died is delivered again"
    " (above the longest image's conversion time).",
)
@click.option(
    "--backend",
    type=click.Choice(["asyncio", "trio"]),
    default="asyncio",
    show_default=True,
    help="The event loop that runs each job (through anyio).",
)
@click.option("--name", default=None, help="Worker name. Default: esgz-<pid>@<hostname>.")
def worker(
    broker: str,
    concurrency: int,
    cache_dir: Path | None,
    queue: str,
    visibility_timeout: int,
    backend: str,
    name: str | None,
) -> None:
    """Convert images sent by `esgz run --broker URL` (runs until stopped: SIGTERM
    finishes the running jobs, a second SIGTERM or SIGKILL gives them back)."""
    try:
        ExecutorConfig.model_validate({"broker": broker})
    except ValueError:
        raise click.UsageError(f"--broker: {broker!r} is not a Redis URL") from None
    try:
        from esgz.distributed.celeryapp import make_app
    except ImportError as exc:
        raise ConfigError(
            f"esgz worker needs Celery and redis (pip install 'esgz[celery]'): {exc}"
        ) from None
    app = make_app(
        broker,
        visibility_timeout=visibility_timeout,
        cache_dir=str(cache_dir.absolute()) if cache_dir is not None else None,
        backend=backend,
    )
    app.worker_main(
        [
            "worker",
            "--loglevel=INFO",
            f"--concurrency={concurrency}",
            "--pool=prefork",
            f"--queues={queue}",
            f"--hostname={name or f'esgz-{os.getpid()}@{socket.gethostname()}'}",
            "--without-gossip",
        ]
    )
