"""Unpack a layer from a :class:`~esgz.estargz.reader.LayerReader` into a directory, safely.

Safety rules: every path is resolved component by component from an open descriptor of
the destination with ``O_NOFOLLOW``, so no entry can be written through a symlink (one
that the layer itself created, or one already in the destination) or outside the
destination; names with ``..`` components or absolute names never get here (the reader
rejects them). A parent that is a symlink or not a directory raises
:class:`~esgz.errors.FormatError`. Root-level landmarks are not extracted; whiteout files
are extracted as the plain files they are (they are only interpreted by overlay users).

Metadata: mode, mtime and xattrs are applied; ownership when ``same_owner`` (default: when
running as root). Devices need privileges: if the kernel refuses ``mknod``, or an xattr
namespace is not permitted, the item is skipped with a logged warning.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

from esgz.errors import FormatError
from esgz.estargz.constants import NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK
from esgz.estargz.dirfd import DirCursor
from esgz.estargz.ordering import clean_name
from esgz.estargz.tocindex import LayerEntry
from esgz.fsutil import DIR_FLAGS

if TYPE_CHECKING:
    from esgz.estargz.reader import LayerReader

__all__ = ["extract_layer"]

log = logging.getLogger(__name__)

_NOT_PERMITTED: Final = frozenset((errno.EPERM, errno.EACCES, errno.ENOTSUP, errno.EOPNOTSUPP))


def _split(name: str) -> tuple[str, str]:
    parent, _, base = name.rpartition("/")
    return parent, base


def _clear(parent_fd: int, base: str, keep_dir: bool, context: str) -> bool:
    """Remove what is at ``base`` (unless it is a directory to keep); True if a dir is kept."""
    try:
        info = os.lstat(base, dir_fd=parent_fd)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(info.st_mode):
        if keep_dir:
            return True
        try:
            os.rmdir(base, dir_fd=parent_fd)
        except OSError:
            raise FormatError(f"{context}: a non-empty directory is in the way") from None
        return False
    os.unlink(base, dir_fd=parent_fd)
    return False


def _modtime_ns(entry: LayerEntry) -> int:
    """The entry's mtime; a missing ``modtime`` (Go omits the Unix epoch) means 0."""
    if not entry.modtime:
        return 0
    try:
        moment = datetime.fromisoformat(entry.modtime)
    except ValueError:
        raise FormatError(f"{entry.name!r}: modtime {entry.modtime!r} is not RFC3339") from None
    return int(moment.timestamp()) * 1_000_000_000


def _set_xattrs(target: int | str, entry: LayerEntry) -> None:
    for key, value in sorted(entry.xattrs.items()):
        try:
            if isinstance(target, int):
                os.setxattr(target, key, value)
            else:
                os.setxattr(target, key, value, follow_symlinks=False)
        except OSError as err:
            if err.errno not in _NOT_PERMITTED:
                raise
            log.warning("%s: xattr %s not set: %s", entry.name, key, err.strerror)


class _Extractor:
    def __init__(
        self, reader: LayerReader, root_fd: int, *, verify: bool, same_owner: bool, xattrs: bool
    ) -> None:
        self.reader = reader
        self.root_fd = root_fd
        self.verify = verify
        self.same_owner = same_owner
        self.xattrs = xattrs
        self.directories: list[LayerEntry] = []
        self.cursor = DirCursor(root_fd)
        """Walks from entry to entry: any depth, linear in the bytes of the names."""

    def _open_dir(self, rel: str, *, create: bool, context: str) -> int:
        """A new descriptor of directory ``rel``, never following a symlink."""
        try:
            return os.dup(self.cursor.at(rel, create=create))
        except FileNotFoundError:
            raise FormatError(f"{context}: {rel!r} does not exist") from None
        except FormatError as err:
            raise FormatError(f"{context}: {err.message}") from None

    def entry(self, entry: LayerEntry) -> None:
        if entry.name in ("", PREFETCH_LANDMARK, NO_PREFETCH_LANDMARK):
            return
        context = f"{self.reader.name}: extracting {entry.name!r}"
        try:
            self._create(entry, context)
        except (OverflowError, ValueError) as err:
            raise FormatError(f"{context}: {err}") from None

    def _create(self, entry: LayerEntry, context: str) -> None:
        parent, base = _split(entry.name)
        parent_fd = self._open_dir(parent, create=True, context=context)
        try:
            kept_dir = _clear(parent_fd, base, entry.type == "dir", context)
            if entry.type == "dir":
                if not kept_dir:
                    os.mkdir(base, 0o700, dir_fd=parent_fd)
                self.directories.append(entry)
            elif entry.type == "reg":
                self._regular(parent_fd, base, entry)
            elif entry.type == "symlink":
                os.symlink(entry.link_name, base, dir_fd=parent_fd)
                self._metadata(parent_fd, base, entry, None)
            elif entry.type == "hardlink":
                self._hardlink(parent_fd, base, entry, context)
            elif entry.type == "fifo":
                os.mkfifo(base, 0o600, dir_fd=parent_fd)
                self._metadata(parent_fd, base, entry, None)
            elif entry.type in ("char", "block"):
                self._device(parent_fd, base, entry)
        finally:
            os.close(parent_fd)

    def _regular(self, parent_fd: int, base: str, entry: LayerEntry) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(base, flags, 0o600, dir_fd=parent_fd)
        try:
            for piece in self.reader.read_entry(entry, verify=self.verify):
                view = memoryview(piece)
                while view:
                    view = view[os.write(fd, view) :]
            self._metadata(parent_fd, base, entry, fd)
        finally:
            os.close(fd)

    def _hardlink(self, parent_fd: int, base: str, entry: LayerEntry, context: str) -> None:
        target = clean_name(entry.link_name)
        target_parent, target_base = _split(target)
        target_fd = self._open_dir(target_parent, create=False, context=context)
        try:
            info = os.lstat(target_base, dir_fd=target_fd)
            if stat.S_ISDIR(info.st_mode):
                raise FormatError(f"{context}: hardlink target {target!r} is a directory")
            os.link(
                target_base,
                base,
                src_dir_fd=target_fd,
                dst_dir_fd=parent_fd,
                follow_symlinks=False,
            )
        except FileNotFoundError:
            raise FormatError(
                f"{context}: hardlink target {target!r} does not precede the link"
            ) from None
        finally:
            os.close(target_fd)

    def _device(self, parent_fd: int, base: str, entry: LayerEntry) -> None:
        kind = stat.S_IFCHR if entry.type == "char" else stat.S_IFBLK
        try:
            os.mknod(
                base,
                0o600 | kind,
                os.makedev(entry.dev_major, entry.dev_minor),
                dir_fd=parent_fd,
            )
        except PermissionError as err:
            log.warning("%s: device not created: %s", entry.name, err.strerror)
            return
        self._metadata(parent_fd, base, entry, None)

    def _metadata(self, parent_fd: int, base: str, entry: LayerEntry, fd: int | None) -> None:
        is_link = entry.type == "symlink"
        if self.same_owner:
            os.chown(base, entry.uid, entry.gid, dir_fd=parent_fd, follow_symlinks=False)
        if self.xattrs and entry.xattrs:
            _set_xattrs(fd if fd is not None else f"/proc/self/fd/{parent_fd}/{base}", entry)
        if not is_link:
            mode = stat.S_IMODE(entry.mode)
            if fd is not None:
                os.fchmod(fd, mode)
            else:
                os.chmod(base, mode, dir_fd=parent_fd)
        mtime = _modtime_ns(entry)
        if fd is not None:
            os.utime(fd, ns=(mtime, mtime))
        else:
            os.utime(base, ns=(mtime, mtime), dir_fd=parent_fd, follow_symlinks=False)

    def finish_directories(self) -> None:
        """Apply directory metadata last, deepest first, so later writes are not blocked."""
        for entry in sorted(self.directories, key=lambda e: e.name.count("/"), reverse=True):
            parent, base = _split(entry.name)
            context = f"{self.reader.name}: extracting {entry.name!r}"
            parent_fd = self._open_dir(parent, create=False, context=context)
            try:
                try:
                    dir_fd = os.open(base, DIR_FLAGS, dir_fd=parent_fd)
                except OSError as err:
                    if err.errno in (errno.ENOTDIR, errno.ELOOP, errno.ENOENT):
                        continue  # replaced by a later entry of another type
                    raise
                try:
                    self._metadata(parent_fd, base, entry, dir_fd)
                except (OverflowError, ValueError) as err:
                    raise FormatError(f"{context}: {err}") from None
                finally:
                    os.close(dir_fd)
            finally:
                os.close(parent_fd)


def extract_layer(
    reader: LayerReader,
    dest: Path,
    *,
    verify: bool = True,
    same_owner: bool | None = None,
    xattrs: bool = True,
) -> None:
    """Write every entry of ``reader`` under ``dest`` (created if missing), in TOC order."""
    if same_owner is None:
        same_owner = os.geteuid() == 0
    dest.mkdir(parents=True, exist_ok=True)
    root_fd = os.open(dest, DIR_FLAGS)
    try:
        extractor = _Extractor(reader, root_fd, verify=verify, same_owner=same_owner, xattrs=xattrs)
        try:
            for entry in reader.entries():
                extractor.entry(entry)
            extractor.finish_directories()
        finally:
            extractor.cursor.close()
    finally:
        os.close(root_fd)
