"""Walk and remove directory trees through file descriptors, never following a symlink.

Shared by the two extractors (the eStargz one, :mod:`esgz.estargz.extract`, and the
profiler's unpacker, :mod:`esgz.runtime.unpack`). Nothing here is recursive on the depth
of a tree: :class:`DirCursor` moves one fd from directory to directory (climbing with
``..`` or restarting at the root), so any depth works and the cost is linear in the bytes
of the names. Trees are removed by :func:`esgz.fsutil.remove_tree`.
"""

from __future__ import annotations

import errno
import os
import stat

from esgz.errors import FormatError
from esgz.fsutil import DIR_FLAGS

__all__ = ["DirCursor", "unlink_unless_dir"]


def unlink_unless_dir(parent_fd: int, name: str) -> bool:
    """Remove ``name`` unless it is a directory; whether it is one (False if missing)."""
    try:
        st = os.lstat(name, dir_fd=parent_fd)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        return True
    os.unlink(name, dir_fd=parent_fd)
    return False


def _common_dir(a: str, b: str) -> str:
    """The deepest directory that is ``a`` or an ancestor of it and the same for ``b``."""
    if b.startswith(a) and (not a or b[len(a) : len(a) + 1] == "/"):
        return a  # b is below a: the usual step from a directory to its child
    low, high = 0, min(len(a), len(b))
    while low < high:  # the longest common prefix, compared in C, in log steps
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    if (low == len(a) or a[low] == "/") and (low == len(b) or b[low] == "/"):
        return a[:low]
    cut = a.rfind("/", 0, low)
    return a[:cut] if cut > 0 else ""


def _depth(path: str) -> int:
    return path.count("/") + 1 if path else 0


class DirCursor:
    """One fd that walks the layer's directories without following symlinks.

    Moving from one directory to the next costs the components that differ (it climbs
    with ``..`` or restarts at the root, whichever is shorter), so a whole layer costs
    no more system calls than its names have components.
    """

    def __init__(self, root_fd: int) -> None:
        self._root_fd = root_fd
        self._fd = os.dup(root_fd)
        self._path = ""

    def close(self) -> None:
        os.close(self._fd)

    def _step(self, fd: int) -> None:
        os.close(self._fd)
        self._fd = fd

    def at(self, path: str, *, create: bool = True) -> int:
        """An fd of directory ``path`` ("" is the root), owned by the cursor.

        Missing directories are created (mode 0755) unless ``create`` is false. A
        component that is a symlink or not a directory is a FormatError.
        """
        current = self._path
        if path == current:
            return self._fd
        common = _common_dir(current, path)
        climb = _depth(current) - _depth(common)
        try:
            if climb > _depth(common):
                self._step(os.dup(self._root_fd))
                common = ""
            else:
                for _ in range(climb):
                    self._step(os.open("..", DIR_FLAGS, dir_fd=self._fd))
            rest = path[len(common) :].lstrip("/")
            for part in rest.split("/") if rest else ():
                self._step(self._enter(part, path, create))
        except BaseException:
            self._step(os.dup(self._root_fd))  # where the cursor is, is known again
            self._path = ""
            raise
        self._path = path
        return self._fd

    def _enter(self, part: str, path: str, create: bool) -> int:
        try:
            return os.open(part, DIR_FLAGS, dir_fd=self._fd)
        except FileNotFoundError:
            if not create:
                raise
            os.mkdir(part, 0o755, dir_fd=self._fd)
            return os.open(part, DIR_FLAGS, dir_fd=self._fd)
        except OSError as err:
            if err.errno in (errno.ELOOP, errno.ENOTDIR):
                raise FormatError(
                    f"directory {path!r}: {part!r} is a symlink or not a directory; "
                    "refusing to write through it"
                ) from None
            raise
