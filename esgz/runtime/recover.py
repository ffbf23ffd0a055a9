"""Clean up what dead esgz runs (SIGKILL, OOM, power loss) left behind.

:func:`profile_workload` tears everything down on errors and cancellation, and the shim
deletes the container when its profiler dies; what only the profiler process itself can
remove then stays: the overlay mount, the temporary run dirs, half-unpacked layers and,
with ``--cni``, the named network namespace.

Every run marks the directories it owns as its own for as long as it lives
(:mod:`esgz.rundir`: a lock file held with ``flock``, released by the kernel when the
process dies, however it dies). :func:`sweep_dead_runs` removes the run dirs whose lock
nobody holds — after unmounting what is mounted inside them and deleting their
containers — together with the leftover mounts of dead runs anywhere
(``…/profile/rootfs-*/merged``) and their network namespaces
(:func:`~esgz.runtime.network.sweep_netns`); a live concurrent run is never touched.
:func:`recover_work_dir` cleans one profiler work dir that no process uses.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import anyio
import anyio.to_thread

from esgz.fsutil import mounts_below, remove_tree
from esgz.rundir import RUN_LOCK_NAME, STAGING_PREFIX, lock_if_dead
from esgz.runtime.network import sweep_netns
from esgz.runtime.rootfs import unmount
from esgz.runtime.runc import OciRuntime

__all__ = ["LEGACY_RUN_DIR_SECONDS", "recover_work_dir", "sweep_dead_runs"]

log = logging.getLogger(__name__)

#: Run dirs without a lock file (made by older esgz versions, or a run killed while
#: creating one) are only removed once they are this old.
LEGACY_RUN_DIR_SECONDS = 24 * 3600
_TEMP_PREFIXES = ("rootfs-", "run-")
_PROFILE_MOUNT = re.compile(r"^(?P<run>.+)/profile/rootfs-[^/]+/merged$")


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
    """Containers, mounts and files of the dead run dir ``path``; what was removed.

    Never raises: what cannot be removed (no ``runc`` or ``umount`` here, a busy mount)
    is logged and left for a later run, so leftovers never stop a run.
    """
    removed: list[str] = []
    try:
        for state_dir in (
            *path.glob("profile/runc-state"),
            *path.glob("tmp/run-*/profile/runc-state"),
        ):
            removed += _delete_containers_sync(state_dir)
        for target in mounts_below(path):
            _unmount_sync(target)
            removed.append(f"mount {target}")
    except OSError as exc:
        log.warning("cannot clean up %s (a dead run's): %s", path, exc)
        return removed
    remove_tree(path, ignore_errors=True)
    if os.path.lexists(path):
        log.warning("cannot remove all of %s (a dead run's); will try again next time", path)
    else:
        removed.append(f"dir {path}")
    return removed


def _sweep_dir(directory: Path, prefix: str, *, legacy: bool) -> list[str]:
    """Remove the dead run dirs ``directory/<prefix>*`` (and stale staging dirs)."""
    removed: list[str] = []
    if directory.is_symlink():
        return []  # never sweep somewhere else
    for name in _list(directory):
        path = directory / name
        staging = name.startswith(STAGING_PREFIX + prefix)
        if not (name.startswith(prefix) or staging) or not _is_plain_dir(path):
            continue
        fd = lock_if_dead(path)
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
        fd = lock_if_dead(run)
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
        try:
            removed += _sweep_mounts()
            removed += [f"netns {name}" for name in sweep_netns()]
        except OSError as exc:  # e.g. no `ip` here: never a reason to fail a run
            log.warning("cannot sweep the mounts and netns of dead runs: %s", exc)
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
    deletes every container of the work dir's runtime state dir, and also the ``esgz-*``
    namespaces without a lock file that no process is in.
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
    netns = await anyio.to_thread.run_sync(lambda: sweep_netns(unlocked=True))
    removed += [f"netns {name}" for name in netns]
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
