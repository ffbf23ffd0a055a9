"""Unpack image layers into per-layer directories ready for overlayfs, cached by digest.

Each layer is unpacked once into ``<cache>/<algorithm>-<hex>/root`` (keyed by its diff ID
when known, else its blob digest): the tar is extracted into a temporary sibling directory
which is renamed into place only when complete, so a cached layer is never half-written.
Next to ``root`` an ``index.json`` lists the layer's entries, whiteouts and opaque
directories (:class:`LayerIndex`), which path → layer mapping needs.

The tar is treated as hostile, as a container runtime would:

* names are cleaned; a leading ``/`` is dropped (the name is taken relative to the layer
  root, as containerd and Docker do), a name that climbs out with ``..`` is a
  :class:`~esgz.errors.FormatError` and the layer is refused;
* every parent directory is opened with ``O_NOFOLLOW`` from the layer root, so a symlink
  planted in the layer cannot redirect a later write outside it (FormatError);
* a hard link must point at an earlier non-directory entry inside the layer (FormatError);
* device nodes and FIFOs are created with ``mknod`` (as root; skipped with a warning
  otherwise), owners are applied, and setuid/setgid/sticky bits are kept;
* ``.wh.<name>`` becomes an overlayfs whiteout (a 0:0 character device) named ``<name>``,
  ``.wh..wh..opq`` sets ``trusted.overlay.opaque=y`` on its directory; other ``.wh..wh.``
  entries (aufs metadata) are skipped.

Compression is detected from the blob's first bytes: gzip, zstd or plain tar.
"""

from __future__ import annotations

import errno
import gzip
import json
import logging
import os
import posixpath
import shutil
import stat
import tarfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

import anyio
import zstandard

from esgz.errors import FormatError
from esgz.oci.digest import parse_digest

__all__ = [
    "OPAQUE_MARKER",
    "WHITEOUT_PREFIX",
    "LayerIndex",
    "LayerSource",
    "UnpackedLayer",
    "clean_entry_name",
    "read_layer_index",
    "read_layer_index_sync",
    "unpack_layer",
    "unpack_layer_sync",
]

log = logging.getLogger(__name__)

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_WHITEOUT_META_PREFIX = ".wh..wh."
_OPAQUE_XATTR = "trusted.overlay.opaque"
_INDEX_NAME = "index.json"
_ROOT_NAME = "root"
_COPY_SIZE = 1 << 20


@dataclass(frozen=True, slots=True)
class LayerSource:
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
class LayerIndex:
    """What a layer's tar holds, by cleaned name (no leading ``/``, no ``./``).

    ``entries`` are the real entries (files, directories, links, devices), ``whiteouts``
    the paths the layer deletes (``a/b`` for ``a/.wh.b``), ``opaque_dirs`` the directories
    whose lower contents it hides (``""`` is the root).
    """

    entries: frozenset[str] = frozenset()
    whiteouts: frozenset[str] = frozenset()
    opaque_dirs: frozenset[str] = frozenset()

    def to_json(self) -> str:
        """Serialize (sorted, so the cache file is reproducible)."""
        return json.dumps(
            {
                "entries": sorted(self.entries),
                "whiteouts": sorted(self.whiteouts),
                "opaque_dirs": sorted(self.opaque_dirs),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> LayerIndex:
        """Read back what :meth:`to_json` wrote."""
        data = json.loads(text)
        return cls(
            entries=frozenset(data["entries"]),
            whiteouts=frozenset(data["whiteouts"]),
            opaque_dirs=frozenset(data["opaque_dirs"]),
        )


class _IndexBuilder:
    """Builds a :class:`LayerIndex` from tar entries in order (later entries win)."""

    def __init__(self) -> None:
        self.entries: set[str] = set()
        self.whiteouts: set[str] = set()
        self.opaque: set[str] = set()

    def entry(self, name: str) -> None:
        self.entries.add(name)
        self.whiteouts.discard(name)

    def whiteout(self, deleted: str) -> None:
        self.whiteouts.add(deleted)
        if deleted in self.entries:  # deleting what this same layer added (rare)
            prefix = deleted + "/"
            self.entries = {e for e in self.entries if e != deleted and not e.startswith(prefix)}

    def opaque_dir(self, name: str) -> None:
        self.opaque.add(name)

    def build(self) -> LayerIndex:
        return LayerIndex(
            frozenset(self.entries), frozenset(self.whiteouts), frozenset(self.opaque)
        )


@dataclass(frozen=True, slots=True)
class UnpackedLayer:
    """A layer unpacked in the cache: its overlayfs lower directory and its index."""

    source: LayerSource
    root: Path
    index: LayerIndex = field(default_factory=LayerIndex)


def clean_entry_name(name: str) -> str:
    """Clean a tar or recorded path: no leading ``/`` or ``./``, no ``..`` past the root.

    Only ``/`` separates components (a ``\\`` is part of a name, as on Linux). Returns
    ``""`` for the root itself; raises ValueError for a name that climbs out.
    """
    cleaned = posixpath.normpath("/" + name)
    # normpath keeps a leading "//"; "/.." collapses to "/" so test the raw parts.
    parts = [p for p in name.split("/") if p not in ("", ".")]
    depth = 0
    for part in parts:
        depth = depth - 1 if part == ".." else depth + 1
        if depth < 0:
            raise ValueError(f"{name!r} points outside the layer")
    return cleaned.lstrip("/")


async def unpack_layer(source: LayerSource, cache_root: Path) -> UnpackedLayer:
    """Unpack ``source`` into the cache (once) in a worker thread; see :func:`unpack_layer_sync`."""
    return await anyio.to_thread.run_sync(unpack_layer_sync, source, cache_root)


def unpack_layer_sync(source: LayerSource, cache_root: Path) -> UnpackedLayer:
    """Unpack ``source`` into ``cache_root`` unless already there; return where it is.

    Blocking. Raises FormatError (with the layer digest) for a corrupt or hostile tar.
    """
    final = cache_root / source.cache_key
    cached = _load_cached(source, final)
    if cached is not None:
        return cached
    cache_root.mkdir(parents=True, exist_ok=True)
    temp = cache_root / f".tmp-{source.cache_key}-{uuid.uuid4().hex[:12]}"
    temp.mkdir(mode=0o700)
    try:
        (temp / _ROOT_NAME).mkdir(mode=0o755)
        try:
            index = _extract(source, temp / _ROOT_NAME)
        except FormatError:
            raise
        except (tarfile.TarError, OSError, EOFError, zstandard.ZstdError) as err:
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
            shutil.rmtree(temp, ignore_errors=True)


async def read_layer_index(source: LayerSource) -> LayerIndex:
    """The :class:`LayerIndex` of a layer blob, read in a worker thread without unpacking."""
    return await anyio.to_thread.run_sync(read_layer_index_sync, source)


def read_layer_index_sync(source: LayerSource) -> LayerIndex:
    """Scan a layer blob's tar headers into a :class:`LayerIndex` (blocking).

    For mapping recorded paths or prefetch lists to layers without running anything.
    Names that climb out of the layer are a FormatError, as when unpacking.
    """
    index = _IndexBuilder()
    try:
        with (
            _open_decompressed(source.path) as stream,
            tarfile.open(fileobj=stream, mode="r|") as tar,
        ):
            for member in tar:
                try:
                    name = clean_entry_name(member.name)
                except ValueError as err:
                    raise FormatError(
                        f"refusing hostile layer: {err}", layer=source.digest
                    ) from None
                base = posixpath.basename(name)
                if base == OPAQUE_MARKER:
                    index.opaque_dir(posixpath.dirname(name))
                elif base.startswith(_WHITEOUT_META_PREFIX):
                    continue
                elif base.startswith(WHITEOUT_PREFIX):
                    index.whiteout(
                        posixpath.join(posixpath.dirname(name), base[len(WHITEOUT_PREFIX) :])
                    )
                elif name:
                    index.entry(name)
    except (tarfile.TarError, OSError, EOFError, zstandard.ZstdError) as err:
        raise FormatError(f"cannot read layer: {err}", layer=source.digest) from err
    return index.build()


def _load_cached(source: LayerSource, final: Path) -> UnpackedLayer | None:
    try:
        index = LayerIndex.from_json((final / _INDEX_NAME).read_text())
    except (OSError, ValueError, KeyError):
        return None
    return UnpackedLayer(source=source, root=final / _ROOT_NAME, index=index)


@contextmanager
def _open_decompressed(path: Path) -> Iterator[IO[bytes]]:
    with ExitStack() as stack:
        raw = stack.enter_context(path.open("rb"))
        magic = raw.read(4)
        raw.seek(0)
        if magic[:2] == b"\x1f\x8b":
            gz = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
            yield cast(IO[bytes], gz)
        elif magic == b"\x28\xb5\x2f\xfd":
            reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
            yield stack.enter_context(reader)
        else:
            yield raw


def _extract(source: LayerSource, root: Path) -> LayerIndex:
    extractor = _Extractor(root, source.digest)
    with (
        _open_decompressed(source.path) as stream,
        extractor,
        tarfile.open(fileobj=stream, mode="r|") as tar,
    ):
        for member in tar:
            extractor.add(member, tar)
    return extractor.index()


class _Extractor:
    """Writes tar members below one root directory through ``O_NOFOLLOW`` dir fds."""

    def __init__(self, root: Path, layer: str) -> None:
        self._root = root
        self._layer = layer
        self._root_fd = -1
        self._index = _IndexBuilder()
        self._dir_times: dict[str, tuple[float, float]] = {}
        self._is_root = os.geteuid() == 0

    def __enter__(self) -> _Extractor:
        self._root_fd = os.open(self._root, os.O_RDONLY | os.O_DIRECTORY)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                for name, times in sorted(self._dir_times.items(), reverse=True):
                    self._set_dir_time(name, times)
        finally:
            os.close(self._root_fd)

    def index(self) -> LayerIndex:
        return self._index.build()

    def _fail(self, message: str) -> FormatError:
        return FormatError(f"refusing hostile layer: {message}", layer=self._layer)

    def _clean(self, name: str) -> str:
        try:
            return clean_entry_name(name)
        except ValueError as err:
            raise self._fail(str(err)) from None

    @contextmanager
    def _parent(self, name: str, *, create: bool = True) -> Iterator[int]:
        """An fd of ``name``'s parent directory, walked without following symlinks."""
        parts = name.split("/")[:-1]
        fd = os.dup(self._root_fd)
        try:
            for part in parts:
                try:
                    next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(part, 0o755, dir_fd=fd)
                    next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except OSError as err:
                    if err.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise self._fail(
                            f"{name!r}: parent {part!r} is a symlink or not a directory"
                        ) from None
                    raise
                os.close(fd)
                fd = next_fd
            yield fd
        finally:
            os.close(fd)

    def add(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        name = self._clean(member.name)
        if not name:
            self._apply_root_meta(member)
            return
        base = posixpath.basename(name)
        dirname = posixpath.dirname(name)
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(name, dirname, base)
            return
        with self._parent(name) as parent_fd:
            self._remove_existing(parent_fd, base, keep_dir=member.isdir())
            if member.isdir():
                self._make_dir(parent_fd, base, member)
                self._dir_times[name] = (member.mtime, member.mtime)
            elif member.isreg():
                self._make_file(parent_fd, base, member, tar)
            elif member.issym():
                os.symlink(member.linkname, base, dir_fd=parent_fd)
                self._set_owner(parent_fd, base, member)
                self._set_time(parent_fd, base, member)
            elif member.islnk():
                self._make_hardlink(parent_fd, base, name, member)
            elif member.ischr() or member.isblk() or member.isfifo():
                if not self._make_node(parent_fd, base, name, member):
                    return
            else:
                log.warning("layer %s: skipping %r of unsupported type", self._layer, name)
                return
        self._index.entry(name)

    def _whiteout(self, name: str, dirname: str, base: str) -> None:
        if base == OPAQUE_MARKER:
            with self._parent(name) as dir_fd:
                os.setxattr(dir_fd, _OPAQUE_XATTR, b"y")
            self._index.opaque_dir(dirname)
            return
        if base.startswith(_WHITEOUT_META_PREFIX):
            return
        target = base[len(WHITEOUT_PREFIX) :]
        if not target or target in (".", ".."):
            raise self._fail(f"bad whiteout {name!r}")
        deleted = posixpath.join(dirname, target)
        with self._parent(name) as parent_fd:
            self._remove_existing(parent_fd, target, keep_dir=False)
            os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=parent_fd)
        self._index.whiteout(deleted)

    def _remove_existing(self, parent_fd: int, base: str, *, keep_dir: bool) -> None:
        try:
            st = os.lstat(base, dir_fd=parent_fd)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return
            shutil.rmtree(base, dir_fd=parent_fd)
        else:
            os.unlink(base, dir_fd=parent_fd)

    def _make_dir(self, parent_fd: int, base: str, member: tarfile.TarInfo) -> None:
        with suppress(FileExistsError):
            os.mkdir(base, 0o700, dir_fd=parent_fd)
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
        try:
            self._apply_meta_fd(fd, member)
        finally:
            os.close(fd)

    def _make_file(
        self, parent_fd: int, base: str, member: tarfile.TarInfo, tar: tarfile.TarFile
    ) -> None:
        fd = os.open(
            base,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=parent_fd,
        )
        try:
            data = tar.extractfile(member)
            if data is not None:
                with os.fdopen(os.dup(fd), "wb") as out:
                    shutil.copyfileobj(data, out, _COPY_SIZE)
            self._apply_meta_fd(fd, member)
        finally:
            os.close(fd)

    def _make_hardlink(self, parent_fd: int, base: str, name: str, member: tarfile.TarInfo) -> None:
        target = self._clean(member.linkname)
        if not target or target not in self._index.entries:
            raise self._fail(f"hard link {name!r} points at {member.linkname!r} outside the layer")
        target_base = posixpath.basename(target)
        with self._parent(target, create=False) as target_parent:
            st = os.lstat(target_base, dir_fd=target_parent)
            if stat.S_ISDIR(st.st_mode):
                raise self._fail(f"hard link {name!r} points at directory {target!r}")
            os.link(
                target_base,
                base,
                src_dir_fd=target_parent,
                dst_dir_fd=parent_fd,
                follow_symlinks=False,
            )

    def _make_node(self, parent_fd: int, base: str, name: str, member: tarfile.TarInfo) -> bool:
        if member.isfifo():
            kind = stat.S_IFIFO
        elif member.ischr():
            kind = stat.S_IFCHR
        else:
            kind = stat.S_IFBLK
        if kind != stat.S_IFIFO and not self._is_root:
            log.warning("layer %s: skipping device %r (needs root)", self._layer, name)
            return False
        device = os.makedev(member.devmajor, member.devminor) if kind != stat.S_IFIFO else 0
        os.mknod(base, kind | 0o600, device, dir_fd=parent_fd)
        self._set_owner(parent_fd, base, member)
        os.chmod(base, member.mode & 0o7777, dir_fd=parent_fd, follow_symlinks=False)
        self._set_time(parent_fd, base, member)
        return True

    def _apply_root_meta(self, member: tarfile.TarInfo) -> None:
        if member.isdir():
            self._apply_meta_fd(self._root_fd, member)
            self._dir_times[""] = (member.mtime, member.mtime)

    def _apply_meta_fd(self, fd: int, member: tarfile.TarInfo) -> None:
        if self._is_root:
            os.fchown(fd, member.uid, member.gid)
        for key, value in member.pax_headers.items():
            if key.startswith("SCHILY.xattr."):
                try:
                    os.setxattr(
                        fd, key[len("SCHILY.xattr.") :], value.encode("utf-8", "surrogateescape")
                    )
                except OSError as err:
                    log.warning("layer %s: xattr %s not set: %s", self._layer, key, err)
        # After chown, which clears setuid/setgid bits.
        os.fchmod(fd, member.mode & 0o7777)
        os.utime(fd, (member.mtime, member.mtime))

    def _set_owner(self, parent_fd: int, base: str, member: tarfile.TarInfo) -> None:
        if self._is_root:
            os.chown(base, member.uid, member.gid, dir_fd=parent_fd, follow_symlinks=False)

    def _set_time(self, parent_fd: int, base: str, member: tarfile.TarInfo) -> None:
        os.utime(base, (member.mtime, member.mtime), dir_fd=parent_fd, follow_symlinks=False)

    def _set_dir_time(self, name: str, times: tuple[float, float]) -> None:
        if not name:
            os.utime(self._root_fd, times)
            return
        try:
            with self._parent(name, create=False) as parent_fd:
                os.utime(posixpath.basename(name), times, dir_fd=parent_fd, follow_symlinks=False)
        except (FileNotFoundError, FormatError):
            pass
