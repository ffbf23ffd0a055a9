"""Measured steps of the image benchmark and what a conversion path produced.

A *step* is one child process (``ctr-remote image pull``, ``esgz convert``, …): its wall
time, CPU time and peak RSS come from ``os.wait4`` (see :mod:`bench._measure`), and the CPU
time the daemons spent meanwhile (containerd, the registry) from ``/proc``. A *path* is the
sequence of steps that converts one image registry-to-registry, plus the pushed result.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bench._image_services import DaemonUsage
from bench._image_sources import inspect_raw
from bench._measure import RunFailed, Sample, machine_busy_seconds

TOC_DIGEST_ANNOTATION = "containerd.io/snapshot/stargz/toc.digest"


def run_child(argv: Sequence[str], env: Mapping[str, str] | None = None) -> Sample:
    """Run ``argv`` to completion and measure it; kill it if we are interrupted.

    Like :func:`bench._measure.run_measured`, but the child is killed (SIGTERM, then
    SIGKILL) when the wait is interrupted, e.g. by Ctrl-C, so no converter outlives the
    benchmark.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        busy_before = machine_busy_seconds()
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=None if env is None else dict(env),
        )
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
        wall = time.perf_counter() - start
        busy = machine_busy_seconds() - busy_before
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    if proc.returncode != 0:
        tail = "\n".join((stderr.strip() or stdout.strip()).splitlines()[-15:])
        raise RunFailed(f"{' '.join(argv)} exited with {proc.returncode}:\n{tail}")
    return Sample(
        wall_s=wall,
        user_s=usage.ru_utime,
        sys_s=usage.ru_stime,
        max_rss=usage.ru_maxrss * 1024,
        stdout=stdout,
        other_cpu_s=max(0.0, busy - usage.ru_utime - usage.ru_stime),
    )


@dataclass(frozen=True)
class Step:
    """One measured child process and the daemons' CPU time during it."""

    name: str
    sample: Sample
    #: CPU seconds each daemon (by name) used while the step ran.
    daemon_cpu_s: Mapping[str, float]


def run_step(name: str, argv: Sequence[str], daemons: Mapping[str, int]) -> Step:
    """Run one step; ``daemons`` maps names to pids whose CPU time is counted alongside."""
    before = {label: DaemonUsage.of(pid).cpu_s for label, pid in daemons.items()}
    sample = run_child(argv)
    after = {label: DaemonUsage.of(pid).cpu_s for label, pid in daemons.items()}
    return Step(name, sample, {label: after[label] - before[label] for label in daemons})


@dataclass(frozen=True)
class PushedImage:
    """What a path left in the registry: its manifest and layer descriptors."""

    reference: str
    media_type: str
    layer_sizes: tuple[int, ...]
    layer_digests: tuple[str, ...]
    layer_media_types: tuple[str, ...]
    toc_annotated: int

    @property
    def size(self) -> int:
        """Sum of the layer sizes."""
        return sum(self.layer_sizes)

    @classmethod
    def inspect(cls, reference: str) -> PushedImage:
        """Read the manifest of ``reference`` (``host/repo:tag``) with skopeo."""
        manifest = json.loads(inspect_raw(reference))
        layers = manifest.get("layers", [])
        return cls(
            reference=reference,
            media_type=str(manifest.get("mediaType", "")),
            layer_sizes=tuple(int(layer["size"]) for layer in layers),
            layer_digests=tuple(str(layer["digest"]) for layer in layers),
            layer_media_types=tuple(str(layer["mediaType"]) for layer in layers),
            toc_annotated=sum(
                1 for layer in layers if TOC_DIGEST_ANNOTATION in layer.get("annotations", {})
            ),
        )


@dataclass
class PathRun:
    """One conversion of one image (or a batch) by one tool: its steps and its outputs."""

    tool: str
    steps: list[Step] = field(default_factory=list)
    outputs: list[PushedImage] = field(default_factory=list)
    #: Peak RSS of the daemons that did part of the work (containerd), by name.
    daemon_peak_rss: dict[str, int] = field(default_factory=dict)
    verified: str = "not verified"

    @property
    def wall_s(self) -> float:
        """Wall time of all steps."""
        return sum(step.sample.wall_s for step in self.steps)

    @property
    def cpu_s(self) -> float:
        """CPU time of the client processes (user + system, all threads)."""
        return sum(step.sample.cpu_s for step in self.steps)

    def daemon_cpu(self, name: str) -> float:
        """CPU time daemon ``name`` used during the steps."""
        return sum(step.daemon_cpu_s.get(name, 0.0) for step in self.steps)

    @property
    def peak_rss(self) -> int:
        """Largest peak RSS of a client process."""
        return max((step.sample.max_rss for step in self.steps), default=0)

    @property
    def other_cpu_s(self) -> float:
        """CPU time of unrelated processes during the steps (machine noise)."""
        return sum(step.sample.other_cpu_s for step in self.steps)

    @property
    def output_size(self) -> int:
        """Sum of the layer sizes of every output image."""
        return sum(image.size for image in self.outputs)

    def as_dict(self) -> dict[str, object]:
        """Machine-readable record (seconds, bytes)."""
        return {
            "tool": self.tool,
            "wall_s": round(self.wall_s, 3),
            "cpu_s": round(self.cpu_s, 3),
            "daemon_cpu_s": {
                name: round(self.daemon_cpu(name), 3)
                for name in sorted({n for step in self.steps for n in step.daemon_cpu_s})
            },
            "peak_rss_bytes": self.peak_rss,
            "daemon_peak_rss_bytes": self.daemon_peak_rss,
            "other_cpu_s": round(self.other_cpu_s, 2),
            "output_size_bytes": self.output_size,
            "verified": self.verified,
            "steps": [
                {
                    "name": step.name,
                    "wall_s": round(step.sample.wall_s, 3),
                    "cpu_s": round(step.sample.cpu_s, 3),
                    "peak_rss_bytes": step.sample.max_rss,
                    "daemon_cpu_s": {k: round(v, 3) for k, v in step.daemon_cpu_s.items()},
                }
                for step in self.steps
            ],
            "outputs": [
                {
                    "reference": image.reference,
                    "media_type": image.media_type,
                    "layer_sizes": list(image.layer_sizes),
                    "layer_media_types": sorted(set(image.layer_media_types)),
                    "toc_annotated_layers": image.toc_annotated,
                }
                for image in self.outputs
            ],
        }
