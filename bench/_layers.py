"""The benchmark's input layers, built once and cached under ``cache_dir("bench")``.

* ``rootfs``: a tar of a Debian bookworm rootfs (``debootstrap --variant=minbase`` plus a few
  packages, ≈ 300 MiB uncompressed), entries in sorted order, GNU tar format, numeric owners;
  kept both plain (``.tar``) and gzip-compressed (``.tar.gz``, ``gzip -n -6``). Without a
  reachable Debian mirror the rootfs is assembled from the files of installed packages.
* ``rootfs-quick``: the first ≈ 48 MiB of file content of ``rootfs`` (for ``--quick``).
* ``mem-<N>``: an ``N`` MiB layer for the memory check: 1/8 incompressible data, then copies
  of the rootfs under ``copy<i>/`` prefixes until ``N`` MiB of file content.
* ``small-files``: 200 400 entries (400 directories of 500 files of 12–700 bytes of
  text-like content), the per-entry memory check; generated, no rootfs needed.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tests.fixtures.cache import cache_dir

MiB = 1 << 20

#: Bump when the recipe changes, so cached layers are rebuilt.
RECIPE_VERSION = "v1"
SUITE = "bookworm"
EXTRA_PACKAGES = ("python3", "perl", "git", "curl", "ca-certificates")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
#: Minimum uncompressed size of the rootfs layer (issue 2: ≥ 150 MiB).
MIN_ROOTFS_BYTES = 150 * MiB
QUICK_CONTENT_BYTES = 48 * MiB
NOISE_FILE_BYTES = 8 * MiB
#: Directories whose contents a container image does not ship.
_EMPTIED_DIRS = ("dev", "proc", "sys", "run", "tmp", "var/cache/apt", "var/lib/apt/lists")


@dataclass(frozen=True)
class Layer:
    """One cached input layer."""

    name: str
    gz: Path
    #: The same layer uncompressed (``None`` for the generated memory-check layers).
    tar: Path | None
    uncompressed_size: int
    gz_size: int
    entries: int
    origin: str

    def describe(self) -> str:
        """One line: name, sizes, entry count, origin."""
        return (
            f"{self.name}: {self.uncompressed_size / MiB:.1f} MiB tar, "
            f"{self.gz_size / MiB:.1f} MiB gz, {self.entries} entries ({self.origin})"
        )


def _log(message: str) -> None:
    print(f"[layers] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _load(root: Path, name: str) -> Layer | None:
    meta_path = root / f"{name}.json"
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    gz = root / f"{name}.tar.gz"
    tar = root / f"{name}.tar" if meta["has_tar"] else None
    if not gz.is_file() or (tar is not None and not tar.is_file()):
        return None
    return Layer(
        name=name,
        gz=gz,
        tar=tar,
        uncompressed_size=meta["uncompressed_size"],
        gz_size=gz.stat().st_size,
        entries=meta["entries"],
        origin=meta["origin"],
    )


def _save(root: Path, name: str, *, has_tar: bool, entries: int, origin: str, size: int) -> Layer:
    meta = {"has_tar": has_tar, "entries": entries, "origin": origin, "uncompressed_size": size}
    (root / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    layer = _load(root, name)
    assert layer is not None
    return layer


def _gzip(src: Path, dst: Path) -> None:
    """``gzip -n -6`` ``src`` into ``dst`` (through a temp name)."""
    tmp = dst.with_name(dst.name + ".tmp")
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        subprocess.run(["gzip", "-n", "-6", "-c"], stdin=fin, stdout=fout, check=True)
    tmp.rename(dst)


def _count_tar(path: Path) -> tuple[int, int]:
    """(entries, uncompressed byte size) of a tar file."""
    with tarfile.open(path, "r|") as tar:
        entries = sum(1 for _ in tar)
    return entries, path.stat().st_size


def _debootstrap(target: Path, mirror: str) -> None:
    _log(f"debootstrap --variant=minbase {SUITE} from {mirror} (about a minute)")
    subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(EXTRA_PACKAGES)}",
            SUITE,
            str(target),
            mirror,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def _rootfs_from_installed_packages(target: Path) -> None:
    """Fallback: copy the files of installed packages (sorted by name) up to ≈ 300 MiB."""
    _log("assembling the rootfs from the files of installed packages")
    packages = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package}\n"], check=True, capture_output=True, text=True
    ).stdout.split()
    chosen: set[str] = set()
    content = 0
    for package in sorted(packages):
        listing = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True).stdout
        for line in listing.splitlines():
            path = Path(line)
            if not line.startswith("/") or line in chosen or not path.exists():
                continue
            chosen.add(line)
            if path.is_file() and not path.is_symlink():
                content += path.stat().st_size
        if content >= 2 * MIN_ROOTFS_BYTES:
            break
    target.mkdir(parents=True, exist_ok=True)
    file_list = target.with_name(target.name + ".files")
    file_list.write_text("".join(f"{p.lstrip('/')}\n" for p in sorted(chosen)))
    pack = subprocess.Popen(
        ["tar", "-C", "/", "--no-recursion", "-cf", "-", "-T", str(file_list)],
        stdout=subprocess.PIPE,
    )
    subprocess.run(["tar", "-C", str(target), "-xf", "-"], stdin=pack.stdout, check=True)
    assert pack.stdout is not None
    pack.stdout.close()
    if pack.wait() != 0:
        raise RuntimeError("copying installed package files failed")
    file_list.unlink()


def _empty_dirs(root: Path) -> None:
    for rel in _EMPTIED_DIRS:
        directory = root / rel
        if not directory.is_dir():
            continue
        for child in directory.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()


def _tar_tree(root: Path, out: Path) -> None:
    """A tar of ``root`` with entries in sorted order, names without ``./``."""
    tmp = out.with_name(out.name + ".tmp")
    top = sorted(os.listdir(root))
    options = ["--sort=name", "--format=gnu", "--numeric-owner", "-C", str(root)]
    subprocess.run(["tar", *options, "-cf", str(tmp), "--", *top], check=True)
    tmp.rename(out)


def rootfs_layer() -> Layer:
    """The Debian rootfs layer (built on first use, then cached)."""
    root = cache_dir("bench")
    name = f"rootfs-{SUITE}-{RECIPE_VERSION}"
    with _locked(root):
        cached = _load(root, name)
        if cached is not None:
            return cached
        with tempfile.TemporaryDirectory(prefix="rootfs-", dir=root) as scratch:
            tree = Path(scratch) / "root"
            origin = f"debootstrap minbase {SUITE} + {' '.join(EXTRA_PACKAGES)}"
            try:
                _debootstrap(tree, os.environ.get("ESGZ_BENCH_MIRROR", DEFAULT_MIRROR))
            except (OSError, subprocess.CalledProcessError) as err:
                _log(f"debootstrap failed ({err}); falling back to installed packages")
                shutil.rmtree(tree, ignore_errors=True)
                _rootfs_from_installed_packages(tree)
                origin = "files of installed Debian packages"
            _empty_dirs(tree)
            _tar_tree(tree, root / f"{name}.tar")
        entries, size = _count_tar(root / f"{name}.tar")
        if size < MIN_ROOTFS_BYTES:
            raise RuntimeError(f"rootfs tar is only {size / MiB:.0f} MiB, want ≥ 150 MiB")
        _log(f"gzip -6 of {size / MiB:.0f} MiB")
        _gzip(root / f"{name}.tar", root / f"{name}.tar.gz")
        return _save(root, name, has_tar=True, entries=entries, origin=origin, size=size)


def _copy_member(
    src: tarfile.TarFile, member: tarfile.TarInfo, out: tarfile.TarFile, prefix: str
) -> None:
    clone = copy.copy(member)
    clone.name = prefix + member.name
    if member.islnk():
        clone.linkname = prefix + member.linkname
    out.addfile(clone, src.extractfile(member) if member.isreg() else None)


def quick_layer() -> Layer:
    """A ≈ 48 MiB prefix of the rootfs layer, for quick runs during development."""
    full = rootfs_layer()
    assert full.tar is not None
    root = cache_dir("bench")
    name = f"{full.name}-quick"
    with _locked(root):
        cached = _load(root, name)
        if cached is not None:
            return cached
        tmp = root / f"{name}.tar.tmp"
        content = 0
        with (
            tarfile.open(full.tar, "r|") as src,
            tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as out,
        ):
            for member in src:
                _copy_member(src, member, out, "")
                content += member.size
                if content >= QUICK_CONTENT_BYTES:
                    break
        tmp.rename(root / f"{name}.tar")
        entries, size = _count_tar(root / f"{name}.tar")
        _gzip(root / f"{name}.tar", root / f"{name}.tar.gz")
        return _save(
            root, name, has_tar=True, entries=entries, origin=f"prefix of {full.name}", size=size
        )


def _add_noise(out: tarfile.TarFile, total: int, seed: int) -> int:
    rng = random.Random(seed)
    directory = tarfile.TarInfo("noise/")
    directory.type = tarfile.DIRTYPE
    directory.mode = 0o755
    out.addfile(directory)
    written = 0
    index = 0
    while written < total:
        data = rng.randbytes(min(NOISE_FILE_BYTES, total - written))
        info = tarfile.TarInfo(f"noise/blob-{index:03d}.bin")
        info.size = len(data)
        info.mode = 0o644
        info.mtime = 1_700_000_000
        out.addfile(info, _BytesReader(data))
        written += len(data)
        index += 1
    return index + 1


class _BytesReader:
    """A minimal read-only file object over bytes (what ``TarFile.addfile`` needs)."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else min(len(self._data), self._pos + size)
        chunk = bytes(self._data[self._pos : end])
        self._pos = end
        return chunk


def memory_layer(size_mib: int) -> Layer:
    """A ``size_mib`` MiB layer (1/8 incompressible) built from the rootfs, for the RSS check."""
    full = rootfs_layer()
    assert full.tar is not None
    root = cache_dir("bench")
    name = f"mem-{size_mib}-{RECIPE_VERSION}"
    target = size_mib * MiB
    with _locked(root):
        cached = _load(root, name)
        if cached is not None:
            return cached
        _log(f"generating the {size_mib} MiB memory-check layer")
        tmp = root / f"{name}.tar.gz.tmp"
        entries = 0
        with open(tmp, "wb") as sink:
            gzip = subprocess.Popen(["gzip", "-n", "-6"], stdin=subprocess.PIPE, stdout=sink)
            stdin: IO[bytes] | None = gzip.stdin
            assert stdin is not None
            counter = _CountingWriter(stdin)
            with tarfile.open(fileobj=counter, mode="w|", format=tarfile.GNU_FORMAT) as out:  # type: ignore[call-overload]
                noise = target // 8
                entries += _add_noise(out, noise, seed=size_mib)
                content = noise
                copy_index = 0
                while content < target:
                    prefix = f"copy{copy_index}/"
                    with tarfile.open(full.tar, "r|") as src:
                        for member in src:
                            _copy_member(src, member, out, prefix)
                            entries += 1
                            content += member.size
                            if content >= target:
                                break
                    copy_index += 1
            stdin.close()
            if gzip.wait() != 0:
                raise RuntimeError("gzip failed while writing the memory-check layer")
        tmp.rename(root / f"{name}.tar.gz")
        return _save(
            root,
            name,
            has_tar=False,
            entries=entries,
            origin=f"1/8 random data + copies of {full.name}",
            size=counter.written,
        )


class _CountingWriter:
    """Counts the bytes written through it (the tar's uncompressed size)."""

    def __init__(self, sink: IO[bytes]) -> None:
        self._sink = sink
        self.written = 0

    def write(self, data: bytes) -> int:
        self._sink.write(data)
        self.written += len(data)
        return len(data)

    def flush(self) -> None:
        self._sink.flush()


SMALL_DIRS = 400
SMALL_FILES_PER_DIR = 500


def small_files_layer() -> Layer:
    """200 400 entries of 12–700 bytes each: what the writer keeps per TOC entry."""
    root = cache_dir("bench")
    name = f"small-files-{RECIPE_VERSION}"
    with _locked(root):
        cached = _load(root, name)
        if cached is not None:
            return cached
        _log("generating the 200 400-entry small-files layer")
        rng = random.Random(200_400)
        words = [
            "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
            for _ in range(2000)
        ]
        tar_path = root / f"{name}.tar"
        entries = 0
        with tarfile.open(tar_path, "w", format=tarfile.GNU_FORMAT) as out:
            for d in range(SMALL_DIRS):
                directory = tarfile.TarInfo(f"srv/data/d{d:03d}/")
                directory.type = tarfile.DIRTYPE
                directory.mode = 0o755
                directory.mtime = 1_700_000_000
                out.addfile(directory)
                entries += 1
                for f in range(SMALL_FILES_PER_DIR):
                    size = rng.randint(12, 700)
                    text = " ".join(rng.choice(words) for _ in range(size // 4 + 1))
                    data = text.encode()[:size]
                    info = tarfile.TarInfo(f"srv/data/d{d:03d}/file-{f:04d}.txt")
                    info.size = len(data)
                    info.mode = 0o644
                    info.mtime = 1_700_000_000 + f
                    out.addfile(info, _BytesReader(data))
                    entries += 1
        _gzip(tar_path, root / f"{name}.tar.gz")
        return _save(
            root,
            name,
            has_tar=True,
            entries=entries,
            origin="generated: 400 directories x 500 text files of 12-700 bytes",
            size=tar_path.stat().st_size,
        )
