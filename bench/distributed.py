"""Benchmark: distributed batch runs (``esgz run --broker``) and the registry conversion cache.

Starts Debian's ``redis-server`` and a plain-HTTP ``docker-registry`` on loopback ports,
pushes a batch of ``--images`` images (default 8) that share two base layers and each add
two layers of their own (``bench._image_sources.batch_images``), and measures:

* **throughput vs workers**: the wall time of ``esgz run --broker`` converting the whole
  batch registry-to-registry on 1, then 2 ``esgz worker`` processes (``--concurrency 1``
  each, fresh local caches, a fresh registry cache repository per run so that nothing is
  reused between runs), next to the same batch in one process (``esgz run``, no broker);
* **registry cache hit vs conversion**: ``esgz convert --cache-registry`` of the single
  benchmark image with an empty local cache, first with an empty cache repository
  (conversion, entries written), then again (every layer a hit, mounted into the target).

Every run is a child process (wall time, and CPU time from ``os.wait4`` for the client).
The CPU the workers use is read from ``/proc`` before and after. Results go to stdout, and
to JSON with ``--json``.

Run from the repository root::

    .venv/bin/python bench/distributed.py [--images 8] [--workers 1 2] [--reps 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench._image_services import free_port, require_tools, run_registry  # noqa: E402
from bench._image_sources import batch_images, push_layout, single_image  # noqa: E402

DONE_RE = re.compile(r"done: \S+ \(converted (\d+), cached (\d+), reused (\d+)\)")


def esgz(*args: str) -> list[str]:
    """The argv of this checkout's ``esgz``."""
    return [sys.executable, "-c", "from esgz.cli import main; main()", *args]


def env() -> dict[str, str]:
    """The children's environment (this checkout importable)."""
    return dict(os.environ, PYTHONPATH=str(REPO_ROOT))


@contextmanager
def run_redis(workdir: Path) -> Iterator[str]:
    """``redis-server`` on a free loopback port, no persistence; its URL."""
    require_tools("redis-server")
    port = free_port()
    log = workdir / "redis.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        while b"Ready to accept" not in log.read_bytes():
            if process.poll() is not None:
                raise RuntimeError(log.read_text())
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.kill()
        process.wait()


def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and its live and reaped children (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU time of ``pid`` and its current children (the worker and its pool)."""
    total = cpu_seconds(pid)
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for child in children.read_text().split() if children.exists() else ():
        try:
            total += cpu_seconds(int(child))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


@contextmanager
def workers(
    broker: str, workdir: Path, count: int, concurrency: int = 1
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` ``esgz worker`` processes, fresh caches, ready; stopped on exit."""
    started = []
    logs = []
    try:
        for index in range(count):
            log = workdir / f"worker{index}-{uuid.uuid4().hex[:6]}.log"
            logs.append(log)
            with log.open("wb") as out:
                started.append(
                    subprocess.Popen(
                        esgz(
                            "worker",
                            "--broker",
                            broker,
                            "--concurrency",
                            str(concurrency),
                            "--cache-dir",
                            str(workdir / f"cache-{uuid.uuid4().hex}"),
                            "--name",
                            f"bench{index}@{uuid.uuid4().hex[:6]}",
                        ),
                        cwd=REPO_ROOT,
                        env=env(),
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        for log in logs:
            while b" ready." not in log.read_bytes():
                time.sleep(0.1)
        yield started
    finally:
        for process in started:
            os.killpg(process.pid, signal.SIGTERM)
        for process in started:
            process.wait()


def timed(argv: Sequence[str]) -> tuple[float, float, str]:
    """Run ``argv``; its wall time, CPU time and output (fails on a non-zero exit)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    process = subprocess.run(argv, cwd=REPO_ROOT, env=env(), capture_output=True, check=False)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{process.stderr.decode()[-3000:]}")
    return wall, cpu, process.stderr.decode() + process.stdout.decode()


def batch_config(path: Path, host: str, names: Sequence[str], cache_repo: str, run: str) -> Path:
    images = "".join(
        f"  - {{source: 'http://{host}/src/{name}:1', target: 'http://{host}/{run}/{name}:e'}}\n"
        for name in names
    )
    path.write_text(
        "defaults: {oci: true, no_optimize: true}\n"
        f"registries: {{'{host}': {{plain_http: true}}}}\n"
        f"cache: {{registry: 'http://{host}/{cache_repo}'}}\n"
        f"images:\n{images}"
    )
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--worker-concurrency", type=int, default=1, help="jobs at once per worker")
    parser.add_argument(
        "--no-in-process", action="store_true", help="skip the run without a broker"
    )
    parser.add_argument("--no-cache-bench", action="store_true", help="skip the cache hit runs")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    results: dict[str, object] = {"cores": os.cpu_count(), "images": args.images}
    base = single_image(total_mib=96, layer_mib=32)
    batch = batch_images(base, count=args.images, base_layers=2, slice_mib=8)
    with tempfile.TemporaryDirectory(prefix="esgz-bench-dist-") as tmp:
        workdir = Path(tmp)
        with run_registry(workdir / "registry") as registry, run_redis(workdir) as broker:
            host = registry.host
            names = [image.tag for image in batch]
            for image in batch:
                push_layout(image, f"{host}/src/{image.tag}:1")
            push_layout(base, f"{host}/src/single:1")
            rows = []
            for rep in range(args.reps):
                for count in [*([] if args.no_in_process else [0]), *args.workers]:
                    run = f"r{uuid.uuid4().hex[:8]}"
                    config = batch_config(
                        workdir / f"{run}.yaml", host, names, f"cache-{run}/esgz", run
                    )
                    if count == 0:
                        wall, cpu, log = timed(
                            esgz("run", str(config), "--cache-dir", str(workdir / run))
                        )
                        worker_cpu = 0.0
                    else:
                        with workers(broker, workdir, count, args.worker_concurrency) as fleet:
                            before = sum(tree_cpu(p.pid) for p in fleet)
                            wall, cpu, log = timed(esgz("run", str(config), "--broker", broker))
                            worker_cpu = sum(tree_cpu(p.pid) for p in fleet) - before
                    done = [tuple(map(int, m.groups())) for m in DONE_RE.finditer(log)]
                    converted = sum(d[0] for d in done)
                    row = {
                        "rep": rep,
                        "workers": count or "in-process",
                        "worker_concurrency": args.worker_concurrency if count else None,
                        "wall_s": round(wall, 2),
                        "images_per_min": round(60 * len(done) / wall, 1),
                        "client_cpu_s": round(cpu, 2),
                        "worker_cpu_s": round(worker_cpu, 2),
                        "layers_converted": converted,
                        "layers_cached": sum(d[1] for d in done),
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            results["throughput"] = rows

            hits = []
            for rep in range(0 if args.no_cache_bench else args.reps):
                cache = f"http://{host}/single-cache-{uuid.uuid4().hex[:8]}/esgz"
                for label in ("conversion", "registry-cache hit"):
                    target = f"http://{host}/single-out-{uuid.uuid4().hex[:8]}/x:e"
                    wall, cpu, log = timed(
                        esgz(
                            "convert",
                            "--oci",
                            "--plain-http",
                            "--cache-registry",
                            cache,
                            "--cache-dir",
                            str(workdir / uuid.uuid4().hex),
                            f"http://{host}/src/single:1",
                            target,
                        )
                    )
                    (done,) = [tuple(map(int, m.groups())) for m in DONE_RE.finditer(log)]
                    row = {
                        "rep": rep,
                        "what": label,
                        "wall_s": round(wall, 2),
                        "cpu_s": round(cpu, 2),
                        "converted": done[0],
                        "cached": done[1],
                    }
                    hits.append(row)
                    print(json.dumps(row), flush=True)
            results["cache"] = hits
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
