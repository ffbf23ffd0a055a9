"""The container rootfs: unpacked layers stacked read-only under overlayfs.

:func:`overlay_rootfs` mounts the layer directories as overlayfs lower dirs (top layer
first) with a temporary upper and work dir, so whatever the workload writes lands in the
temporary dir and the cached layers stay untouched. On exit — normal, error or
cancellation — the mount is removed (retried while busy, lazily detached as a last
resort) and the temporary dirs deleted; teardown runs shielded from cancellation.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

from esgz.errors import SandboxError
from esgz.fsutil import remove_tree

__all__ = ["is_mount_point", "overlay_rootfs", "unmount"]

log = logging.getLogger(__name__)

# The kernel takes at most one page of mount options.
_MAX_OPTIONS = 4000
_UNMOUNT_ATTEMPTS = 10
_UNMOUNT_DELAY = 0.05


async def is_mount_point(path: Path) -> bool:
    """Whether ``path`` is a mount point (checked in a worker thread)."""
    return await anyio.to_thread.run_sync(os.path.ismount, path)


def _lowerdir_option(lower_dirs: Sequence[Path]) -> tuple[str, Path | None]:
    """``lowerdir=…`` (top layer first), relative to a common dir when too long."""
    ordered = [str(d) for d in reversed(lower_dirs)]
    option = "lowerdir=" + ":".join(ordered)
    if len(option) < _MAX_OPTIONS // 2:
        return option, None
    common = Path(os.path.commonpath(ordered))
    relative = [os.path.relpath(d, common) for d in ordered]
    return "lowerdir=" + ":".join(relative), common


async def _mount_overlay(lower_dirs: Sequence[Path], upper: Path, work: Path, target: Path) -> None:
    for directory in lower_dirs:
        if any(c in str(directory) for c in ":,"):
            raise SandboxError(f"layer directory {directory} has ':' or ',' in its path")
    lower, cwd = _lowerdir_option(lower_dirs)
    options = f"{lower},upperdir={upper},workdir={work}"
    if len(options) > _MAX_OPTIONS:
        raise SandboxError(f"too many layers ({len(lower_dirs)}) for one overlay mount")
    command = ["mount", "-t", "overlay", "overlay", "-o", options, str(target)]
    result = await anyio.run_process(command, cwd=cwd, check=False)
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip()
        raise SandboxError(f"cannot mount the overlay rootfs: {message}")


async def unmount(target: Path) -> None:
    """Unmount ``target``, retrying while busy; detach lazily if it stays busy."""
    message = ""
    for _ in range(_UNMOUNT_ATTEMPTS):
        if not await is_mount_point(target):
            return
        result = await anyio.run_process(["umount", str(target)], check=False)
        if result.returncode == 0:
            return
        message = result.stderr.decode(errors="replace").strip()
        await anyio.sleep(_UNMOUNT_DELAY)
    log.warning("%s stays busy (%s); detaching it lazily", target, message)
    result = await anyio.run_process(["umount", "-l", str(target)], check=False)
    if result.returncode != 0 and await is_mount_point(target):
        message = result.stderr.decode(errors="replace").strip()
        raise SandboxError(f"cannot unmount {target}: {message}")


@asynccontextmanager
async def overlay_rootfs(lower_dirs: Sequence[Path], work_dir: Path) -> AsyncIterator[Path]:
    """Mount ``lower_dirs`` (bottom layer first) under a temporary dir in ``work_dir``.

    Yields the merged mount point. Needs root (CAP_SYS_ADMIN).
    """
    if not lower_dirs:
        raise SandboxError("an image without layers cannot be run")
    await anyio.to_thread.run_sync(lambda: work_dir.mkdir(parents=True, exist_ok=True))
    base = Path(
        await anyio.to_thread.run_sync(lambda: tempfile.mkdtemp(prefix="rootfs-", dir=work_dir))
    )
    merged = base / "merged"
    try:
        with anyio.CancelScope(shield=True):
            for sub in ("upper", "work", "merged"):
                await anyio.to_thread.run_sync((base / sub).mkdir)
            await _mount_overlay(lower_dirs, base / "upper", base / "work", merged)
        log.debug("mounted rootfs at %s", merged)
        yield merged
    finally:
        with anyio.CancelScope(shield=True):
            await _teardown(base, merged)


async def _teardown(base: Path, merged: Path) -> None:
    await unmount(merged)
    if await is_mount_point(merged):
        raise SandboxError(f"{merged} is still mounted; leaving {base} in place")
    await anyio.to_thread.run_sync(remove_tree, base)
