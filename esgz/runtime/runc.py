"""Drive an OCI runtime binary (``runc``, or ``crun`` which takes the same commands).

:class:`OciRuntime` wraps the commands esgz needs — ``create``, ``start``, ``state``,
``kill``, ``delete --force``, ``list`` — with a private ``--root`` state dir, so its
containers never clash with those of containerd or Docker. :meth:`OciRuntime.container`
is the async context manager that creates a container from a bundle, through the shim
(:mod:`esgz.runtime.shim`) that keeps the container's exit status, and always deletes it
on the way out (shielded from cancellation). The container's stdout and stderr are pipes,
read as they are written (:func:`read_lines`).

Container ids are unique (``esgz-`` + random hex), see :func:`new_container_id`.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from esgz.errors import SandboxError
from esgz.rundir import create_run_dir, remove_run_dir
from esgz.runtime import shim

__all__ = ["Container", "OciRuntime", "new_container_id", "read_lines", "runtime_message"]

log = logging.getLogger(__name__)

_CREATE_TIMEOUT = 60.0
_SHIM_EXIT_TIMEOUT = 10.0
_MAX_MESSAGE = 64 * 1024
_LOG_MESSAGE = re.compile(r'msg="((?:[^"\\]|\\.)*)"')


def runtime_message(text: str) -> str:
    """The ``msg="…"`` part of a runc/crun log line (the whole line if it has none)."""
    match = _LOG_MESSAGE.search(text)
    if match is None:
        return text.strip()
    try:
        value = json.loads(f'"{match.group(1)}"')
    except ValueError:
        return match.group(1)
    return str(value)


def new_container_id() -> str:
    """A fresh container id: ``esgz-`` and 12 random hex digits."""
    return "esgz-" + secrets.token_hex(6)


async def read_lines(stream: anyio.abc.ByteReceiveStream, on_line: Callable[[str], None]) -> None:
    """Call ``on_line`` with each line of ``stream`` (newline stripped) until its end."""
    pending = b""
    async for chunk in stream:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            on_line(line.decode(errors="replace").rstrip("\r"))
    if pending:
        on_line(pending.decode(errors="replace").rstrip("\r"))


@dataclass
class Container:
    """A created container: id, init pid, output streams and (later) its exit status."""

    id: str
    pid: int
    stdout: anyio.abc.ByteReceiveStream
    stderr: anyio.abc.ByteReceiveStream
    _control: BufferedByteReceiveStream
    exit_status: int | None = None
    _exited: anyio.Event = field(default_factory=anyio.Event)

    async def wait(self) -> int:
        """Wait for the container's init to exit; its status (128+N if killed by signal N)."""
        if self.exit_status is None:
            message = await _receive_message(self._control)
            status = message.get("status", -1) if message else -1
            self.exit_status = int(status)
            self._exited.set()
        return self.exit_status


async def _receive_message(control: BufferedByteReceiveStream) -> dict[str, Any] | None:
    try:
        line = await control.receive_until(b"\n", _MAX_MESSAGE)
    except (anyio.EndOfStream, anyio.IncompleteRead, anyio.ClosedResourceError):
        return None
    value = json.loads(line)
    return value if isinstance(value, dict) else None


class OciRuntime:
    """An OCI runtime binary with a private state dir.

    ``global_args`` go before the command, e.g. ``["--cgroup-manager=disabled"]`` for crun
    on hosts with a hybrid cgroup layout, which crun refuses.
    """

    def __init__(
        self, state_dir: Path, binary: str = "runc", global_args: Sequence[str] = ()
    ) -> None:
        self.state_dir = state_dir
        self.binary = binary
        self.global_args = list(global_args)

    def _command(self, *args: str) -> list[str]:
        return [self.binary, "--root", str(self.state_dir), *self.global_args, *args]

    async def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        """Run a runtime command; SandboxError with its stderr when it fails and ``check``."""
        try:
            result = await anyio.run_process(self._command(*args), check=False)
        except FileNotFoundError:
            raise SandboxError(f"OCI runtime {self.binary!r} not found") from None
        if check and result.returncode != 0:
            lines = result.stderr.decode(errors="replace").strip().splitlines()
            detail = runtime_message(lines[-1]) if lines else f"exit code {result.returncode}"
            raise SandboxError(f"{self.binary} {args[0]} failed: {detail}")
        return result

    async def state(self, container_id: str) -> dict[str, Any]:
        """``runtime state``: status, pid, bundle, ..."""
        result = await self.run("state", container_id)
        value = json.loads(result.stdout)
        if not isinstance(value, dict):
            raise SandboxError(f"{self.binary} state {container_id}: unexpected output")
        return value

    async def start(self, container_id: str) -> None:
        """Run the created container's process (the workload's first instruction)."""
        await self.run("start", container_id)

    async def kill(self, container_id: str, sig: signal.Signals, *, check: bool = False) -> bool:
        """Send ``sig`` to the container's init; whether the runtime accepted it."""
        result = await self.run("kill", container_id, str(int(sig)), check=check)
        return result.returncode == 0

    async def delete(self, container_id: str) -> None:
        """``delete --force`` (kills what still runs); a missing container is fine."""
        result = await self.run("delete", "--force", container_id, check=False)
        if result.returncode != 0:
            message = result.stderr.decode(errors="replace")
            if "not exist" in message:
                return
            raise SandboxError(f"{self.binary} delete {container_id} failed: {message.strip()}")

    async def list_containers(self) -> list[dict[str, Any]]:
        """The containers in the state dir."""
        result = await self.run("list", "--format", "json")
        value = json.loads(result.stdout or b"null")
        return value if isinstance(value, list) else []

    @asynccontextmanager
    async def container(
        self,
        container_id: str,
        bundle: Path,
        *,
        inherit_stdin: bool = False,
        terminal: bool = False,
    ) -> AsyncIterator[Container]:
        """Create ``container_id`` from ``bundle`` (not started); delete it on exit.

        Raises SandboxError (with the runtime's output) when creation fails. The container
        is created with its stdout/stderr on pipes and stdin from /dev/null, or this
        process's stdin with ``inherit_stdin``. With ``terminal`` (the spec must ask for
        one) the workload gets a pty whose output arrives on ``stdout``.
        """
        await anyio.to_thread.run_sync(lambda: self.state_dir.mkdir(parents=True, exist_ok=True))
        pid_file = bundle / "init.pid"
        console_dir: Path | None = None
        console_args: list[str] = []
        if terminal:
            # A short path: unix socket paths are limited to 108 bytes.
            console_dir = await anyio.to_thread.run_sync(create_run_dir, None, "esgz-tty-")
            console_args = ["--console-socket", str(console_dir / "sock")]
        parent_sock, child_sock = socket.socketpair()
        command = [
            sys.executable,
            "-I",
            "-S",
            str(Path(shim.__file__)),
            "--control-fd",
            str(child_sock.fileno()),
            "--pid-file",
            str(pid_file),
            *console_args,
            "--orphan-cleanup",
            json.dumps(self._command("delete", "--force", container_id)),
            "--",
            *self._command(
                "create", "--bundle", str(bundle), "--pid-file", str(pid_file), *console_args
            ),
            container_id,
        ]
        process: anyio.abc.Process | None = None
        stream: anyio.abc.SocketStream | None = None
        message: dict[str, Any] | None = None
        created = False
        try:
            with anyio.CancelScope(shield=True):
                try:
                    process = await anyio.open_process(
                        command,
                        stdin=None if inherit_stdin else subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        pass_fds=[child_sock.fileno()],
                        start_new_session=True,
                    )
                finally:
                    child_sock.close()
                stream = await anyio.abc.SocketStream.from_socket(parent_sock)
                control = BufferedByteReceiveStream(stream)
                with anyio.move_on_after(_CREATE_TIMEOUT):
                    message = await _receive_message(control)
                created = True  # from here on, delete in any case
            if process is None or message is None or message.get("event") != "created":
                output = await _drain(process) if process is not None else ""
                detail = (message.get("error") if message else None) or output or "no output"
                if not detail.startswith(f"{self.binary} create failed"):
                    detail = f"{self.binary} create failed: {detail}"
                raise SandboxError(detail)
            if process.stdout is None or process.stderr is None:
                raise SandboxError("container shim has no output pipes")
            container = Container(
                id=container_id,
                pid=int(message["pid"]),
                stdout=process.stdout,
                stderr=process.stderr,
                _control=control,
            )
            yield container
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self._cleanup(container_id, process, created)
                finally:
                    if stream is not None:
                        await stream.aclose()
                    else:
                        parent_sock.close()
                    if console_dir is not None:
                        await anyio.to_thread.run_sync(remove_run_dir, console_dir)

    async def _cleanup(
        self, container_id: str, process: anyio.abc.Process | None, created: bool
    ) -> None:
        try:
            if created:
                await self.delete(container_id)
        finally:
            if process is not None:
                with anyio.move_on_after(_SHIM_EXIT_TIMEOUT) as scope:
                    await process.wait()
                if scope.cancelled_caught:
                    log.warning("container shim did not exit; killing it")
                    process.kill()
                    await process.wait()
                await process.aclose()


async def _drain(process: anyio.abc.Process) -> str:
    """Whatever the shim's stdout/stderr hold (runc's error message), up to its exit."""
    chunks: list[str] = []

    async def collect(stream: anyio.abc.ByteReceiveStream | None) -> None:
        if stream is not None:
            await read_lines(stream, chunks.append)

    with anyio.move_on_after(_SHIM_EXIT_TIMEOUT):
        async with anyio.create_task_group() as group:
            group.start_soon(collect, process.stdout)
            group.start_soon(collect, process.stderr)
    lines = [line for line in chunks if line.strip()]
    return runtime_message(lines[-1]) if lines else ""
