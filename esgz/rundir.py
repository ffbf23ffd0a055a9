"""Directories owned by a live process: made locked, unlocked only when it dies.

:func:`create_run_dir` makes a directory holding a lock file (``.esgz-run``, recording
the owner's pid, process start time and host) that the process keeps locked (``flock``)
until :func:`remove_run_dir`; the kernel releases the lock when the process dies,
however it dies (SIGKILL, OOM kill). :func:`lock_if_dead` tells a dead owner's directory
from a live one's, for :func:`esgz.runtime.recover.sweep_dead_runs`. The lock fd is not
inherited by child processes (``O_CLOEXEC``), so a container or shim outliving its run
does not keep the directory alive.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import tempfile
from pathlib import Path

from esgz.fsutil import remove_tree

__all__ = [
    "RUN_LOCK_NAME",
    "STAGING_PREFIX",
    "create_run_dir",
    "lock_if_dead",
    "remove_run_dir",
    "run_dir_owner",
]

#: The lock file inside every run dir.
RUN_LOCK_NAME = ".esgz-run"
#: Run dirs are made under this prefix + their final name, then renamed once locked.
STAGING_PREFIX = ".new-"
log = logging.getLogger(__name__)

_OPEN_FLAGS = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC

# Locks held by this process: run dir → lock fd.
_held: dict[Path, int] = {}


def _start_time(pid: int) -> int | None:
    """The start time (clock ticks after boot) of process ``pid``, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its end.
    fields = text[text.rindex(b")") + 2 :].split()
    return int(fields[19])


def create_run_dir(parent: Path | None, prefix: str) -> Path:
    """A fresh directory ``parent/<prefix><random>`` locked by this process (blocking).

    ``parent`` None is the temp dir (``$TMPDIR``, ``/tmp``, ...). It appears under its
    final name already locked (made under a staging name, locked, then renamed), so a
    concurrent :func:`sweep_dead_runs` never sees it unlocked.
    """
    if parent is None:
        parent = Path(tempfile.gettempdir())
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX + prefix, dir=parent))
    fd = os.open(staging / RUN_LOCK_NAME, _OPEN_FLAGS | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        owner = {
            "pid": os.getpid(),
            "start": _start_time(os.getpid()),
            "host": socket.gethostname(),
        }
        os.write(fd, json.dumps(owner).encode() + b"\n")
        final = parent / (prefix + staging.name[len(STAGING_PREFIX) + len(prefix) :])
        os.rename(staging, final)
    except BaseException:
        os.close(fd)
        remove_tree(staging, ignore_errors=True)
        raise
    _held[final] = fd
    return final


def remove_run_dir(path: Path) -> None:
    """Delete a directory of :func:`create_run_dir` (whatever is left in it), then unlock it.

    Blocking; errors are logged, not raised: a mount left inside stays, with the rest of
    the dir, for :func:`sweep_dead_runs` of a later run.
    """
    try:
        remove_tree(path)
    except OSError as exc:
        log.warning("cannot remove %s: %s", path, exc)
        remove_tree(path, ignore_errors=True)
    finally:
        fd = _held.pop(path, None)
        if fd is not None:
            os.close(fd)


def run_dir_owner(path: Path) -> dict[str, object] | None:
    """What the lock file of ``path`` says about its owner (pid, start, host), if readable."""
    try:
        fd = os.open(path / RUN_LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        value = json.loads(os.read(fd, 4096) or b"null")
    except ValueError:
        return None
    finally:
        os.close(fd)
    return value if isinstance(value, dict) else None


def _owner_alive(owner: dict[str, object] | None) -> bool:
    """Whether the recorded owner still runs on this host (a lock is the main proof)."""
    if owner is None or owner.get("host") != socket.gethostname():
        return False
    pid, start = owner.get("pid"), owner.get("start")
    return isinstance(pid, int) and start is not None and _start_time(pid) == start


def lock_if_dead(path: Path) -> int | None:
    """The lock fd of the dead run dir ``path`` (now locked by us), or None if not dead.

    None too when ``path`` has no lock file (not a run dir, an old version's, or one
    being made).
    """
    try:
        fd = os.open(path / RUN_LOCK_NAME, _OPEN_FLAGS)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None  # held: the run is alive
    if _owner_alive(run_dir_owner(path)):
        os.close(fd)
        return None
    return fd
