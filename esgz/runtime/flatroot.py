"""The rootless mode's fallback rootfs: the unpacked layers copied into one directory.

When overlayfs cannot be mounted in the user namespace — a kernel older than 5.11, or an
image with more layers than one overlay mount's options can name — :func:`copied_rootfs`
builds the rootfs by applying the layers in order, as overlayfs would show them: a
layer's whiteouts delete the paths below, its opaque directories hide the contents below,
and its entries replace what lower layers had at the same path (a directory merges with a
lower directory, anything else replaces). Owners (mapped ids), modes and times are
copied; a hard link becomes a copy; device nodes were never unpacked (no privilege).

It costs a full copy of the image per run (overlayfs shares the cached layers), and the
copy lives on the work dir's filesystem, which the inode-mark recorder then watches.
Symlinks are never followed: before anything is created at a path, its parents have
been made real directories.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

from esgz.fsutil import remove_tree
from esgz.runtime.unpack import UnpackedLayer

__all__ = ["apply_layers", "copied_rootfs"]

log = logging.getLogger(__name__)


def _remove(path: str) -> None:
    """Remove whatever is at ``path`` (a directory with its contents), never following."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode):
        remove_tree(path)
    else:
        os.unlink(path)


def _clear(directory: str) -> None:
    """Empty ``directory`` if it is a real directory."""
    try:
        info = os.lstat(directory)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(info.st_mode):
        return
    for name in os.listdir(directory):
        _remove(os.path.join(directory, name))


def _metadata(source: os.stat_result, target: str) -> None:
    try:
        os.lchown(target, source.st_uid, source.st_gid)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.EPERM):
            raise
    if not stat.S_ISLNK(source.st_mode):
        os.chmod(target, stat.S_IMODE(source.st_mode))
    os.utime(target, ns=(source.st_atime_ns, source.st_mtime_ns), follow_symlinks=False)


def _copy_entry(source: str, info: os.stat_result, target: str) -> bool:
    """Put the entry ``source`` at ``target``; True if it is a directory to descend into."""
    mode = info.st_mode
    if stat.S_ISCHR(mode) and info.st_rdev == 0:
        return False  # a whiteout: applied from the layer index
    if stat.S_ISDIR(mode):
        try:
            existing = os.lstat(target)
        except FileNotFoundError:
            existing = None
        if existing is not None and not stat.S_ISDIR(existing.st_mode):
            os.unlink(target)
            existing = None
        if existing is None:
            os.mkdir(target)
        _metadata(info, target)
        return True
    _remove(target)
    if stat.S_ISLNK(mode):
        os.symlink(os.readlink(source), target)
    elif stat.S_ISREG(mode):
        shutil.copyfile(source, target, follow_symlinks=False)
    elif stat.S_ISFIFO(mode):
        os.mkfifo(target)
    else:
        return False  # devices and sockets: not in an unprivileged rootfs
    _metadata(info, target)
    return False


def apply_layers(layers: Sequence[UnpackedLayer], target: Path) -> None:
    """Apply ``layers`` (bottom first) onto the empty directory ``target`` (blocking)."""
    root = str(target)
    for layer in layers:
        for path in sorted(layer.index.whiteouts):
            _remove(os.path.join(root, path))
        for path in sorted(layer.index.opaque_dirs):
            _clear(os.path.join(root, path) if path else root)
        pending = [(str(layer.root), root)]
        while pending:
            source_dir, target_dir = pending.pop()
            with os.scandir(source_dir) as entries:
                for entry in entries:
                    info = entry.stat(follow_symlinks=False)
                    target_path = os.path.join(target_dir, entry.name)
                    if _copy_entry(entry.path, info, target_path):
                        pending.append((entry.path, target_path))
        _metadata(os.lstat(layer.root), root)


@asynccontextmanager
async def copied_rootfs(layers: Sequence[UnpackedLayer], work_dir: Path) -> AsyncIterator[Path]:
    """A temporary rootfs in ``work_dir`` with ``layers`` applied; removed on exit."""
    await anyio.to_thread.run_sync(lambda: work_dir.mkdir(parents=True, exist_ok=True))
    base = Path(
        await anyio.to_thread.run_sync(lambda: tempfile.mkdtemp(prefix="rootfs-", dir=work_dir))
    )
    merged = base / "merged"
    try:
        await anyio.to_thread.run_sync(merged.mkdir)
        await anyio.to_thread.run_sync(apply_layers, layers, merged)
        yield merged
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lambda: remove_tree(base, ignore_errors=True))
