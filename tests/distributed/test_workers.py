"""Batches on real ``esgz worker`` processes through a real redis-server."""

from __future__ import annotations

import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.cli.outputcheck import check_converted, manifests_of
from tests.cli.process import esgz_command
from tests.fixtures.cache import REPO_ROOT
from tests.fixtures.faultproxy import Fault, run_fault_proxy
from tests.fixtures.images import SampleImage
from tests.fixtures.registry import RegistryServer, free_port
from tests.fixtures.workers import RedisServer, Worker, run_redis, start_worker, workers

DONE_RE = re.compile(
    r"done: (\S+)@(sha256:[0-9a-f]{64}) \(converted (\d+), cached (\d+), reused (\d+)\)"
)


@pytest.fixture(scope="module")
def pushed(
    plain_registry: RegistryServer, busybox_image: SampleImage, multiplatform_image: SampleImage
) -> RegistryServer:
    plain_registry.skopeo_push_layout(busybox_image.layout, "w/busybox:1", tag="latest")
    # the multi-platform image's host manifest is the busybox image: the same base layers
    plain_registry.skopeo_push_layout(multiplatform_image.layout, "w/multi:1", tag="latest")
    return plain_registry


def pipeline(tmp_path: Path, host: str, targets: list[tuple[str, str]], extra: str = "") -> Path:
    path = tmp_path / f"batch-{uuid.uuid4().hex[:6]}.yaml"
    images = "".join(f"  - {{source: '{s}', target: '{t}'}}\n" for s, t in targets)
    path.write_text(
        "defaults: {oci: true, no_optimize: true}\n"
        f"registries: {{'{host}': {{plain_http: true}}}}\n{extra}images:\n{images}"
    )
    return path


def run_batch(config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        esgz_command("run", str(config), *args),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_for(worker: Worker, text: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while text not in worker.text():
        assert time.monotonic() < deadline, worker.text()
        time.sleep(0.1)


def done_lines(result: subprocess.CompletedProcess[str]) -> list[tuple[str, int, int]]:
    return [(m[1], int(m[3]), int(m[4])) for m in DONE_RE.finditer(result.stderr)]


def test_batch_across_two_workers(
    pushed: RegistryServer, redis_server: RedisServer, busybox_image: SampleImage, tmp_path: Path
) -> None:
    """Four images over two workers (asyncio and trio), separate local caches; the same
    lines and exit code as a local run; then fresh workers convert nothing."""
    host = pushed.host
    run = uuid.uuid4().hex[:6]
    cache = f"cache: {{registry: 'http://{host}/cache{run}/esgz'}}\n"
    targets = [(f"http://{host}/w/busybox:1", f"http://{host}/d{run}/img{i}:e") for i in range(4)]
    config = pipeline(tmp_path, host, targets, cache)
    with (
        workers(redis_server.url, tmp_path / "a", "one") as (one,),
        workers(redis_server.url, tmp_path / "a", "two", args=("--backend", "trio")) as (two,),
    ):
        result = run_batch(config, "--broker", redis_server.url)
        assert result.returncode == 0, result.stderr
        assert one.jobs_done() >= 1
        assert two.jobs_done() >= 1
        assert one.jobs_done() + two.jobs_done() == 4
    done = done_lines(result)
    assert sorted(target for target, _, _ in done) == sorted(f"{t}" for _, t in targets)
    assert (
        sum(converted for _, converted, _ in done) >= 2
    )  # the two layers, once per worker at most
    digests = {line.split()[-1] for line in result.stdout.splitlines()}
    assert len(result.stdout.splitlines()) == 4
    assert len(digests) == 1
    pulled = tmp_path / "pulled"
    pushed.skopeo_pull_layout(f"d{run}/img3:e", pulled, tag="e", all_platforms=False)
    _, (output,) = manifests_of(pulled, "e")
    check_converted(pulled, output, [layer.files for layer in busybox_image.layers])

    # a second run on fresh workers (empty local caches): everything from the registry cache
    with workers(redis_server.url, tmp_path / "b", "three", "four"):
        again = run_batch(config, "--broker", redis_server.url)
    assert again.returncode == 0, again.stderr
    assert [(c, k) for _, c, k in done_lines(again)] == [(0, 2)] * 4


def test_shared_base_converted_once_across_the_fleet(
    pushed: RegistryServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    host = pushed.host
    run = uuid.uuid4().hex[:6]
    cache = f"cache: {{registry: '{host}/cache{run}/esgz'}}\n"
    targets = [
        (f"http://{host}/w/busybox:1", f"http://{host}/s{run}/busybox:e"),
        (f"http://{host}/w/multi:1", f"http://{host}/s{run}/multi:e"),
    ]
    config = pipeline(tmp_path, host, targets, cache)
    with workers(redis_server.url, tmp_path, "one", "two") as fleet:
        result = run_batch(config, "--broker", redis_server.url)
        assert [w.jobs_done() for w in fleet] == [1, 1]
    assert result.returncode == 0, result.stderr
    done = done_lines(result)
    assert len(done) == 2
    assert sum(c for _, c, _ in done) == 2  # two distinct layers, each converted once
    assert sum(k for _, _, k in done) == 2


@pytest.mark.slow  # ~20 s: waits for the visibility timeout
def test_worker_killed_mid_job(
    pushed: RegistryServer, redis_server: RedisServer, busybox_image: SampleImage, tmp_path: Path
) -> None:
    """SIGKILL of a whole worker mid-job: Redis delivers the job again (visibility
    timeout) and another worker completes it; the run succeeds with the usual lines."""
    run = uuid.uuid4().hex[:6]
    with run_fault_proxy(pushed.host) as proxy:
        # the first worker's fetch of a source blob hangs: it is mid-job when killed
        proxy.add(Fault("delay", r"/blobs/sha256:", method="GET", seconds=30, times=1))
        host = proxy.host
        config = pipeline(
            tmp_path,
            host,
            [(f"http://{host}/w/busybox:1", f"http://{host}/k{run}/busybox:e")],
            "executor: {visibility_timeout: 10}\n",
        )
        args = ("--visibility-timeout", "10")
        doomed = start_worker(redis_server.url, tmp_path, "doomed", *args)
        client = subprocess.Popen(
            esgz_command("run", str(config), "--broker", redis_server.url),
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for(doomed, "] received")
            time.sleep(2)  # its job is now waiting for the delayed source blobs
            doomed.kill()
            killed_at = time.monotonic()
            with workers(redis_server.url, tmp_path, "rescuer", args=args) as (rescuer,):
                stdout, stderr = client.communicate(timeout=90)
                assert rescuer.jobs_done() == 1
        finally:
            doomed.kill()
            if client.poll() is None:
                client.kill()
    assert client.returncode == 0, stderr
    assert time.monotonic() - killed_at < 60
    assert [
        (c, k) for _, c, k in done_lines(subprocess.CompletedProcess([], 0, stdout, stderr))
    ] == [(2, 0)]
    assert stdout.split()[0] == f"http://{host}/k{run}/busybox:e"


def test_broker_unreachable_and_gone(pushed: RegistryServer, tmp_path: Path) -> None:
    """No broker: one line, exit 1. A broker that goes away mid-run: the same."""
    host = pushed.host
    config = pipeline(tmp_path, host, [(f"http://{host}/w/busybox:1", f"http://{host}/g/x:e")])
    closed = f"redis://127.0.0.1:{free_port()}/0"
    result = run_batch(config, "--broker", closed)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"esgz: error: broker {closed}:"), line

    with run_redis(tmp_path / "redis") as server:
        client = subprocess.Popen(  # no workers: its job stays queued
            esgz_command("run", str(config), "--broker", server.url),
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(3)
        server.stop()
        _, stderr = client.communicate(timeout=60)
    assert client.returncode == 1
    assert stderr.strip().splitlines()[-1].startswith(f"esgz: error: broker {server.url}:")
    assert len(stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_ctrl_c_revokes_the_jobs(
    pushed: RegistryServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:6]
    with run_fault_proxy(pushed.host) as proxy:
        proxy.add(Fault("delay", r"/blobs/sha256:", method="GET", seconds=20, times=4))
        host = proxy.host
        targets = [(f"http://{host}/w/busybox:1", f"http://{host}/c{run}/b{i}:e") for i in range(3)]
        config = pipeline(tmp_path, host, targets)
        with workers(redis_server.url, tmp_path, "busy") as (busy,):
            client = subprocess.Popen(
                esgz_command("run", str(config), "--broker", redis_server.url),
                cwd=REPO_ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            wait_for(busy, "] received")
            time.sleep(2)  # its job is now waiting for the delayed source blobs
            client.send_signal(signal.SIGINT)
            _, stderr = client.communicate(timeout=30)
            assert client.returncode == 130, stderr
            deadline = time.monotonic() + 20
            while "revoked" not in busy.text().lower():
                assert time.monotonic() < deadline, busy.text()
                time.sleep(0.2)
            time.sleep(2)
            assert busy.jobs_done() == 0
    for i in range(3):
        answer = httpx.head(
            f"http://{pushed.host}/v2/c{run}/b{i}/manifests/e",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        )
        assert answer.status_code == 404  # nothing was tagged
