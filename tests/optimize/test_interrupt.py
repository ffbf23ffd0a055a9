"""Ctrl-C while the workload runs: one line, exit 130, no mount, container or temp dir left."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.cli.process import read_until, start_esgz
from tests.fixtures.images import SampleImage
from tests.optimize.support import read_layers, require_sandbox

pytestmark = [pytest.mark.root, pytest.mark.slow]

SLEEP = "987"  # an unusual duration, to find the workload's process


def sleeping_workloads() -> list[int]:
    """Pids of processes running ``sleep 987``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[:2] == [b"sleep", SLEEP.encode()]:
            pids.append(int(proc.name))
    return pids


def mounts_below(path: Path) -> list[str]:
    targets = subprocess.run(
        ["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True, check=True
    ).stdout.split()
    return [target for target in targets if target.startswith(str(path))]


def test_ctrl_c_while_profiling(busybox_image: SampleImage, tmp_path: Path) -> None:
    require_sandbox()
    cache = tmp_path / "cache"
    out = tmp_path / "out"
    process = start_esgz(
        "optimize",
        "--cache-dir",
        str(cache),
        "--period",
        "120",
        "--args",
        f'["echo started; exec sleep {SLEEP}"]',
        busybox_image.reference,
        f"local://{out}:x",
    )
    read_until(process.stderr, "workload stdout: started")
    assert sleeping_workloads()
    assert mounts_below(cache)
    process.send_signal(signal.SIGINT)
    started = time.monotonic()
    stdout, stderr = process.communicate(timeout=60)
    print(f"interrupted run ended {time.monotonic() - started:.2f}s after SIGINT")
    assert process.returncode == 130, stderr.decode()
    assert stderr.decode().strip().splitlines() == ["esgz: interrupted"]
    assert stdout == b""
    assert mounts_below(cache) == []
    assert list((cache / "tmp").iterdir()) == []
    assert sleeping_workloads() == []
    assert not (out / "index.json").exists()


def test_ctrl_c_with_wait_on_signal_ends_the_workload_only(
    busybox_image: SampleImage, tmp_path: Path
) -> None:
    """With --wait-on-signal, Ctrl-C stops the workload and the image is still written."""
    require_sandbox()
    out = tmp_path / "out"
    process = start_esgz(
        "optimize",
        "--no-cache",
        "--oci",
        "--wait-on-signal",
        "--log-format",
        "json",
        "--args",
        f'["cat /data/small.txt; echo started; exec sleep {SLEEP}"]',
        busybox_image.reference,
        f"local://{out}:x",
    )
    seen = read_until(process.stdout, '"line":"started"')
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr.decode()
    events = [json.loads(line) for line in [*seen, *stdout.decode().splitlines()]]
    (profiled,) = [event for event in events if event["event"] == "image_profiled"]
    assert profiled["stopped"] == "signal"
    assert sleeping_workloads() == []
    ((_, (_, data)),) = read_layers(out, "x")
    assert "data/small.txt" in data.prioritized
