"""Clean up what a profiler killed outright (SIGKILL, power loss) left in its work dir.

:func:`profile_workload` tears everything down on errors and cancellation, and the shim
deletes the container when its profiler dies; what only the profiler process itself can
remove then stays: the overlay mount, the temporary run dirs, half-unpacked layers and,
with ``--cni``, the named network namespace; and a rootless profiler's run dir
(``userns-*``: its processes and mounts die with its namespaces, its files stay).
:func:`recover_work_dir` removes those.

Call it only when no other profiler uses the same work dir (e.g. at start-up, under a
lock): it deletes every container of the work dir's runtime state dir.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

import anyio

from esgz.runtime.network import NETNS_DIR
from esgz.runtime.rootfs import unmount
from esgz.runtime.runc import OciRuntime
from esgz.runtime.userns import USERNS_RUN_PREFIX, id_mapping, remove_tree

__all__ = ["recover_work_dir"]

log = logging.getLogger(__name__)

_CONTAINER_ID = re.compile(r"^esgz-[0-9a-f]{12}$")
_TEMP_PREFIXES = ("rootfs-", "run-")


def _mounts_below(root: Path) -> list[Path]:
    """Mount points below ``root``, deepest first (from /proc/self/mountinfo)."""
    prefix = str(root).rstrip("/") + "/"
    targets = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            target = line.split()[4].replace("\\040", " ")
            if target.startswith(prefix):
                targets.append(Path(target))
    return sorted(targets, key=lambda p: len(p.parts), reverse=True)


def _esgz_netns() -> list[str]:
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if _CONTAINER_ID.match(n))
    except FileNotFoundError:
        return []


def _temp_dirs(work_dir: Path) -> list[Path]:
    found = [p for p in work_dir.iterdir() if p.name.startswith(_TEMP_PREFIXES)]
    layers = work_dir / "layers"
    if layers.is_dir():
        found += [p for p in layers.iterdir() if p.name.startswith(".tmp-")]
    return found


async def recover_work_dir(work_dir: Path, *, runtime: str = "runc") -> list[str]:
    """Delete leftover containers, mounts, temp dirs and netns; describe what was removed."""
    if not await anyio.to_thread.run_sync(work_dir.is_dir):
        return []
    removed: list[str] = []
    oci = OciRuntime(work_dir / "runc-state", binary=runtime)
    if await anyio.to_thread.run_sync((work_dir / "runc-state").is_dir):
        for container in await oci.list_containers():
            container_id = str(container.get("id"))
            await oci.delete(container_id)
            removed.append(f"container {container_id}")
    for name in await anyio.to_thread.run_sync(_esgz_netns):
        pids = await anyio.run_process(["ip", "netns", "pids", name], check=False)
        if pids.returncode == 0 and not pids.stdout.strip():
            await anyio.run_process(["ip", "netns", "del", name], check=False)
            removed.append(f"netns {name}")
    for target in await anyio.to_thread.run_sync(_mounts_below, work_dir):
        await unmount(target)
        removed.append(f"mount {target}")
    for path in await anyio.to_thread.run_sync(_temp_dirs, work_dir):
        if await anyio.to_thread.run_sync(os.path.ismount, path):
            continue
        await anyio.to_thread.run_sync(shutil.rmtree, path, True)
        removed.append(f"dir {path}")
    removed += await _remove_userns_runs(work_dir)
    for item in removed:
        log.warning("removed leftover %s", item)
    return removed


async def _remove_userns_runs(work_dir: Path) -> list[str]:
    """Run dirs of killed rootless profilers, whose files belong to ids mapped in a user
    namespace (removed from inside one, :func:`esgz.runtime.userns.remove_tree`)."""
    paths = await anyio.to_thread.run_sync(
        lambda: sorted(p for p in work_dir.glob(USERNS_RUN_PREFIX + "*") if p.is_dir())
    )
    if not paths:
        return []
    mapping = await anyio.to_thread.run_sync(id_mapping)
    for path in paths:
        await remove_tree(path, mapping)
    return [f"dir {path}" for path in paths]
