"""Raw deflate speed at the eStargz level (9) over 4 MiB pieces: the floor of a conversion.

The layer's uncompressed tar is cut into 4 MiB pieces (the default chunk size), held in
memory, and each piece is compressed independently as a raw deflate stream, on 1 and 2
threads, with stdlib ``zlib``, ``zlib_ng``, libdeflate (the ``deflate`` package) and
``isal``. ISA-L has no level 9: its highest level, 3, is measured instead. This bounds
how fast any converter that deflates every byte at that level can be.
"""

from __future__ import annotations

import contextlib
import resource
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench._measure import machine_busy_seconds

MiB = 1 << 20
PIECE_BYTES = 4 * MiB
#: A repetition during which other processes used more than this share of one CPU is redone.
NOISE_LIMIT = 0.1
#: ... but other load below this many CPU seconds is always tolerated (short runs).
NOISE_FLOOR_S = 0.5

Compressor = Callable[[bytes], int]


def _zlib_like(module: object, level: int) -> Compressor:
    compressobj = getattr(module, "compressobj")  # noqa: B009 - the three modules share this API

    def compress(piece: bytes) -> int:
        engine = compressobj(level, zlib.DEFLATED, -15)
        return len(engine.compress(piece)) + len(engine.flush())

    return compress


def available_compressors() -> dict[str, tuple[int, Compressor]]:
    """``name -> (level, compress-one-piece)`` for each installed deflate implementation."""
    found: dict[str, tuple[int, Compressor]] = {"zlib": (9, _zlib_like(zlib, 9))}
    try:
        from zlib_ng import zlib_ng
    except ImportError:
        pass
    else:
        found["zlib-ng"] = (9, _zlib_like(zlib_ng, 9))
    try:
        import deflate as libdeflate
    except ImportError:
        pass
    else:

        def compress_libdeflate(piece: bytes) -> int:
            return len(libdeflate.deflate_compress(piece, 9))

        found["libdeflate"] = (9, compress_libdeflate)
    try:
        from isal import isal_zlib
    except ImportError:
        pass
    else:
        found["isal"] = (3, _zlib_like(isal_zlib, 3))
    return found


def library_versions() -> dict[str, str]:
    """Version strings of the deflate libraries (for the record)."""
    versions = {"zlib": zlib.ZLIB_RUNTIME_VERSION}
    try:
        from zlib_ng import zlib_ng

        versions["zlib-ng"] = str(zlib_ng.ZLIBNG_VERSION)
    except ImportError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    for library, package in (("libdeflate", "deflate"), ("isal", "isal")):
        with contextlib.suppress(PackageNotFoundError):
            versions[library] = f"{package} {version(package)} (PyPI)"
    return versions


@dataclass(frozen=True)
class DeflateResult:
    """Best-of-N wall time to deflate every piece, and the total compressed size."""

    library: str
    level: int
    threads: int
    wall_s: float
    input_bytes: int
    output_bytes: int
    #: CPU time other processes used during the kept repetition.
    other_cpu_s: float = 0.0

    @property
    def mib_per_s(self) -> float:
        """Throughput over the uncompressed input."""
        return self.input_bytes / MiB / self.wall_s

    def as_dict(self) -> dict[str, object]:
        """Machine-readable form."""
        return {
            "library": self.library,
            "level": self.level,
            "threads": self.threads,
            "wall_s": round(self.wall_s, 3),
            "mib_per_s": round(self.mib_per_s, 1),
            "input_bytes": self.input_bytes,
            "output_bytes": self.output_bytes,
            "other_cpu_s": round(self.other_cpu_s, 2),
        }


def load_pieces(tar: Path, piece_bytes: int = PIECE_BYTES) -> list[bytes]:
    """The tar cut into ``piece_bytes`` pieces (the last one shorter)."""
    pieces = []
    with open(tar, "rb") as f:
        while piece := f.read(piece_bytes):
            pieces.append(piece)
    return pieces


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(
    pieces: list[bytes],
    library: str,
    level: int,
    compress: Compressor,
    threads: int,
    reps: int,
    noise_retries: int = 0,
) -> DeflateResult:
    """Deflate all ``pieces`` on ``threads`` threads, ``reps`` times; keep the best time.

    A repetition during which other processes used more than ``NOISE_LIMIT`` of one CPU
    does not count and is repeated (at most ``noise_retries`` extra runs per repetition).
    """
    best = float("inf")
    best_other = 0.0
    output = 0
    quiet = attempts = 0
    with ThreadPoolExecutor(max_workers=threads) as pool:
        while quiet < reps and attempts < reps * (1 + noise_retries):
            attempts += 1
            busy, own = machine_busy_seconds(), _own_cpu_seconds()
            start = time.perf_counter()
            output = sum(pool.map(compress, pieces))
            wall = time.perf_counter() - start
            other = max(0.0, machine_busy_seconds() - busy - (_own_cpu_seconds() - own))
            if other <= max(NOISE_FLOOR_S, NOISE_LIMIT * wall):
                quiet += 1
            if wall < best:
                best, best_other = wall, other
    return DeflateResult(
        library=library,
        level=level,
        threads=threads,
        wall_s=best,
        input_bytes=sum(len(p) for p in pieces),
        output_bytes=output,
        other_cpu_s=best_other,
    )


def run_baseline(
    tar: Path, reps: int, noise_retries: int = 0, libraries: Sequence[str] | None = None
) -> list[DeflateResult]:
    """Every available library (or those named) on 1 and 2 threads."""
    pieces = load_pieces(tar)
    results = []
    for library, (level, compress) in available_compressors().items():
        if libraries is not None and library not in libraries:
            continue
        for threads in (1, 2):
            results.append(measure(pieces, library, level, compress, threads, reps, noise_retries))
    return results
