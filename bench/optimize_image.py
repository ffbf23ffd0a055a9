"""Benchmark: optimize a golang-like image registry-to-registry, esgz vs ``ctr-remote`` 0.12.

The image (:func:`bench._image_sources.golang_image`: 4 gzip layers, ≈ 330 MiB
uncompressed, workload ``go version``) is pushed with skopeo to a plain-HTTP
``docker-registry`` on a free loopback port, then optimized to eStargz (OCI media types),
each tool running the image's own workload, by

* ``ctr-remote`` against a private containerd started here (fresh root for every run):
  ``image pull --plain-http``, ``image optimize --oci`` (runs the workload in its own
  container, then converts), ``image push --plain-http``;
* ``esgz optimize --oci --plain-http`` (empty cache for every run), its events logged as
  JSON lines, from which the timeline of its phases is drawn (fetch, profile, convert,
  upload per layer).

Each step runs as a child process (wall time; CPU time and peak RSS through GNU ``time``);
the CPU time containerd and the registry spend during each step is read from ``/proc``.
Both results are inspected with skopeo and checked with ``esgz verify``. The report goes
to stdout, the JSON record to ``bench/results/optimize_image-<UTC time>.json``;
``--plot DIR`` draws the timeline and the comparison as PNG files (needs matplotlib:
``pip install 'esgz[bench]'``).

Run from the repository root, as root::

    .venv/bin/python bench/optimize_image.py [--reps N] [--plot bench/results] [--json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._image_services import (
    Containerd,
    Registry,
    ServiceError,
    require_tools,
    run_containerd,
    run_registry,
    unmount_all,
)
from bench._image_sources import golang_image, push_layout
from bench._image_steps import PathRun, run_step
from bench._measure import MiB, RunFailed
from bench.convert_image import _esgz_argv, verify_outputs
from tests.fixtures.cache import REPO_ROOT
from tests.fixtures.images import SampleImage

TARGET_WALL_RATIO = 0.2
RESULTS_DIR = REPO_ROOT / "bench" / "results"
SOURCE = "bench/golang:v1"


def _log(message: str) -> None:
    print(f"[optimize_image] {message}", file=sys.stderr, flush=True)


# --- the two paths --------------------------------------------------------------------------


def ctr_remote_path(containerd: Containerd, registry: Registry, target: str) -> PathRun:
    """Pull, optimize (the image's workload, ``--oci``) and push with ``ctr-remote``."""
    run = PathRun("ctr-remote")
    daemons = {"containerd": containerd.pid, "registry": registry.pid}
    src_ref, dst_ref = registry.ref(SOURCE), registry.ref(target)
    pull = containerd.ctr_remote("image", "pull", "--plain-http", src_ref)
    run.steps.append(run_step("pull", pull, daemons))
    optimize = containerd.ctr_remote("image", "optimize", "--oci", src_ref, dst_ref)
    run.steps.append(run_step("optimize", optimize, daemons))
    push = containerd.ctr_remote("image", "push", "--plain-http", dst_ref)
    run.steps.append(run_step("push", push, daemons))
    return run


@dataclass
class EsgzRun:
    """One ``esgz optimize`` and the timeline its events give."""

    run: PathRun
    events: list[dict[str, Any]] = field(default_factory=list)

    def timeline(self) -> list[dict[str, Any]]:
        """Bars ``{lane, phase, start, end}`` in seconds since the first event."""
        if not self.events:
            return []
        t0 = self.events[0]["time"]
        bars: list[dict[str, Any]] = []
        open_phase: dict[str, tuple[str, float]] = {}
        short = {}  # layer digest → "layer N" in order of first appearance
        for event in self.events:
            layer = event.get("layer")
            if layer and layer not in short:
                short[layer] = f"layer {len(short) + 1} ({layer[7:15]})"
            now = event["time"] - t0
            kind = event["event"]
            if kind == "layer_phase" and layer:
                if layer in open_phase:
                    phase, start = open_phase.pop(layer)
                    bars.append({"lane": short[layer], "phase": phase, "start": start, "end": now})
                open_phase[layer] = (event["phase"], now)
            elif kind in ("layer_uploaded", "layer_converted") and layer in open_phase:
                phase, start = open_phase[layer]
                if phase in ("upload", "convert"):
                    del open_phase[layer]
                    bars.append({"lane": short[layer], "phase": phase, "start": start, "end": now})
            elif kind == "image_profiled":
                bars.append(
                    {
                        "lane": "workload",
                        "phase": "profile (unpack + run)",
                        "start": now - event["seconds"],
                        "end": now,
                    }
                )
        end = self.events[-1]["time"] - t0
        for layer, (phase, start) in open_phase.items():
            if phase not in ("wait",):
                bars.append({"lane": short[layer], "phase": phase, "start": start, "end": end})
        return bars


def esgz_optimize_path(registry: Registry, target: str, cache: Path) -> EsgzRun:
    """``esgz optimize --oci --plain-http`` with an empty cache, events as JSON lines."""
    argv = [*_esgz_argv(), "optimize", "--oci", "--plain-http", "--cache-dir", str(cache)]
    argv += ["--log-format", "json", registry.url(SOURCE), registry.url(target)]
    run = PathRun("esgz")
    step = run_step("esgz optimize", argv, {"registry": registry.pid})
    run.steps.append(step)
    events = []
    for line in step.sample.stdout.splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return EsgzRun(run, events)


# --- report ---------------------------------------------------------------------------------


def _mib(size: int) -> str:
    return f"{size / MiB:.1f} MiB"


def _rows(runs: Sequence[PathRun]) -> list[str]:
    rows = []
    for run in runs:
        rows.append(
            f"| {run.tool} | {run.wall_s:.1f} | {run.cpu_s:.1f} | "
            f"{run.daemon_cpu('containerd'):.1f} | {run.daemon_cpu('registry'):.1f} | "
            f"{_mib(run.peak_rss)} | {_mib(run.output_size)} | {run.other_cpu_s:.1f} |"
        )
    return rows


def render(image: SampleImage, ctr: list[PathRun], esgz: list[EsgzRun]) -> list[str]:
    """Markdown table, steps, and the ratio of the best runs."""
    uncompressed = sum(layer.uncompressed_size for layer in image.layers)
    lines = [
        f"image: {len(image.layers)} gzip layers, {_mib(uncompressed)} uncompressed, "
        f"{_mib(sum(layer.size for layer in image.layers))} compressed, workload `go version`",
        "",
        "| tool | wall s | cpu s (client) | cpu s (containerd) | cpu s (registry) |"
        " peak RSS client | output layers | other cpu s |",
        "|---|---|---|---|---|---|---|---|",
        *_rows(ctr),
        *_rows([e.run for e in esgz]),
        "",
    ]
    for run in [*ctr, *(e.run for e in esgz)]:
        lines.append(f"  {run.tool}: {run.verified}")
        for step in run.steps:
            lines.append(
                f"    {step.name:<16} wall {step.sample.wall_s:6.1f} s  cpu"
                f" {step.sample.cpu_s:6.1f} s  containerd cpu"
                f" {step.daemon_cpu_s.get('containerd', 0.0):5.1f} s"
            )
    if esgz:
        best = min(esgz, key=lambda e: e.run.wall_s)
        lines.append("")
        lines.append("esgz timeline (s since the first event):")
        for bar in best.timeline():
            lines.append(
                f"    {bar['lane']:<28} {bar['phase']:<24} {bar['start']:6.1f} → {bar['end']:6.1f}"
            )
    if ctr and esgz:
        ratio = min(e.run.wall_s for e in esgz) / min(r.wall_s for r in ctr)
        lines += ["", f"wall esgz/ctr-remote = {ratio:.2f}x (target ≤ {TARGET_WALL_RATIO}x)"]
    return lines


_LEGEND = {
    "wait": "queued (members being compressed in the background meanwhile)",
    "convert": "convert (waits for its layer's compression, then assembles)",
}


def plot(record: dict[str, Any], directory: Path, stamp: str) -> list[Path]:
    """The esgz timeline and the wall/CPU comparison as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    bars = record.get("esgz_timeline") or []
    if bars:
        lanes = sorted({bar["lane"] for bar in bars}, key=lambda lane: (lane != "workload", lane))
        colors = {
            "fetch": "tab:blue",
            "profile (unpack + run)": "tab:orange",
            "convert": "tab:green",
            "upload": "tab:purple",
            "wait": "lightgray",
        }
        fig, ax = plt.subplots(figsize=(10, 2.2 + 0.6 * len(lanes)))
        for bar in bars:
            ax.barh(
                lanes.index(bar["lane"]),
                bar["end"] - bar["start"],
                left=bar["start"],
                color=colors.get(bar["phase"], "tab:gray"),
                label=_LEGEND.get(bar["phase"], bar["phase"]),
            )
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        ax.legend(
            unique.values(),
            unique.keys(),
            loc="upper center",
            bbox_to_anchor=(0.5, -0.18),
            ncol=2,
            fontsize="small",
        )
        ax.set_yticks(range(len(lanes)), lanes)
        ax.invert_yaxis()
        ax.set_xlabel("seconds")
        ax.set_title("esgz optimize, golang-like image: phases (members compressed during profile)")
        fig.tight_layout()
        path = directory / f"optimize_image-timeline-{stamp}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    runs = [*record.get("ctr_remote", []), *record.get("esgz", [])]
    if runs:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        names = [f"{run['tool']} #{i + 1}" for i, run in enumerate(runs)]
        wall = [run["wall_s"] for run in runs]
        cpu = [run["cpu_s"] + sum(run["daemon_cpu_s"].values()) for run in runs]
        ys = range(len(runs))
        ax.barh([y - 0.2 for y in ys], wall, height=0.4, label="wall s")
        ax.barh([y + 0.2 for y in ys], cpu, height=0.4, label="cpu s (client + daemons)")
        ax.set_yticks(list(ys), names)
        ax.invert_yaxis()
        ax.legend(fontsize="small")
        ax.set_title("optimize registry → registry (machine under load: compare ratios)")
        fig.tight_layout()
        path = directory / f"optimize_image-comparison-{stamp}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


# --- main -----------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/optimize_image.py",
        description="Optimize a golang-like image registry-to-registry: esgz vs ctr-remote 0.12.",
    )
    parser.add_argument("--reps", type=int, default=1, help="runs per tool")
    parser.add_argument("--no-ctr", action="store_true", help="skip ctr-remote (esgz only)")
    parser.add_argument("--json", action="store_true", help="print the JSON record on stdout")
    parser.add_argument("--plot", type=Path, default=None, help="write PNG plots into DIR")
    parser.add_argument(
        "--replot", type=Path, default=None, help="only draw the plots of a saved JSON record"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the temp dir")
    parser.add_argument(
        "--nice", type=int, default=-10, help="scheduling priority (default -10; 0 to leave it)"
    )
    return parser.parse_args(argv)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def _workdir(parent: Path | None) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="esgz-bench-optimize-", dir=parent))
    try:
        yield path
    finally:
        unmount_all(path)
        shutil.rmtree(path, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the report (stdout), save the JSON record (and plots)."""
    args = _parse_args(argv)
    if args.replot is not None:
        saved = json.loads(args.replot.read_text())
        stamp = args.replot.stem.rsplit("-", 1)[-1]
        for path in plot(saved, args.plot or args.replot.parent, stamp):
            _log(f"wrote {path}")
        return 0
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    ctr: list[PathRun] = []
    esgz: list[EsgzRun] = []
    try:
        require_tools("docker-registry", "skopeo", "runc", *([] if args.no_ctr else ["ctr-remote"]))
        image = golang_image()
        with _workdir(args.workdir) as work, run_registry(work / "registry") as registry:
            _log(f"pushing {image.layout} ({len(image.layers)} layers) to {registry.host}")
            push_layout(image, registry.ref(SOURCE))
            for rep in range(args.reps):
                tools = ["ctr-remote", "esgz"] if rep % 2 == 0 else ["esgz", "ctr-remote"]
                for tool in tools:
                    if tool == "ctr-remote" and args.no_ctr:
                        continue
                    _log(f"run {rep + 1}/{args.reps}: {tool}")
                    if tool == "ctr-remote":
                        target = f"bench/ctr-out-{rep}:v1"
                        with run_containerd(work / f"containerd-{rep}") as containerd:
                            run = ctr_remote_path(containerd, registry, target)
                        shutil.rmtree(work / f"containerd-{rep}", ignore_errors=True)
                        ctr.append(run)
                    else:
                        target = f"bench/esgz-out-{rep}:v1"
                        cache = work / f"esgz-cache-{rep}"
                        measured = esgz_optimize_path(registry, target, cache)
                        shutil.rmtree(cache, ignore_errors=True)
                        esgz.append(measured)
                        run = measured.run
                    verify_outputs(run, registry, [target], work / "verify-cache")
                    _log(f"  {tool}: {run.wall_s:.1f} s wall, {run.other_cpu_s:.1f} s other cpu")
    except (ServiceError, RunFailed, RuntimeError) as exc:
        print(f"optimize_image: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("optimize_image: interrupted; daemons stopped, temp files removed", file=sys.stderr)
        return 130
    best = min(esgz, key=lambda e: e.run.wall_s) if esgz else None
    record: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "loadavg": os.getloadavg(),
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "target_wall_ratio": TARGET_WALL_RATIO,
        "layers": len(image.layers),
        "uncompressed_bytes": sum(layer.uncompressed_size for layer in image.layers),
        "ctr_remote": [run.as_dict() for run in ctr],
        "esgz": [e.run.as_dict() for e in esgz],
        "esgz_timeline": best.timeline() if best else [],
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS_DIR / f"optimize_image-{stamp}.json").write_text(json.dumps(record, indent=1))
    if args.plot is not None:
        for path in plot(record, args.plot, stamp):
            _log(f"wrote {path}")
    if args.json:
        print(json.dumps(record, indent=1))
        return 0
    print("\n".join([f"{record['date']}  {record['command']}", "", *render(image, ctr, esgz)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
