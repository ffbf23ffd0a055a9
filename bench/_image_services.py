"""Daemons for the image benchmark: a plain-HTTP registry and a private containerd.

Both run as child processes with everything (storage, root, state, socket, config, log) in a
directory the caller owns; leaving the context manager stops the daemon (SIGTERM, then
SIGKILL), also when the ``with`` body raised or was interrupted by Ctrl-C. The containerd
helper also unmounts whatever its snapshotter left mounted under its root.

:class:`DaemonUsage` reads a daemon's CPU time and peak RSS from ``/proc``, so that the work
a client hands to a daemon (containerd unpacking and serving content, the registry storing
blobs) is counted next to the client's own.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml


class ServiceError(RuntimeError):
    """A daemon could not be started or a tool it needs is missing."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_tools(*names: str) -> None:
    """Raise :class:`ServiceError` naming the first of ``names`` not on ``PATH``."""
    for name in names:
        if shutil.which(name) is None:
            raise ServiceError(f"{name} not found on PATH (see bench/README.md for the packages)")


@dataclass(frozen=True)
class DaemonUsage:
    """CPU time and peak RSS of a running process, read from ``/proc/<pid>``."""

    cpu_s: float
    peak_rss: int

    @classmethod
    def of(cls, pid: int) -> DaemonUsage:
        """Current totals of ``pid`` (its user + system time, ``VmHWM``)."""
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        peak = 0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) * 1024
        return cls(cpu_s=ticks / os.sysconf("SC_CLK_TCK"), peak_rss=peak)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _log_tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-2000:]
    except OSError:
        return ""


# --- registry -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Registry:
    """A running plain-HTTP registry."""

    host: str  # 127.0.0.1:<port>
    pid: int

    def url(self, repository: str) -> str:
        """``http://<host>/<repository>`` (an esgz reference with plain HTTP)."""
        return f"http://{self.host}/{repository}"

    def ref(self, repository: str) -> str:
        """``<host>/<repository>`` (a containerd / skopeo name)."""
        return f"{self.host}/{repository}"


@contextmanager
def run_registry(workdir: Path) -> Iterator[Registry]:
    """Start Debian's ``docker-registry serve`` on a free loopback port (no TLS, no auth)."""
    require_tools("docker-registry")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    storage = workdir / "storage"
    storage.mkdir(exist_ok=True)
    config = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": "esgz-bench"},
    }
    config_path = workdir / "config.yml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = workdir / "registry.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["docker-registry", "serve", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                raise ServiceError(f"docker-registry exited early:\n{_log_tail(log_path)}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise ServiceError(
                        f"docker-registry not ready:\n{_log_tail(log_path)}"
                    ) from None
                time.sleep(0.05)
        yield Registry(host=f"127.0.0.1:{port}", pid=process.pid)
    finally:
        _stop(process)


# --- containerd ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Containerd:
    """A running private containerd daemon and how ``ctr-remote`` reaches it."""

    socket: Path
    pid: int

    def ctr_remote(self, *args: str) -> list[str]:
        """The argv of ``ctr-remote --address <socket> <args…>``."""
        return ["ctr-remote", "--address", str(self.socket), *args]


def _containerd_config(root: Path) -> str:
    return (
        "version = 2\n"
        f'root = "{root}/root"\n'
        f'state = "{root}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        "[grpc]\n"
        f'  address = "{root}/containerd.sock"\n'
        "[ttrpc]\n"
        f'  address = "{root}/containerd.sock.ttrpc"\n'
        "[debug]\n"
        f'  address = "{root}/debug.sock"\n'
        '  level = "warn"\n'
        '[plugins."io.containerd.internal.v1.opt"]\n'
        f'  path = "{root}/opt"\n'
    )


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root`` (deepest first), from ``/proc/self/mounts``."""
    prefix = str(root.resolve())
    points: list[str] = []
    with open("/proc/self/mounts") as f:
        for line in f:
            point = line.split()[1].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    return sorted(points, key=len, reverse=True)


def unmount_all(root: Path) -> None:
    """Lazily unmount everything mounted under ``root`` (left by a killed snapshotter)."""
    for point in mounts_under(root):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


@contextmanager
def run_containerd(workdir: Path) -> Iterator[Containerd]:
    """Start ``containerd`` (overlayfs snapshotter, CRI disabled) with its own socket."""
    require_tools("containerd", "ctr-remote")
    if os.geteuid() != 0:
        raise ServiceError("containerd needs root (overlayfs snapshots, its own state dirs)")
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "config.toml"
    config_path.write_text(_containerd_config(workdir))
    sock = workdir / "containerd.sock"
    log_path = workdir / "containerd.log"
    argv: Sequence[str] = [
        "containerd",
        "--config",
        str(config_path),
        "--root",
        str(workdir / "root"),
        "--state",
        str(workdir / "state"),
        "--address",
        str(sock),
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    daemon = Containerd(socket=sock, pid=process.pid)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise ServiceError(f"containerd exited early:\n{_log_tail(log_path)}")
            if sock.exists():
                probe = subprocess.run(
                    daemon.ctr_remote("version"), capture_output=True, check=False, timeout=10
                )
                if probe.returncode == 0:
                    break
            if time.monotonic() > deadline:
                raise ServiceError(f"containerd not ready:\n{_log_tail(log_path)}")
            time.sleep(0.1)
        yield daemon
    finally:
        _stop(process)
        unmount_all(workdir)
