"""File-system helpers that hold up on hostile trees and full disks.

:func:`remove_tree` deletes a directory tree without recursion: it walks down and back up
with one directory fd at a time (relative ``openat``/``unlinkat``, never a path built from
the root), so a tree 100,000 directories deep costs linear time, a few fds and no Python
stack; it never follows symlinks and never descends into another mount.

:func:`storage_problem` recognises the errors of a disk that cannot take more data
(``ENOSPC``, ``EDQUOT``, ``EROFS``, ``EFBIG``) and :func:`storage_error` turns them into a
one-line :class:`~esgz.errors.StorageError` naming the path; :func:`directory_problem`
says in a few words why a directory cannot be used (not a directory, not writable, ...).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from esgz.errors import StorageError

__all__ = [
    "DIR_FLAGS",
    "STORAGE_ERRNOS",
    "directory_problem",
    "mounts_below",
    "remove_tree",
    "storage_error",
    "storage_problem",
]

log = logging.getLogger(__name__)

#: errno values meaning "this file system takes no more data" (EFBIG: a file-size limit,
#: ``ulimit -f``, or the file system's largest file).
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})

_STORAGE_REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EFBIG: "file too large (a file-size limit, ulimit -f?)",
}
_WHERE_NOTE = re.compile(
    r"^esgz: in image (?P<image>.+?)(?:, layer (?P<layer>[^,\s]+))?, stage (?P<stage>\S+)$"
)
_NEARLY_FULL = 16 * 1024 * 1024
#: How a directory is opened: never through a symlink.
DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class _Level:
    """A directory on the way down: its name in the parent, identity, pending subdirs."""

    name: str
    dev: int
    ino: int
    subdirs: list[str] = field(default_factory=list)
    retried_names: set[str] = field(default_factory=set)
    retried: bool = False


class _Remover:
    """The state of one :func:`remove_tree` walk; paths are only spelled out for errors."""

    def __init__(self, root: str, ignore_errors: bool) -> None:
        self.ignore_errors = ignore_errors
        self.path = [root]  # names from the root down to the current directory

    def failed(self, exc: OSError, name: str | None = None) -> None:
        """Raise ``exc`` (naming the entry), or note it and go on with ``ignore_errors``."""
        where = os.path.join(*self.path, *([name] if name else []))
        if exc.filename is None:
            exc.filename = where
        if not self.ignore_errors:
            raise exc
        log.debug("cannot remove %s: %s", where, exc)

    def clear(self, fd: int, level: _Level) -> None:
        """Unlink the non-directories of ``fd``; remember its subdirectories."""
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    try:
                        is_dir = entry.is_dir(follow_symlinks=False)
                    except OSError:
                        is_dir = False
                    if is_dir:
                        level.subdirs.append(entry.name)
                        continue
                    try:
                        os.unlink(entry.name, dir_fd=fd)
                    except FileNotFoundError:
                        pass
                    except IsADirectoryError:
                        level.subdirs.append(entry.name)
                    except OSError as exc:
                        self.failed(exc, entry.name)
        except OSError as exc:
            self.failed(exc)
        level.subdirs.reverse()  # popped from the end: visit in directory order

    def run(self, fd: int, root_dev: int, root_ino: int) -> None:
        """Empty the directory open as ``fd`` (consumed: closed on return)."""
        stack = [_Level(self.path[0], root_dev, root_ino)]
        self.clear(fd, stack[0])
        try:
            while True:
                level = stack[-1]
                if level.subdirs:
                    name = level.subdirs.pop()
                    child = self.enter(fd, name, root_dev)
                    if child is None:
                        continue
                    os.close(fd)
                    fd, st = child
                    retried = name in level.retried_names
                    stack.append(_Level(name, st.st_dev, st.st_ino, retried=retried))
                    self.path.append(name)
                    self.clear(fd, stack[-1])
                    continue
                if len(stack) == 1:
                    return
                # Back up to the parent (checked to be the same directory), then rmdir.
                parent = stack[-2]
                parent_fd = os.open("..", DIR_FLAGS, dir_fd=fd)
                st = os.fstat(parent_fd)
                os.close(fd)
                fd = parent_fd
                if (st.st_dev, st.st_ino) != (parent.dev, parent.ino):
                    raise OSError(errno.ESTALE, "directory moved during removal", self.path[0])
                stack.pop()
                self.path.pop()
                try:
                    os.rmdir(level.name, dir_fd=fd)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    if exc.errno == errno.ENOTEMPTY and not level.retried:
                        # Something was created in it meanwhile: clear it once more.
                        parent.subdirs.append(level.name)
                        parent.retried_names.add(level.name)
                        continue
                    self.failed(exc, level.name)
        finally:
            os.close(fd)

    def enter(self, fd: int, name: str, root_dev: int) -> tuple[int, os.stat_result] | None:
        """Open the subdirectory ``name`` of ``fd``; None if it is gone or not to be entered."""
        try:
            child = os.open(name, DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            return None
        except (NotADirectoryError, OSError) as exc:
            if isinstance(exc, PermissionError):
                # Not root: a directory without search permission; give ourselves some.
                try:
                    os.chmod(name, 0o700, dir_fd=fd)
                    child = os.open(name, DIR_FLAGS, dir_fd=fd)
                except OSError:
                    self.failed(exc, name)
                    return None
            elif exc.errno in (errno.ENOTDIR, errno.ELOOP):
                try:  # replaced by a file or symlink meanwhile
                    os.unlink(name, dir_fd=fd)
                except FileNotFoundError:
                    pass
                except OSError as unlink_exc:
                    self.failed(unlink_exc, name)
                return None
            else:
                self.failed(exc, name)
                return None
        st = os.fstat(child)
        if st.st_dev != root_dev:
            os.close(child)
            self.failed(OSError(errno.EBUSY, "a mount point is inside the tree"), name)
            return None
        return child, st


def remove_tree(
    path: str | os.PathLike[str],
    *,
    dir_fd: int | None = None,
    ignore_errors: bool = False,
    missing_ok: bool = True,
) -> None:
    """Delete ``path`` and everything below it, iteratively (no recursion on depth).

    ``path`` is relative to ``dir_fd`` when given. A symlink or file at ``path`` is
    unlinked, a symlink inside is never followed, and a mount point inside the tree is
    an ``OSError`` (``EBUSY``) — nothing below it is touched. With ``ignore_errors`` it
    removes what it can and returns quietly. Time is linear in the number of entries;
    at most two directory fds are open at a time.
    """
    name = os.fspath(path)
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        if missing_ok or ignore_errors:
            return
        raise
    except OSError:
        if ignore_errors:
            return
        raise
    try:
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=dir_fd)
            return
        if dir_fd is None:
            busy = mounts_below(Path(name))
            if busy:
                raise OSError(errno.EBUSY, "a mount point is inside the tree", str(busy[0]))
        fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
            os.close(fd)
            raise OSError(errno.ESTALE, "directory replaced during removal", name)
        _Remover(name, ignore_errors).run(fd, opened.st_dev, opened.st_ino)
        os.rmdir(name, dir_fd=dir_fd)
    except FileNotFoundError:
        if not (missing_ok or ignore_errors):
            raise
    except OSError:
        if not ignore_errors:
            raise


def mounts_below(root: Path, *, include_root: bool = False) -> list[Path]:
    """Mount points below ``root`` (its real path), deepest first, from /proc/self/mountinfo."""
    real = os.path.realpath(root)
    prefix = real.rstrip("/") + "/"
    targets = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as info:
            for line in info:
                target = _unescape(line.split()[4])
                if target.startswith(prefix) or (include_root and target == real):
                    targets.append(Path(target))
    except FileNotFoundError:
        return []
    return sorted(targets, key=lambda p: len(p.parts), reverse=True)


def _unescape(field_text: str) -> str:
    """A mountinfo field with its octal escapes (``\\040`` for a space) decoded."""
    if "\\" not in field_text:
        return field_text
    out = []
    index = 0
    while index < len(field_text):
        if field_text[index] == "\\" and field_text[index + 1 : index + 4].isdigit():
            out.append(chr(int(field_text[index + 1 : index + 4], 8)))
            index += 4
        else:
            out.append(field_text[index])
            index += 1
    return "".join(out)


def storage_problem(exc: BaseException) -> OSError | None:
    """The disk-full / over-quota / read-only ``OSError`` in ``exc``'s cause chain, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StorageError):
            return None  # already says what and where
        if isinstance(current, OSError) and current.errno in STORAGE_ERRNOS:
            return current
        if current.__cause__ is not None:
            current = current.__cause__
        else:
            current = None if current.__suppress_context__ else current.__context__
    return None


def _full_candidate(candidates: Iterable[Path], code: int) -> Path | None:
    """The one of ``candidates`` whose file system is read-only (EROFS) or nearly full."""
    best: tuple[int, Path] | None = None
    if code == errno.EFBIG:
        return None  # a limit on one file, not a full file system
    for candidate in candidates:
        probe = candidate
        while not os.path.lexists(probe) and probe != probe.parent:
            probe = probe.parent
        try:
            fs = os.statvfs(probe)
        except OSError:
            continue
        if code == errno.EROFS:
            if fs.f_flag & os.ST_RDONLY:
                return candidate
            continue
        available = fs.f_bavail * fs.f_frsize
        nearly_full = available < max(_NEARLY_FULL, fs.f_blocks * fs.f_frsize // 100)
        if (nearly_full or fs.f_favail == 0) and (best is None or available < best[0]):
            best = (available, candidate)
    return best[1] if best is not None else None


def storage_error(
    exc: OSError, candidates: Iterable[Path] = (), *, context: BaseException | None = None
) -> StorageError:
    """A one-line :class:`StorageError` for ``exc`` (one of :data:`STORAGE_ERRNOS`).

    It names ``exc.filename`` or else the first of ``candidates`` (the directories being
    written) whose file system is full / read-only. ``context`` (an ``EsgzError``) lends
    its image / layer / stage.
    """
    code = exc.errno if exc.errno is not None else errno.ENOSPC
    reason = _STORAGE_REASONS.get(code, os.strerror(code))
    where: str | None = None
    if exc.filename is not None:
        where = os.fsdecode(exc.filename)
    else:
        full = _full_candidate(candidates, code)
        where = str(full) if full is not None else None
    message = f"{reason}: cannot write {where}" if where else f"{reason} while writing"
    kwargs: dict[str, str] = {}
    for note in getattr(exc, "__notes__", ()):
        # The pipeline's note on an error that is not an EsgzError says where it happened.
        match = _WHERE_NOTE.match(note)
        if match is not None:
            kwargs = {k: v for k, v in match.groupdict().items() if v}
    for name in ("image", "layer", "stage", "registry"):
        value = getattr(context, name, None)
        if isinstance(value, str):
            kwargs[name] = value
    return StorageError(message, path=where, **kwargs)


def directory_problem(directory: Path, exc: OSError) -> str:
    """Why ``directory`` could not be created or written to, in a few words."""
    probe = directory
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    try:
        is_dir = stat.S_ISDIR(probe.stat().st_mode)
    except OSError:
        is_dir = True  # a dangling symlink or no access: let the errno speak
    if not is_dir:
        return "not a directory" if probe == directory else f"{probe} is not a directory"
    if exc.errno in STORAGE_ERRNOS:
        return _STORAGE_REASONS[exc.errno]
    if exc.errno == errno.ENOTDIR:
        return "not a directory"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "not writable (permission denied)"
    if exc.errno in (errno.ENOENT, errno.EINVAL):
        # It exists, yet nothing can be created in it: /proc, /sys and the like.
        return "not writable (no files can be created in it)"
    return exc.strerror or str(exc)
