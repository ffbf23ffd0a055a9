"""A tiny per-container shim that owns the container process and reports its exit status.

``runc create`` leaves the container's init process behind, reparented to the nearest
child subreaper. This shim, started with its stdio being the container's stdio, makes
itself that subreaper, runs ``runc create`` (whose stdio the container inherits), tells
its parent the outcome and the init pid over a control socket, then waits for the
container to exit and reports the exit status, so that the caller neither needs to be a
subreaper itself nor loses the status. Messages are JSON lines::

    {"event": "created", "pid": 1234}
    {"event": "create-failed", "returncode": 1}
    {"event": "exited", "status": 0}        # 128+N when killed by signal N

With ``--console-socket PATH`` (terminal mode) the shim listens on PATH, receives the
pty master that ``create --console-socket PATH`` sends, and relays it: terminal output
to its stdout, its stdin to the terminal.

If the control socket closes while the container still runs (the parent died), the
shim runs the ``--orphan-cleanup`` command (``delete --force``), so no workload outlives
its profiler.

Run as ``python shim.py --control-fd N --pid-file P [--console-socket S]
[--orphan-cleanup JSON] -- <create argv>``.
Only the standard library is used, so it starts fast.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading

_PR_SET_CHILD_SUBREAPER = 36


def _send(control: int, **message: object) -> None:
    data = (json.dumps(message) + "\n").encode()
    # The parent may have gone away; keep reaping anyway.
    with contextlib.suppress(OSError):
        os.write(control, data)


def _exit_status(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _wait_for(pid: int) -> int | None:
    """Reap children until ``pid`` exits; its exit status (None if it is not our child)."""
    while True:
        try:
            reaped, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return None
        except InterruptedError:
            continue
        if reaped == pid:
            return _exit_status(status)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _copy_out(master: int) -> None:
    """Terminal output → our stdout, until the container's side of the pty is closed."""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO once no process holds the pty's other side
            return
        if not data:
            return
        try:
            _write_all(1, data)
        except OSError:
            return


def _copy_in(master: int) -> None:
    """Our stdin → the terminal; end of input becomes ^D, as a terminal sends it."""
    while True:
        try:
            data = os.read(0, 65536)
        except OSError:
            return
        try:
            _write_all(master, data or b"\x04")
        except OSError:
            return
        if not data:
            return


def _create_with_console(command: list[str], socket_path: str) -> tuple[int, int | None]:
    """Run ``runtime create --console-socket``; receive the pty master it sends us."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(1)
    listener.settimeout(0.1)
    process = subprocess.Popen(command)
    master: int | None = None
    try:
        while master is None:
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                if process.poll() is not None:
                    break
                continue
            with connection:
                connection.settimeout(30)
                _, fds, _, _ = socket.recv_fds(connection, 4096, 1)
                master = fds[0] if fds else None
    finally:
        listener.close()
    return process.wait(), master


def _watch_parent(control: int, cleanup: list[str], done: threading.Event) -> None:
    """When the parent goes away before the container exits, delete the container."""
    while True:
        try:
            data = os.read(control, 4096)
        except InterruptedError:
            continue
        except OSError:
            data = b""
        if not data:
            break
    if not done.is_set() and cleanup:
        subprocess.call(cleanup, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the shim process."""
    parser = argparse.ArgumentParser(prog="esgz-shim")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--pid-file", required=True)
    parser.add_argument("--console-socket")
    parser.add_argument("--orphan-cleanup", help="JSON argv run if the parent goes away")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    control = args.control_fd
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        _send(control, event="create-failed", returncode=-1, error="prctl failed")
        return 1
    master: int | None = None
    try:
        if args.console_socket:
            returncode, master = _create_with_console(command, args.console_socket)
        else:
            returncode = subprocess.call(command)
    except OSError as err:
        _send(control, event="create-failed", returncode=-1, error=str(err))
        return 1
    if returncode != 0:
        _send(control, event="create-failed", returncode=returncode)
        return 0
    try:
        with open(args.pid_file) as pid_file:
            pid = int(pid_file.read().strip())
    except (OSError, ValueError) as err:
        _send(control, event="create-failed", returncode=-1, error=f"no pid file: {err}")
        return 1
    output: threading.Thread | None = None
    if master is not None:
        output = threading.Thread(target=_copy_out, args=(master,), daemon=True)
        output.start()
        threading.Thread(target=_copy_in, args=(master,), daemon=True).start()
    exited = threading.Event()
    cleanup = json.loads(args.orphan_cleanup) if args.orphan_cleanup else []
    watcher = threading.Thread(target=_watch_parent, args=(control, cleanup, exited), daemon=True)
    watcher.start()
    _send(control, event="created", pid=pid)
    status = _wait_for(pid)
    exited.set()
    if output is not None:
        output.join(timeout=2)  # let the last output through
    _send(control, event="exited", status=-1 if status is None else status)
    # Reap whatever else was reparented to us, without blocking on it.
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
