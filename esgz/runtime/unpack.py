"""Unpack image layers into per-layer directories ready for overlayfs, cached by digest.

Each layer is unpacked once into ``<cache>/<algorithm>-<hex>/root`` (keyed by its diff ID
when known, else its blob digest): the tar is extracted into a temporary sibling directory
which is renamed into place only when complete, so a cached layer is never half-written.
Next to ``root`` an ``index.json`` lists the layer's entries, whiteouts and opaque
directories (:class:`LayerIndex`), which path → layer mapping needs.

The tar is read by the format engine's parser
(:class:`~esgz.estargz.tarinput.TarReader`) and interpreted by its
:class:`~esgz.estargz.layerindex.LayerIndexBuilder`, so the unpacker, the writer and the
prefetch mapper agree on every name, whiteout and hard link. The tar is treated as
hostile, as a container runtime would; every refusal is a
:class:`~esgz.errors.FormatError` naming the entry and the layer:

* names are cleaned (:func:`~esgz.estargz.layerindex.entry_path`): a leading ``/`` is
  dropped (the name is taken relative to the layer root, as containerd and Docker do), a
  ``..`` component is refused;
* every directory is opened with ``O_NOFOLLOW`` from the layer root, so a symlink planted
  in the layer cannot redirect a later write outside it; an entry below a file or symlink
  of the layer is refused;
* a hard link must point at an earlier non-directory entry inside the layer;
* device nodes and FIFOs are created with ``mknod`` (as root; devices are skipped with a
  warning otherwise), owners are applied (uids/gids must fit in 32 bits), and
  setuid/setgid/sticky bits are kept;
* ``.wh.<name>`` becomes an overlayfs whiteout (a 0:0 character device) named ``<name>``,
  ``.wh..wh..opq`` sets ``trusted.overlay.opaque=y`` on its directory; other ``.wh..wh.``
  entries (aufs metadata) are skipped;
* sparse files keep their holes (data written at its offsets, then the file truncated to
  its size, as containerd does), and the data written for one layer is bounded
  (:data:`MAX_UNPACKED_BYTES`, a FormatError beyond it);
* nothing is recursive on the depth of the tree, and the directories are walked with one
  cursor fd moving from entry to entry, so deep trees unpack in time linear in the size
  of their names.

Compression is detected from the blob's first bytes: gzip, zstd or plain tar.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import anyio

from esgz.errors import FormatError
from esgz.estargz.dirfd import DirCursor, unlink_unless_dir
from esgz.estargz.layerindex import (
    OPAQUE_MARKER,
    WHITEOUT_PREFIX,
    LayerIndex,
    LayerIndexBuilder,
)
from esgz.estargz.source import open_tar_stream
from esgz.estargz.tarinput import TarEntry, TarReader
from esgz.fsutil import DIR_FLAGS, remove_tree
from esgz.oci.digest import parse_digest

__all__ = [
    "MAX_UNPACKED_BYTES",
    "OPAQUE_MARKER",
    "WHITEOUT_PREFIX",
    "LayerFile",
    "LayerIndex",
    "UnpackedLayer",
    "unpack_layer",
    "unpack_layer_sync",
]

log = logging.getLogger(__name__)

MAX_UNPACKED_BYTES: Final = 64 << 30
"""Default bound on the file data one layer may write when unpacked (64 GiB).

Holes of sparse files do not count (they are not allocated); a layer whose files hold
more data is refused with a FormatError instead of filling the disk."""
_OPAQUE_XATTR = "trusted.overlay.opaque"
_INDEX_NAME = "index.json"
_ROOT_NAME = "root"
_PIECE = 1 << 20
_ID_LIMIT = (1 << 32) - 1
"""uid_t / gid_t are 32 bits; -1 (4294967295) means "unchanged" to chown."""


@dataclass(frozen=True, slots=True)
class LayerFile:
    """A layer blob on disk: its digest, optional diff ID, and the file holding it."""

    digest: str
    path: Path
    diff_id: str | None = None

    @property
    def cache_key(self) -> str:
        """The directory name of this layer in the unpack cache."""
        parsed = parse_digest(self.diff_id or self.digest)
        return f"{parsed.algorithm}-{parsed.hex}"


@dataclass(frozen=True, slots=True)
class UnpackedLayer:
    """A layer unpacked in the cache: its overlayfs lower directory and its index."""

    source: LayerFile
    root: Path
    index: LayerIndex = field(default_factory=LayerIndex)


async def unpack_layer(
    source: LayerFile, cache_root: Path, *, max_bytes: int = MAX_UNPACKED_BYTES
) -> UnpackedLayer:
    """Unpack ``source`` into the cache (once) in a worker thread; see :func:`unpack_layer_sync`."""
    return await anyio.to_thread.run_sync(
        lambda: unpack_layer_sync(source, cache_root, max_bytes=max_bytes)
    )


def unpack_layer_sync(
    source: LayerFile, cache_root: Path, *, max_bytes: int = MAX_UNPACKED_BYTES
) -> UnpackedLayer:
    """Unpack ``source`` into ``cache_root`` unless already there; return where it is.

    Blocking. Raises FormatError (with the layer digest) for a corrupt or hostile tar, or
    one whose files hold more than ``max_bytes`` of data.
    """
    final = cache_root / source.cache_key
    cached = _load_cached(source, final)
    if cached is not None:
        return cached
    cache_root.mkdir(parents=True, exist_ok=True)
    temp_name = f".tmp-{source.cache_key}-{uuid.uuid4().hex[:12]}"
    temp = cache_root / temp_name
    temp.mkdir(mode=0o700)
    try:
        (temp / _ROOT_NAME).mkdir(mode=0o755)
        try:
            index = _extract(source, temp / _ROOT_NAME, max_bytes)
        except FormatError as err:
            if err.layer is None:
                err.layer = source.digest
            raise
        except OSError as err:
            raise FormatError(f"cannot unpack layer: {err}", layer=source.digest) from err
        (temp / _INDEX_NAME).write_text(index.to_json())
        try:
            temp.rename(final)
        except OSError as err:
            if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            # Another task unpacked the same layer meanwhile: use theirs.
            cached = _load_cached(source, final)
            if cached is None:
                raise
            return cached
        log.info("unpacked layer %s", source.digest)
        return UnpackedLayer(source=source, root=final / _ROOT_NAME, index=index)
    finally:
        if temp.exists():
            try:
                remove_tree(cache_root / temp_name)
            except OSError as err:
                log.warning("cannot remove %s: %s", temp, err)


def _load_cached(source: LayerFile, final: Path) -> UnpackedLayer | None:
    try:
        index = LayerIndex.from_json((final / _INDEX_NAME).read_text())
    except (OSError, ValueError, KeyError):
        return None
    return UnpackedLayer(source=source, root=final / _ROOT_NAME, index=index)


def _extract(source: LayerFile, root: Path, max_bytes: int) -> LayerIndex:
    with source.path.open("rb") as file, _Extractor(root, max_bytes, source.digest) as extractor:
        stream = open_tar_stream(file)
        try:
            reader = TarReader(stream)
            for entry in reader:
                extractor.add(entry, reader)
        finally:
            stream.close()
        return extractor.finish()


class _Extractor:
    """Writes tar entries below one root directory through ``O_NOFOLLOW`` dir fds."""

    def __init__(self, root: Path, max_bytes: int, layer: str) -> None:
        self._root = root
        self._layer = layer
        self._max_bytes = max_bytes
        self._written = 0
        self._root_fd = -1
        self._cursor: DirCursor | None = None
        self._tree = LayerIndexBuilder()
        self._dir_times: dict[str, TarEntry] = {}
        self._is_root = os.geteuid() == 0

    def __enter__(self) -> _Extractor:
        self._root_fd = os.open(self._root, DIR_FLAGS)
        self._cursor = DirCursor(self._root_fd)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._cursor is not None
        try:
            if exc[0] is None:
                self._set_dir_times()
        finally:
            self._cursor.close()
            os.close(self._root_fd)

    def finish(self) -> LayerIndex:
        try:
            return self._tree.finish()
        except FormatError as err:
            raise _hostile(err) from None

    def _dir(self, path: str) -> int:
        assert self._cursor is not None
        return self._cursor.at(path)

    def add(self, entry: TarEntry, reader: TarReader) -> None:
        try:
            change = self._tree.add(entry)
        except FormatError as err:
            raise _hostile(err) from None
        if change.kind == "skip":
            return
        if change.kind == "opaque":
            os.setxattr(self._dir(change.target), _OPAQUE_XATTR, b"y")
            return
        if change.kind == "whiteout":
            parent, _, base = change.target.rpartition("/")
            parent_fd = self._dir(parent)
            remove_tree(base, dir_fd=parent_fd)
            os.mknod(base, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=parent_fd)
            return
        name = change.name
        flag = entry.typeflag
        if not name:
            self._apply_meta_fd(self._root_fd, entry)
            self._dir_times[""] = entry
            return
        parent, _, base = name.rpartition("/")
        if flag == "1":
            self._make_hardlink(change.target, parent, base)
            return
        parent_fd = self._dir(parent)
        if flag == "5":
            unlink_unless_dir(parent_fd, base)
            self._make_dir(parent_fd, base, entry)
            self._dir_times[name] = entry
            return
        remove_tree(base, dir_fd=parent_fd)
        if flag == "0":
            self._make_file(parent_fd, base, entry, reader)
        elif flag == "2":
            os.symlink(entry.linkname, base, dir_fd=parent_fd)
            self._set_owner(parent_fd, base, entry)
            self._set_time(parent_fd, base, entry)
        else:
            self._make_node(parent_fd, base, entry)

    def _make_dir(self, parent_fd: int, base: str, entry: TarEntry) -> None:
        with contextlib.suppress(FileExistsError):
            os.mkdir(base, 0o700, dir_fd=parent_fd)
        fd = os.open(base, DIR_FLAGS, dir_fd=parent_fd)
        try:
            self._apply_meta_fd(fd, entry)
        finally:
            os.close(fd)

    def _make_file(self, parent_fd: int, base: str, entry: TarEntry, reader: TarReader) -> None:
        fd = os.open(
            base,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=parent_fd,
        )
        try:
            for offset, data in reader.regions(entry, _PIECE):
                self._written += len(data)
                if self._written > self._max_bytes:
                    raise FormatError(
                        f"tar entry {entry.name!r}: the layer's files hold more than "
                        f"{self._max_bytes} bytes (the unpack limit)"
                    )
                view = memoryview(data)
                while view:
                    done = os.pwrite(fd, view, offset)
                    view = view[done:]
                    offset += done
            if entry.sparse is not None:
                os.ftruncate(fd, entry.size)  # trailing hole
            self._apply_meta_fd(fd, entry)
        finally:
            os.close(fd)

    def _make_hardlink(self, target: str, parent: str, base: str) -> None:
        target_parent, _, target_base = target.rpartition("/")
        source_fd = os.dup(self._dir(target_parent))
        try:
            parent_fd = self._dir(parent)
            remove_tree(base, dir_fd=parent_fd)
            os.link(
                target_base,
                base,
                src_dir_fd=source_fd,
                dst_dir_fd=parent_fd,
                follow_symlinks=False,
            )
        finally:
            os.close(source_fd)

    def _make_node(self, parent_fd: int, base: str, entry: TarEntry) -> None:
        kind = {"3": stat.S_IFCHR, "4": stat.S_IFBLK, "6": stat.S_IFIFO}[entry.typeflag]
        if kind != stat.S_IFIFO and not self._is_root:
            log.warning("layer %s: skipping device %r (needs root)", self._layer, entry.name)
            return
        device = 0
        if kind != stat.S_IFIFO:
            if not (0 <= entry.devmajor <= _ID_LIMIT and 0 <= entry.devminor <= _ID_LIMIT):
                raise FormatError(
                    f"tar entry {entry.name!r}: device {entry.devmajor}:{entry.devminor} "
                    "is out of range"
                )
            device = os.makedev(entry.devmajor, entry.devminor)
        os.mknod(base, kind | 0o600, device, dir_fd=parent_fd)
        self._set_owner(parent_fd, base, entry)
        os.chmod(base, entry.mode & 0o7777, dir_fd=parent_fd, follow_symlinks=False)
        self._set_time(parent_fd, base, entry)

    @staticmethod
    def _ids(entry: TarEntry) -> tuple[int, int]:
        for value, what in ((entry.uid, "uid"), (entry.gid, "gid")):
            if not 0 <= value < _ID_LIMIT:
                raise FormatError(f"tar entry {entry.name!r}: {what} {value} is out of range")
        return entry.uid, entry.gid

    def _apply_meta_fd(self, fd: int, entry: TarEntry) -> None:
        uid, gid = self._ids(entry)
        if self._is_root:
            os.fchown(fd, uid, gid)
        for key, value in entry.xattrs.items():
            try:
                os.setxattr(fd, key, value)
            except OSError as err:
                log.warning(
                    "layer %s: xattr %s of %r not set: %s", self._layer, key, entry.name, err
                )
        # After chown, which clears setuid/setgid bits.
        os.fchmod(fd, entry.mode & 0o7777)
        os.utime(fd, ns=_times_ns(entry))

    def _set_owner(self, parent_fd: int, base: str, entry: TarEntry) -> None:
        uid, gid = self._ids(entry)
        if self._is_root:
            os.chown(base, uid, gid, dir_fd=parent_fd, follow_symlinks=False)

    @staticmethod
    def _set_time(parent_fd: int, base: str, entry: TarEntry) -> None:
        os.utime(base, ns=_times_ns(entry), dir_fd=parent_fd, follow_symlinks=False)

    def _set_dir_times(self) -> None:
        """Directory mtimes, once nothing more is created in them (any order will do)."""
        assert self._cursor is not None
        for name, entry in self._dir_times.items():
            try:
                fd = self._cursor.at(name, create=False) if name else self._root_fd
            except (FileNotFoundError, NotADirectoryError, FormatError):
                continue  # replaced or deleted by a later entry
            os.utime(fd, ns=_times_ns(entry))


_NS_LIMIT: Final = 1 << 63


def _hostile(err: FormatError) -> FormatError:
    """A refusal of the layer's tree (names, whiteouts, links), said as such."""
    return FormatError(f"refusing hostile layer: {err.message}")


def _times_ns(entry: TarEntry) -> tuple[int, int]:
    """(atime, mtime) in ns for ``os.utime``; beyond what 64 bits of ns hold, a FormatError."""
    ns = entry.mtime * 1_000_000_000 + entry.mtime_ns
    if not -_NS_LIMIT <= ns < _NS_LIMIT:
        raise FormatError(f"tar entry {entry.name!r}: mtime {entry.mtime} is out of range")
    return ns, ns
