"""Clean up what dead esgz runs (SIGKILL, OOM, power loss) left behind.

:func:`profile_workload` tears everything down on errors and cancellation, and the shim
deletes the container when its profiler dies; what only the profiler process itself can
remove then stays: the overlay mount, the temporary run dirs, half-unpacked layers and,
with ``--cni``, the named network namespace.

Every run marks the directories it owns as its own for as long as it lives:
:func:`create_run_dir` makes a directory holding a lock file (``.esgz-run``, with the
owner's pid, process start time and host) that the run keeps locked (``flock``) until
:func:`remove_run_dir`; the kernel releases the lock when the process dies, however it
dies. :func:`sweep_dead_runs` then removes the run dirs whose lock nobody holds — after
unmounting what is mounted inside them and deleting their containers — together with the
leftover mounts of dead runs anywhere (``…/profile/rootfs-*/merged``) and their network
namespaces (:func:`~esgz.runtime.network.sweep_netns`); a live concurrent run is never
touched. :func:`recover_work_dir` cleans one profiler work dir that no process uses.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import anyio
import anyio.to_thread

from esgz.fsutil import mounts_below, remove_tree
from esgz.runtime.network import sweep_netns
from esgz.runtime.rootfs import unmount
from esgz.runtime.runc import OciRuntime

__all__ = [
    "LEGACY_RUN_DIR_SECONDS",
    "RUN_LOCK_NAME",
    "create_run_dir",
    "recover_work_dir",
    "remove_run_dir",
    "run_dir_owner",
    "sweep_dead_runs",
]

log = logging.getLogger(__name__)

#: The lock file inside every run dir.
RUN_LOCK_NAME = ".esgz-run"
#: Run dirs without a lock file (made by older esgz versions, or a run killed while
#: creating one) are only removed once they are this old.
LEGACY_RUN_DIR_SECONDS = 24 * 3600
_STAGING = ".new-"
_TEMP_PREFIXES = ("rootfs-", "run-")
_PROFILE_MOUNT = re.compile(r"^(?P<run>.+)/profile/rootfs-[^/]+/merged$")
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
    staging = Path(tempfile.mkdtemp(prefix=_STAGING + prefix, dir=parent))
    fd = os.open(staging / RUN_LOCK_NAME, _OPEN_FLAGS | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        owner = {
            "pid": os.getpid(),
            "start": _start_time(os.getpid()),
            "host": socket.gethostname(),
        }
        os.write(fd, json.dumps(owner).encode() + b"\n")
        final = parent / (prefix + staging.name[len(_STAGING) + len(prefix) :])
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


def _lock_if_dead(path: Path) -> int | None:
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


def _is_plain_dir(path: Path) -> bool:
    """A real directory (not a symlink to one) owned by this user."""
    try:
        st = path.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()


def _older_than(path: Path, seconds: float) -> bool:
    try:
        return path.lstat().st_mtime < time.time() - seconds
    except OSError:
        return False


def _unmount_sync(target: Path) -> None:
    result = subprocess.run(["umount", str(target)], capture_output=True, check=False)
    if result.returncode != 0 and os.path.ismount(target):
        subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)


def _delete_containers_sync(state_dir: Path) -> list[str]:
    """``runc delete --force`` every container of the runtime state dir ``state_dir``."""
    if not _is_plain_dir(state_dir) or not any(state_dir.iterdir()):
        return []
    listing = subprocess.run(
        ["runc", "--root", str(state_dir), "list", "-q"], capture_output=True, check=False
    )
    removed = []
    for container_id in listing.stdout.decode(errors="replace").split():
        subprocess.run(
            ["runc", "--root", str(state_dir), "delete", "--force", container_id],
            capture_output=True,
            check=False,
        )
        removed.append(f"container {container_id}")
    return removed


def _clean_dead_run(path: Path) -> list[str]:
    """Containers, mounts and files of the dead run dir ``path``; what was removed."""
    removed: list[str] = []
    for state_dir in (*path.glob("profile/runc-state"), *path.glob("tmp/run-*/profile/runc-state")):
        removed += _delete_containers_sync(state_dir)
    for target in mounts_below(path):
        _unmount_sync(target)
        removed.append(f"mount {target}")
    remove_tree(path, ignore_errors=True)
    removed.append(f"dir {path}")
    return removed


def _sweep_dir(directory: Path, prefix: str, *, legacy: bool) -> list[str]:
    """Remove the dead run dirs ``directory/<prefix>*`` (and stale staging dirs)."""
    removed: list[str] = []
    if directory.is_symlink():
        return []  # never sweep somewhere else
    for name in _list(directory):
        path = directory / name
        staging = name.startswith(_STAGING + prefix)
        if not (name.startswith(prefix) or staging) or not _is_plain_dir(path):
            continue
        fd = _lock_if_dead(path)
        if fd is not None:
            try:
                removed += _clean_dead_run(path)
            finally:
                os.close(fd)
        elif (
            (staging or legacy)
            and _older_than(path, LEGACY_RUN_DIR_SECONDS)
            and not os.path.lexists(path / RUN_LOCK_NAME)
        ):
            removed += _clean_dead_run(path)
    return removed


def _looks_like_private_store(path: Path) -> bool:
    """An ``esgz-*`` temp dir of an older esgz's ``--no-cache`` run (no lock file)."""
    return all(_is_plain_dir(path / sub) for sub in ("blobs", "conversions", "tmp"))


def _sweep_mounts() -> list[str]:
    """Overlay mounts of dead runs anywhere: ``<run dir>/profile/rootfs-*/merged``."""
    removed: list[str] = []
    runs = {
        Path(match.group("run"))
        for target in mounts_below(Path("/"))
        if (match := _PROFILE_MOUNT.match(str(target)))
    }
    for run in sorted(runs):
        fd = _lock_if_dead(run)
        if fd is None:
            continue
        try:
            removed += _clean_dead_run(run)
        finally:
            os.close(fd)
    return removed


def sweep_dead_runs(scratch_parent: Path | None = None, prefix: str = "run-") -> list[str]:
    """Remove what dead runs left; describe what was removed (blocking, needs no root).

    * the run dirs ``scratch_parent/<prefix>*`` whose lock is free (and lock-less ones
      older than :data:`LEGACY_RUN_DIR_SECONDS`);
    * the dead private stores of ``--no-cache`` runs (``$TMPDIR/esgz-*``);
    * the profiling mounts of dead runs wherever they are, with their run dirs;
    * as root, the network namespaces of dead runs.

    Symlinks are never followed; only directories owned by this user are considered.
    """
    removed: list[str] = []
    if scratch_parent is not None:
        removed += _sweep_dir(scratch_parent, prefix, legacy=True)
    temp = Path(tempfile.gettempdir())
    removed += _sweep_dir(temp, "esgz-", legacy=False)
    for name in _list(temp):
        path = temp / name
        if (
            name.startswith("esgz-")
            and not name.startswith("esgz-tty-")
            and _is_plain_dir(path)
            and not os.path.lexists(path / RUN_LOCK_NAME)
            and _older_than(path, LEGACY_RUN_DIR_SECONDS)
            and _looks_like_private_store(path)
        ):
            removed += _clean_dead_run(path)
    if os.geteuid() == 0:
        removed += _sweep_mounts()
        removed += [f"netns {name}" for name in sweep_netns()]
    for item in removed:
        log.warning("removed leftover %s of a dead run", item)
    return removed


def _list(directory: Path) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []


def _remove_quietly(path: Path) -> None:
    remove_tree(path, ignore_errors=True)


def _temp_dirs(work_dir: Path) -> list[Path]:
    found = [p for p in work_dir.iterdir() if p.name.startswith(_TEMP_PREFIXES)]
    layers = work_dir / "layers"
    if layers.is_dir():
        found += [p for p in layers.iterdir() if p.name.startswith(".tmp-")]
    return found


async def recover_work_dir(work_dir: Path, *, runtime: str = "runc") -> list[str]:
    """Delete the leftover containers, mounts and temp dirs of the profiler work dir
    ``work_dir``, and the network namespaces of dead runs; describe what was removed.

    Call it only when no profiler uses ``work_dir`` (e.g. at start-up, under a lock): it
    deletes every container of the work dir's runtime state dir.
    """
    if not await anyio.to_thread.run_sync(work_dir.is_dir):
        return []
    removed: list[str] = []
    oci = OciRuntime(work_dir / "runc-state", binary=runtime)
    if await anyio.to_thread.run_sync((work_dir / "runc-state").is_dir):
        for container in await oci.list_containers():
            container_id = str(container.get("id"))
            await oci.delete(container_id)
            removed.append(f"container {container_id}")
    removed += [f"netns {name}" for name in await anyio.to_thread.run_sync(sweep_netns)]
    for target in await anyio.to_thread.run_sync(mounts_below, work_dir):
        await unmount(target)
        removed.append(f"mount {target}")
    for path in await anyio.to_thread.run_sync(_temp_dirs, work_dir):
        if await anyio.to_thread.run_sync(os.path.ismount, path):
            continue
        await anyio.to_thread.run_sync(_remove_quietly, path)
        removed.append(f"dir {path}")
    for item in removed:
        log.warning("removed leftover %s", item)
    return removed
