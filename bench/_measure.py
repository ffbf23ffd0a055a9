"""Run a converter as a child process and measure it: wall time, CPU time, peak RSS.

Each converter runs in its own process so that ``ru_maxrss`` (from ``os.wait4``) is the peak
resident set of that converter alone, and ``ru_utime + ru_stime`` its CPU time over all of
its threads.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MiB = 1 << 20


class RunFailed(RuntimeError):
    """A measured child process exited with a non-zero status."""


@dataclass(frozen=True)
class Sample:
    """One measured run of a child process."""

    wall_s: float
    user_s: float
    sys_s: float
    #: Peak resident set size of the child, in bytes.
    max_rss: int
    stdout: str
    #: CPU time the rest of the machine used meanwhile (``/proc/stat`` busy time minus the
    #: child's): other load that can skew the wall time on a shared machine.
    other_cpu_s: float = 0.0

    @property
    def cpu_s(self) -> float:
        """User + system CPU time of the child (all threads)."""
        return self.user_s + self.sys_s


def run_measured(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Sample:
    """Run ``argv`` to completion and return its measurements; raise :class:`RunFailed`."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        busy_before = machine_busy_seconds()
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(argv), cwd=cwd, env=None if env is None else dict(env), stdout=out, stderr=err
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        busy = machine_busy_seconds() - busy_before
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    if proc.returncode != 0:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        raise RunFailed(f"{argv[0]} exited with {proc.returncode}:\n{tail}")
    return Sample(
        wall_s=wall,
        user_s=usage.ru_utime,
        sys_s=usage.ru_stime,
        max_rss=usage.ru_maxrss * 1024,  # Linux reports KiB
        stdout=stdout,
        other_cpu_s=max(0.0, busy - usage.ru_utime - usage.ru_stime),
    )


def machine_busy_seconds() -> float:
    """CPU seconds spent by all CPUs in non-idle states since boot (``/proc/stat``)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


@dataclass
class Series:
    """The samples of one converter configuration, and the size of what it wrote."""

    label: str
    samples: list[Sample] = field(default_factory=list)
    output_size: int = 0
    verified: str = "not verified"

    @property
    def best_wall(self) -> float:
        """Fastest wall time."""
        return min(s.wall_s for s in self.samples)

    @property
    def median_wall(self) -> float:
        """Median wall time."""
        return statistics.median(s.wall_s for s in self.samples)

    @property
    def median_cpu(self) -> float:
        """Median user + system CPU time."""
        return statistics.median(s.cpu_s for s in self.samples)

    @property
    def max_other_cpu(self) -> float:
        """Largest CPU time used by other processes during one kept sample."""
        return max(s.other_cpu_s for s in self.samples)

    @property
    def peak_rss(self) -> int:
        """Largest peak RSS over the samples, in bytes."""
        return max(s.max_rss for s in self.samples)

    def as_dict(self) -> dict[str, object]:
        """Machine-readable summary (seconds, bytes)."""
        return {
            "label": self.label,
            "runs": len(self.samples),
            "wall_s": [round(s.wall_s, 3) for s in self.samples],
            "best_wall_s": round(self.best_wall, 3),
            "median_wall_s": round(self.median_wall, 3),
            "median_cpu_s": round(self.median_cpu, 3),
            "other_cpu_s": [round(s.other_cpu_s, 2) for s in self.samples],
            "peak_rss_bytes": self.peak_rss,
            "output_size_bytes": self.output_size,
            "verified": self.verified,
        }


def drop_into_page_cache(path: Path) -> None:
    """Read ``path`` once so that every timed run starts with a warm page cache."""
    with open(path, "rb") as f:
        while f.read(8 * MiB):
            pass
