"""Run a converter as a child process and measure it: wall time, CPU time, peak RSS.

Each converter runs in its own process so that ``ru_utime + ru_stime`` (from ``os.wait4``)
is its CPU time over all of its threads. Its peak resident set comes from GNU ``time``
(``/usr/bin/time -f %M``) when installed: Linux carries a process's peak RSS across
``exec``, so a child forked straight from this (large) Python process would report at least
this process's own RSS; forked from the small ``time`` process it reports its own peak.
Without ``time``, ``ru_maxrss`` is used and is only an upper bound.
"""

from __future__ import annotations

import os
import shutil
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
    gnu_time = shutil.which("time", path="/usr/bin:/bin")
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r") as rss_file,
    ):
        command = list(argv)
        if gnu_time is not None:
            command = [gnu_time, "-q", "-f", "%M", "-o", rss_file.name, *command]
        busy_before = machine_busy_seconds()
        start = time.perf_counter()
        proc = subprocess.Popen(
            command, cwd=cwd, env=None if env is None else dict(env), stdout=out, stderr=err
        )
        _, status, usage = os.wait4(proc.pid, 0)
        max_rss_kib = usage.ru_maxrss  # Linux reports KiB
        if gnu_time is not None:
            max_rss_kib = int(rss_file.read().split()[-1])
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
        max_rss=max_rss_kib * 1024,
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
