"""A fanotify recorder for unprivileged users: inode marks on every directory of the rootfs.

Mount and filesystem marks (:mod:`esgz.runtime.fanotify`) need CAP_SYS_ADMIN in the
initial user namespace. An unprivileged fanotify group may still place *inode* marks if
it reports file ids (``FAN_REPORT_FID`` and its variants), so this recorder creates a
group with ``FAN_REPORT_DFID_NAME`` and marks every directory of the merged rootfs with
``FAN_OPEN | FAN_EVENT_ON_CHILD``: opening any file of a marked directory queues an event
carrying the directory's file handle and the file's name. Before the marks are placed,
each directory's handle is taken with ``name_to_handle_at(..., AT_HANDLE_FID)`` (which
overlayfs supports since Linux 6.6 without ``nfs_export``), so an event maps back to
``<directory path>/<name>`` without ``open_by_handle_at`` (which would need
CAP_DAC_READ_SEARCH).

What it sees, compared with the mount mark of the root mode: the same opens of the
image's files (an ``execve`` and a shared library's ``mmap`` open the file first), in the
same first-open order, as the in-container path the open resolved to (symlinks followed,
as with ``readlink`` of the root mode's event fd). Directories created after the marks are
placed (by the workload, in the upper dir) are not watched: they hold no image file. The
marks count against ``fs.fanotify.max_user_marks`` (one per directory) and the queue is
bounded by ``fs.fanotify.max_queued_events`` (no ``FAN_UNLIMITED_QUEUE`` without
privilege); an overflow is logged and flagged in :attr:`InodeMarkRecorder.overflowed`.
Only ``FAN_OPEN`` is watched (not ``FAN_ACCESS``, whose per-read events would fill the
bounded queue): a file is always opened before it is read.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import stat
import struct
from pathlib import Path

from esgz.errors import SandboxError
from esgz.runtime.fanotify import FanotifyGroup

__all__ = ["InodeMarkRecorder", "marks_limit"]

log = logging.getLogger(__name__)

FAN_CLASS_NOTIF = 0x0
FAN_CLOEXEC = 0x1
FAN_NONBLOCK = 0x2
FAN_REPORT_DIR_FID = 0x400
FAN_REPORT_NAME = 0x800
FAN_REPORT_DFID_NAME = FAN_REPORT_DIR_FID | FAN_REPORT_NAME
FAN_MARK_ADD = 0x1
FAN_MARK_DONT_FOLLOW = 0x4
FAN_MARK_ONLYDIR = 0x8
FAN_OPEN = 0x20
FAN_EVENT_ON_CHILD = 0x08000000
FAN_Q_OVERFLOW = 0x4000
FAN_EVENT_INFO_TYPE_DFID_NAME = 2
FANOTIFY_METADATA_VERSION = 3
AT_FDCWD = -100
AT_HANDLE_FID = 0x200
_MAX_HANDLE_SZ = 128

# struct fanotify_event_metadata: event_len u32, vers u8, reserved u8, metadata_len u16,
# mask u64, fd s32, pid s32.
_METADATA = struct.Struct("=IBBHQii")
# struct fanotify_event_info_header: info_type u8, pad u8, len u16; then the fsid (2 x s32)
# and struct file_handle: handle_bytes u32, handle_type s32.
_INFO_HEADER = struct.Struct("=BBH")
_FSID_AND_HANDLE = struct.Struct("=iiIi")
_MARKS_LIMIT_FILE = Path("/proc/sys/fs/fanotify/max_user_marks")

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
_libc.name_to_handle_at.argtypes = [
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_int),
    ctypes.c_int,
]
_libc.name_to_handle_at.restype = ctypes.c_int


def marks_limit() -> int | None:
    """``fs.fanotify.max_user_marks`` (how many directories one user may watch), if readable."""
    try:
        return int(_MARKS_LIMIT_FILE.read_text())
    except (OSError, ValueError):
        return None


def _handle_key(path: bytes) -> bytes:
    """The file id of ``path`` as the kernel reports it: type and handle bytes."""
    buffer = ctypes.create_string_buffer(8 + _MAX_HANDLE_SZ)
    struct.pack_into("=Ii", buffer, 0, _MAX_HANDLE_SZ, 0)
    mount_id = ctypes.c_int()
    result = _libc.name_to_handle_at(AT_FDCWD, path, buffer, ctypes.byref(mount_id), AT_HANDLE_FID)
    if result != 0 and ctypes.get_errno() == errno.EINVAL:
        # Before Linux 6.5 (no AT_HANDLE_FID): the exportable handle, which is the fid
        # fanotify reports on filesystems that can export one (ext4, xfs, btrfs, …).
        struct.pack_into("=Ii", buffer, 0, _MAX_HANDLE_SZ, 0)
        result = _libc.name_to_handle_at(AT_FDCWD, path, buffer, ctypes.byref(mount_id), 0)
    if result != 0:
        code = ctypes.get_errno()
        raise SandboxError(
            f"cannot take the file id of {path.decode(errors='replace')}: {os.strerror(code)}"
        )
    size, kind = struct.unpack_from("=Ii", buffer, 0)
    return struct.pack("=i", kind) + buffer.raw[8 : 8 + size]


class InodeMarkRecorder(FanotifyGroup):
    """Records the files opened below ``root`` without privilege (see the module docs).

    Use: :meth:`open` then :meth:`mark_tree` (blocking), ``await run()`` in a task while the
    workload runs, ``await stop()`` when it is over. :attr:`paths` holds absolute
    in-container paths, first open first, each once — the same shape as
    :class:`~esgz.runtime.fanotify.FanotifyMonitor`'s.
    """

    read_size = 256 * 1024

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root
        self.marks = 0
        self.unwatched = 0
        self._dirs: dict[bytes, str] = {}

    def open(self) -> None:
        """Create the fanotify group (blocking; no privilege needed)."""
        flags = FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_DFID_NAME
        fd = _libc.fanotify_init(flags, os.O_RDONLY | os.O_LARGEFILE | os.O_CLOEXEC)
        if fd < 0:
            code = ctypes.get_errno()
            raise SandboxError(
                f"fanotify_init with FAN_REPORT_DFID_NAME failed: {os.strerror(code)}"
            )
        self._fd = fd

    def mark_tree(self) -> int:
        """Mark every directory below ``root`` (not crossing into other filesystems).

        Returns the number of marks. A directory this process may not read is not watched
        (counted in :attr:`unwatched`). A SandboxError names the limit when the user's
        fanotify marks run out.
        """
        if self._fd < 0:
            raise SandboxError("fanotify recorder is not open")
        root = os.fsencode(self.root)
        device = os.lstat(root).st_dev
        _handle_key(root)  # a SandboxError if this filesystem gives no file ids at all
        pending = [(root, b"/")]
        while pending:
            directory, inside = pending.pop()
            if not self._mark(directory, inside):
                continue
            try:
                entries = list(os.scandir(directory))
            except OSError as err:
                log.debug("not watching below %r: %s", directory, err)
                continue
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(info.st_mode) and info.st_dev == device:
                    sub = inside + entry.name if inside == b"/" else inside + b"/" + entry.name
                    pending.append((entry.path, sub))
        return self.marks

    def _mark(self, directory: bytes, inside: bytes) -> bool:
        """Mark one directory; False if it cannot be read (then it is not watched)."""
        try:
            key = _handle_key(directory)
        except SandboxError as err:
            log.debug("not watching %r: %s", directory, err)
            self.unwatched += 1
            return False
        flags = FAN_MARK_ADD | FAN_MARK_DONT_FOLLOW | FAN_MARK_ONLYDIR
        mask = FAN_OPEN | FAN_EVENT_ON_CHILD
        if _libc.fanotify_mark(self._fd, flags, mask, AT_FDCWD, directory) != 0:
            code = ctypes.get_errno()
            if code in (errno.EACCES, errno.EPERM):
                log.debug("not watching %r: %s", directory, os.strerror(code))
                self.unwatched += 1
                return False
            if code == errno.ENOSPC:
                raise SandboxError(
                    f"out of fanotify marks after {self.marks} directories "
                    f"(fs.fanotify.max_user_marks = {marks_limit()}); raise the sysctl"
                )
            raise SandboxError(
                f"fanotify inode mark on {os.fsdecode(directory)} failed: {os.strerror(code)}"
            )
        self._dirs[key] = os.fsdecode(inside)
        self.marks += 1
        return True

    def _parse(self, buffer: bytes) -> None:
        offset = 0
        while offset + _METADATA.size <= len(buffer):
            length, version, _, meta_len, mask, _, _ = _METADATA.unpack_from(buffer, offset)
            if length < _METADATA.size:
                break
            if version != FANOTIFY_METADATA_VERSION:
                raise SandboxError(f"unsupported fanotify metadata version {version}")
            if mask & FAN_Q_OVERFLOW:
                if not self.overflowed:
                    log.warning("fanotify queue overflowed: some file accesses were lost")
                self.overflowed = True
            else:
                self._info(buffer, offset + meta_len, offset + length)
            offset += length

    def _info(self, buffer: bytes, start: int, end: int) -> None:
        while start + _INFO_HEADER.size <= end:
            kind, _, size = _INFO_HEADER.unpack_from(buffer, start)
            if size == 0:
                return
            if kind == FAN_EVENT_INFO_TYPE_DFID_NAME:
                body = start + _INFO_HEADER.size
                _, _, handle_bytes, handle_type = _FSID_AND_HANDLE.unpack_from(buffer, body)
                handle_start = body + _FSID_AND_HANDLE.size
                handle = buffer[handle_start : handle_start + handle_bytes]
                name_start = handle_start + handle_bytes
                name = buffer[name_start : start + size].split(b"\0", 1)[0]
                directory = self._dirs.get(struct.pack("=i", handle_type) + handle)
                if directory is not None and name and name != b".":
                    self.events += 1
                    self._record(directory, os.fsdecode(name))
            start += size

    def _record(self, directory: str, name: str) -> None:
        path = directory + name if directory == "/" else f"{directory}/{name}"
        if path not in self._paths:
            self._paths[path] = None
