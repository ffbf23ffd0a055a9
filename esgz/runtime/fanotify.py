"""A fanotify monitor that records which files of the container rootfs are opened or read.

The monitor is a notification-class fanotify group (``FAN_CLASS_NOTIF``) watching
``FAN_OPEN | FAN_ACCESS``. What to mark matters, because the container runs in its own
mount namespace, where runc bind-mounts the rootfs onto itself and pivots into it: that
bind mount is a different mount from the overlay mount on the host, so marking the host
mount point with ``FAN_MARK_MOUNT`` sees nothing (measured). Two marks work:

* :meth:`FanotifyMonitor.mark_mount` of ``/proc/<container init pid>/root`` once the
  container is created (``runc create``) and before it starts: that path resolves to the
  container's own rootfs mount, so exactly the rootfs is watched — not /proc, /dev, the
  generated /etc files or ``--mount`` bind mounts. This is the default (and what the
  reference does from inside the container's mount namespace).
* :meth:`FanotifyMonitor.mark_filesystem` of the host mount point: the overlay
  superblock, seen through any of its mounts — also the host's own reads of the merged
  dir and a bind mount of a rootfs directory (whose reads are then reported relative to
  that bind mount: misleading), and, if armed before ``runc create``, runc's own setup
  reads (the /etc/hosts and /etc/resolv.conf mount points, /etc/passwd and /etc/group for
  the user). Bind mounts of other filesystems stay invisible. (Measured in
  ``tests/runtime/test_marks.py``.)

Each event carries an open fd; its path is read with ``readlink /proc/self/fd/N`` (for
the container's mount this is the in-container absolute path, symlinks already resolved;
a path under the host rootfs mount point has that prefix stripped), the fd closed, and
the path kept once, in first-access order. Directories are never reported (no
``FAN_ONDIR``). A queue overflow is logged as a warning and flagged in :attr:`overflowed`.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import struct
import threading
from pathlib import Path

import anyio

from esgz.errors import SandboxError

__all__ = ["FAN_ACCESS", "FAN_OPEN", "FanotifyGroup", "FanotifyMonitor"]

log = logging.getLogger(__name__)

FAN_CLASS_NOTIF = 0x0
FAN_CLOEXEC = 0x1
FAN_NONBLOCK = 0x2
FAN_MARK_ADD = 0x1
FAN_MARK_MOUNT = 0x10
FAN_MARK_FILESYSTEM = 0x100
FAN_ACCESS = 0x1
FAN_OPEN = 0x20
FAN_Q_OVERFLOW = 0x4000
FAN_NOFD = -1
FANOTIFY_METADATA_VERSION = 3
AT_FDCWD = -100

# struct fanotify_event_metadata: event_len u32, vers u8, reserved u8, metadata_len u16,
# mask u64 (aligned), fd s32, pid s32.
_METADATA = struct.Struct("=IBBHQii")
_DELETED_SUFFIX = " (deleted)"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
_libc.fanotify_init.restype = ctypes.c_int
_libc.fanotify_mark.argtypes = [
    ctypes.c_int,
    ctypes.c_uint,
    ctypes.c_uint64,
    ctypes.c_int,
    ctypes.c_char_p,
]
_libc.fanotify_mark.restype = ctypes.c_int


class FanotifyGroup:
    """A fanotify group and the paths its events name: opening aside, the life of both
    recorders (:class:`FanotifyMonitor` and the rootless
    :class:`~esgz.runtime.inodemarks.InodeMarkRecorder`).

    ``await run()`` in a task while the workload runs, ``await stop()`` when it is over
    (reads the remaining events and closes the group); :attr:`paths` holds the result.
    Subclasses open the group and parse what :meth:`drain` reads.
    """

    #: Bytes read from the group at a time.
    read_size = 64 * 1024

    def __init__(self) -> None:
        self.overflowed = False
        self.events = 0
        self._paths: dict[str, None] = {}
        self._fd = -1
        self._lock = threading.Lock()

    @property
    def paths(self) -> list[str]:
        """Absolute in-container paths, first access first, each once."""
        return list(self._paths)

    async def run(self) -> None:
        """Read events until cancelled."""
        while True:
            await anyio.wait_readable(self._fd)
            await anyio.to_thread.run_sync(self.drain)

    def drain(self) -> None:
        """Read and record every queued event (blocking but never waits)."""
        with self._lock:
            while self._fd >= 0:
                try:
                    buffer = os.read(self._fd, self.read_size)
                except BlockingIOError:
                    return
                except OSError as err:
                    if err.errno == errno.EINTR:
                        continue
                    raise SandboxError(f"reading fanotify events failed: {err}") from err
                if not buffer:
                    return
                self._parse(buffer)

    def _parse(self, buffer: bytes) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        """Read what is left and close the group."""
        if self._fd < 0:
            return
        await anyio.to_thread.run_sync(self.drain)
        self.close()

    def close(self) -> None:
        """Close the group (idempotent); its marks go with it."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


class FanotifyMonitor(FanotifyGroup):
    """Collects the paths opened or read below a marked mount or filesystem.

    Use: ``open()`` (blocking, root), ``mark_mount``/``mark_filesystem``, then
    ``await run()`` in a task while the workload runs, and ``await stop()`` when it is
    over, which reads the remaining events and closes the group. ``paths`` holds the
    result. ``host_prefix`` is the rootfs mount point on the host: paths under it are
    made relative to it.
    """

    def __init__(self, host_prefix: Path | None = None) -> None:
        super().__init__()
        self.host_prefix = str(host_prefix).rstrip("/") if host_prefix else None

    def open(self) -> None:
        """Create the fanotify group (blocking; needs CAP_SYS_ADMIN)."""
        flags = FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK
        fd = _libc.fanotify_init(flags, os.O_RDONLY | os.O_LARGEFILE | os.O_CLOEXEC)
        if fd < 0:
            code = ctypes.get_errno()
            raise SandboxError(f"fanotify_init failed: {os.strerror(code)} (needs root)")
        self._fd = fd

    def _mark(self, flags: int, path: str) -> None:
        if self._fd < 0:
            raise SandboxError("fanotify monitor is not open")
        result = _libc.fanotify_mark(
            self._fd, FAN_MARK_ADD | flags, FAN_OPEN | FAN_ACCESS, AT_FDCWD, path.encode()
        )
        if result != 0:
            code = ctypes.get_errno()
            raise SandboxError(f"fanotify_mark {path} failed: {os.strerror(code)}")

    def mark_mount(self, path: str | Path) -> None:
        """Watch the mount that ``path`` is on (e.g. ``/proc/<pid>/root``)."""
        self._mark(FAN_MARK_MOUNT, str(path))

    def mark_filesystem(self, path: str | Path) -> None:
        """Watch the whole filesystem (superblock) that ``path`` is on."""
        self._mark(FAN_MARK_FILESYSTEM, str(path))

    def _parse(self, buffer: bytes) -> None:
        offset = 0
        while offset + _METADATA.size <= len(buffer):
            length, version, _, _, mask, fd, _ = _METADATA.unpack_from(buffer, offset)
            if length < _METADATA.size:
                break
            offset += length
            if version != FANOTIFY_METADATA_VERSION:
                raise SandboxError(f"unsupported fanotify metadata version {version}")
            if mask & FAN_Q_OVERFLOW or fd == FAN_NOFD:
                if not self.overflowed:
                    log.warning("fanotify queue overflowed: some file accesses were lost")
                self.overflowed = True
                continue
            try:
                path = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            finally:
                os.close(fd)
            self.events += 1
            self._record(path)

    def _record(self, path: str) -> None:
        if not path.startswith("/") or path.endswith(_DELETED_SUFFIX):
            return
        prefix = self.host_prefix
        if prefix and (path == prefix or path.startswith(prefix + "/")):
            path = path[len(prefix) :] or "/"
        if path not in self._paths:
            self._paths[path] = None

    def __enter__(self) -> FanotifyMonitor:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
