"""The fanotify monitor alone: what each kind of mark sees (root only)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from esgz.runtime.fanotify import FanotifyMonitor

pytestmark = pytest.mark.root


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A fresh tmpfs (its own filesystem and mount) with a file and a bind mount of it."""
    if os.geteuid() != 0:
        pytest.skip("needs root: mount and fanotify")
    target = tmp_path / "fs"
    target.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(target)], check=True)
    try:
        (target / "dir").mkdir()
        (target / "dir" / "file.txt").write_text("x")
        (target / "other.txt").write_text("y")
        bind = tmp_path / "bind"
        bind.mkdir()
        subprocess.run(["mount", "--bind", str(target / "dir"), str(bind)], check=True)
        try:
            yield target
        finally:
            subprocess.run(["umount", str(bind)], check=True)
    finally:
        subprocess.run(["umount", str(target)], check=True)


def test_mount_mark_sees_only_that_mount(tmpfs: Path) -> None:
    bind = tmpfs.parent / "bind"
    with FanotifyMonitor(host_prefix=tmpfs) as monitor:
        monitor.mark_mount(tmpfs)
        (tmpfs / "other.txt").read_text()
        (bind / "file.txt").read_text()  # same filesystem, other mount
        (tmpfs / "dir" / "file.txt").read_text()
        (tmpfs / "other.txt").read_text()
        monitor.drain()
    # Paths under the host prefix lose it; each path once, first access first.
    assert monitor.paths == ["/other.txt", "/dir/file.txt"]
    assert monitor.events >= 2  # the kernel merges identical queued events


def test_filesystem_mark_sees_every_mount_of_the_filesystem(tmpfs: Path) -> None:
    bind = tmpfs.parent / "bind"
    with FanotifyMonitor(host_prefix=tmpfs) as monitor:
        monitor.mark_filesystem(tmpfs)
        (bind / "file.txt").read_text()
        (tmpfs / "other.txt").read_text()
        monitor.drain()
    # Through the bind mount the path is outside the prefix: kept as the kernel reports it.
    assert monitor.paths == [f"{bind}/file.txt", "/other.txt"]


def test_queue_overflow_is_reported(tmpfs: Path, caplog: pytest.LogCaptureFixture) -> None:
    with FanotifyMonitor(host_prefix=tmpfs) as monitor:
        monitor.mark_mount(tmpfs)
        # More distinct events than the kernel queues by default (16384), none read yet.
        for index in range(17000):
            os.close(os.open(tmpfs / f"f{index}", os.O_CREAT | os.O_WRONLY, 0o644))
        with caplog.at_level("WARNING"):
            monitor.drain()
    assert monitor.overflowed
    assert "overflowed" in caplog.text
    assert 16000 <= len(monitor.paths) < 17000


@pytest.mark.anyio
async def test_events_are_read_while_running(tmpfs: Path) -> None:
    monitor = FanotifyMonitor(host_prefix=tmpfs)
    monitor.open()
    try:
        monitor.mark_mount(tmpfs)
        async with anyio.create_task_group() as group:
            group.start_soon(monitor.run)
            await anyio.Path(tmpfs / "other.txt").read_text()
            with anyio.fail_after(5):
                while not monitor.paths:  # noqa: ASYNC110 - read by run(), not by stop()
                    await anyio.sleep(0.01)
            group.cancel_scope.cancel()
        await monitor.stop()
    finally:
        monitor.close()
    assert monitor.paths == ["/other.txt"]
