"""Benchmark: convert a whole image registry-to-registry, esgz vs Debian's ``ctr-remote`` 0.12.

Single mode (default): one image (default 256 MiB uncompressed in 6 gzip layers, built from
installed files) is pushed with skopeo to a plain-HTTP ``docker-registry`` on a free loopback
port, then converted to eStargz with OCI media types by

* ``ctr-remote`` against a private containerd started here (fresh root for every run):
  ``image pull --plain-http``, ``image optimize --no-optimize --oci``, ``image push
  --plain-http``;
* ``esgz convert --oci --plain-http`` (empty cache for every run).

Each step runs as a child process (wall time; CPU time and peak RSS from ``os.wait4``); the
CPU time containerd and the registry spend during each step is read from ``/proc``. Both
results are inspected with skopeo and checked with ``esgz verify``.

Batch mode (``--batch``): 10 images sharing two base layers, converted by one ``esgz run``
pipeline; its JSON event log shows each base layer converted once. Optionally the same 10
images through ``ctr-remote`` one after the other (one containerd).

Run from the repository root, as root::

    .venv/bin/python bench/convert_image.py [--reps N] [--json]
    .venv/bin/python bench/convert_image.py --batch [--no-ctr-batch]
    .venv/bin/python bench/convert_image.py --all
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
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._image_services import (
    Containerd,
    DaemonUsage,
    Registry,
    ServiceError,
    require_tools,
    run_containerd,
    run_registry,
    unmount_all,
)
from bench._image_sources import batch_images, push_layout, single_image
from bench._image_steps import PathRun, PushedImage, run_child, run_step
from bench._measure import MiB, RunFailed
from tests.fixtures.cache import REPO_ROOT
from tests.fixtures.images import SampleImage

TARGET_WALL_RATIO = 0.25
BATCH_SIZE = 10
BASE_LAYERS = 2
RESULTS_DIR = REPO_ROOT / "bench" / "results"
ESGZ_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def _log(message: str) -> None:
    print(f"[convert_image] {message}", file=sys.stderr, flush=True)


def _esgz_argv() -> list[str]:
    script = Path(sys.executable).with_name("esgz")
    return [str(script)] if script.exists() else [sys.executable, "-m", "esgz.cli"]


# --- the two paths --------------------------------------------------------------------------


def ctr_remote_path(
    containerd: Containerd, registry: Registry, sources: Sequence[str], targets: Sequence[str]
) -> PathRun:
    """Pull, optimize (``--no-optimize --oci``) and push each source with ``ctr-remote``."""
    run = PathRun("ctr-remote")
    daemons = {"containerd": containerd.pid, "registry": registry.pid}
    for source, target in zip(sources, targets, strict=True):
        src_ref, dst_ref = registry.ref(source), registry.ref(target)
        pull = containerd.ctr_remote("image", "pull", "--plain-http", src_ref)
        run.steps.append(run_step(f"pull {source}", pull, daemons))
        optimize = containerd.ctr_remote(
            "image", "optimize", "--no-optimize", "--oci", src_ref, dst_ref
        )
        run.steps.append(run_step(f"optimize {source}", optimize, daemons))
        push = containerd.ctr_remote("image", "push", "--plain-http", dst_ref)
        run.steps.append(run_step(f"push {target}", push, daemons))
    run.daemon_peak_rss["containerd"] = DaemonUsage.of(containerd.pid).peak_rss
    return run


def esgz_convert_path(registry: Registry, source: str, target: str, cache: Path) -> PathRun:
    """``esgz convert --oci --plain-http`` with an empty cache."""
    run = PathRun("esgz")
    argv = [*_esgz_argv(), "convert", "--oci", "--plain-http", "--cache-dir", str(cache), "-q"]
    argv += [registry.url(source), registry.url(target)]
    run.steps.append(run_step("esgz convert", argv, {"registry": registry.pid}))
    return run


def verify_outputs(run: PathRun, registry: Registry, targets: Sequence[str], cache: Path) -> None:
    """Inspect each target with skopeo and check it with ``esgz verify``; fail loudly."""
    for target in targets:
        image = PushedImage.inspect(registry.ref(target))
        if image.toc_annotated != len(image.layer_sizes) or not image.layer_sizes:
            raise RunFailed(
                f"{run.tool}: {target}: {image.toc_annotated} of {len(image.layer_sizes)}"
                " layers carry the TOC-digest annotation"
            )
        if set(image.layer_media_types) != {ESGZ_LAYER}:
            raise RunFailed(f"{run.tool}: {target}: layer types {set(image.layer_media_types)}")
        argv = [*_esgz_argv(), "verify", "--plain-http", "--cache-dir", str(cache), "-q"]
        run_child([*argv, registry.url(target)])
        run.outputs.append(image)
    run.verified = f"skopeo inspect + esgz verify: {len(targets)} image(s) ok"


# --- single image ---------------------------------------------------------------------------


@dataclass
class SingleResult:
    """Runs of both paths on the one benchmark image."""

    image: SampleImage
    ctr: list[PathRun] = field(default_factory=list)
    esgz: list[PathRun] = field(default_factory=list)

    @staticmethod
    def best(runs: list[PathRun]) -> PathRun:
        """The least disturbed run (fastest wall time)."""
        return min(runs, key=lambda run: run.wall_s)


def run_single(args: argparse.Namespace, work: Path, registry: Registry) -> SingleResult:
    """Push the benchmark image, then convert it ``--reps`` times with each tool."""
    image = single_image(args.total_mib, args.layer_mib)
    result = SingleResult(image)
    _log(f"pushing {image.layout} ({len(image.layers)} layers) to {registry.host}")
    push_layout(image, registry.ref("bench/src:v1"))
    for rep in range(args.reps):
        # Alternate the order so that slow drifts of the machine's load hit both tools.
        tools = ["ctr-remote", "esgz"] if rep % 2 == 0 else ["esgz", "ctr-remote"]
        for tool in tools:
            if tool == "ctr-remote" and args.no_ctr:
                continue
            _log(f"run {rep + 1}/{args.reps}: {tool}")
            if tool == "ctr-remote":
                target = f"bench/ctr-out-{rep}:v1"
                with run_containerd(work / f"containerd-{rep}") as containerd:
                    run = ctr_remote_path(containerd, registry, ["bench/src:v1"], [target])
                shutil.rmtree(work / f"containerd-{rep}", ignore_errors=True)
                result.ctr.append(run)
            else:
                target = f"bench/esgz-out-{rep}:v1"
                cache = work / f"esgz-cache-{rep}"
                run = esgz_convert_path(registry, "bench/src:v1", target, cache)
                shutil.rmtree(cache, ignore_errors=True)
                result.esgz.append(run)
            verify_outputs(run, registry, [target], work / "verify-cache")
            _log(f"  {tool}: {run.wall_s:.1f} s wall, {run.other_cpu_s:.1f} s cpu of other load")
    return result


# --- batch ----------------------------------------------------------------------------------


@dataclass
class BatchResult:
    """One ``esgz run`` over the batch, the conversions its events show, and ctr-remote's."""

    images: list[SampleImage]
    esgz: PathRun
    #: Per base layer (source digest): how many times it was converted / taken from cache.
    base_converted: dict[str, int]
    base_cached: dict[str, int]
    #: Distinct output digests the base layers have across the 10 targets.
    base_outputs: int
    ctr: PathRun | None = None


def _pipeline_yaml(registry: Registry, pairs: Sequence[tuple[str, str]], cache: Path) -> str:
    config = {
        "defaults": {"oci": True, "no_optimize": True, "plain_http": True},
        "cache": {"dir": str(cache)},
        "registries": {registry.host: {"plain_http": True}},
        "images": [
            {"source": registry.url(source), "target": registry.url(target)}
            for source, target in pairs
        ],
    }
    return json.dumps(config, indent=1)  # JSON is YAML


def run_batch(args: argparse.Namespace, work: Path, registry: Registry) -> BatchResult:
    """Push 10 images sharing a base, convert them with one ``esgz run``, check the events."""
    base = single_image(args.total_mib, args.layer_mib)
    images = batch_images(base, BATCH_SIZE, BASE_LAYERS)
    base_digests = [layer.digest for layer in base.layers[:BASE_LAYERS]]
    _log(f"pushing {len(images)} images sharing {BASE_LAYERS} base layers to {registry.host}")
    for image in images:
        push_layout(image, registry.ref(f"bench/{image.tag}:v1"))
    sources = [f"bench/{image.tag}:v1" for image in images]
    esgz_targets = [f"bench/{image.tag}-esgz:v1" for image in images]

    pipeline = work / "batch.yaml"
    pipeline.write_text(
        _pipeline_yaml(registry, list(zip(sources, esgz_targets, strict=True)), work / "cache")
    )
    _log(f"esgz run over {len(images)} images")
    argv = [*_esgz_argv(), "run", "--log-format", "json", str(pipeline)]
    esgz = PathRun("esgz")
    esgz.steps.append(run_step("esgz run", argv, {"registry": registry.pid}))
    converted: Counter[str] = Counter()
    cached: Counter[str] = Counter()
    for line in esgz.steps[0].sample.stdout.splitlines():
        event = json.loads(line)
        if event.get("event") == "layer_converted":
            (cached if event["cached"] else converted)[event["layer"]] += 1
    verify_outputs(esgz, registry, esgz_targets, work / "verify-cache")
    base_outputs = len({image.layer_digests[i] for image in esgz.outputs for i in range(2)})
    result = BatchResult(
        images=images,
        esgz=esgz,
        base_converted={digest: converted[digest] for digest in base_digests},
        base_cached={digest: cached[digest] for digest in base_digests},
        base_outputs=base_outputs,
    )
    _log(f"  esgz run: {esgz.wall_s:.1f} s")
    if not args.no_ctr and not args.no_ctr_batch:
        _log(f"ctr-remote over the same {len(images)} images, one after the other")
        ctr_targets = [f"bench/{image.tag}-ctr:v1" for image in images]
        with run_containerd(work / "containerd-batch") as containerd:
            result.ctr = ctr_remote_path(containerd, registry, sources, ctr_targets)
        verify_outputs(result.ctr, registry, ctr_targets, work / "verify-cache")
        _log(f"  ctr-remote: {result.ctr.wall_s:.1f} s")
    return result


# --- report ---------------------------------------------------------------------------------


def _mib(size: int) -> str:
    return f"{size / MiB:.1f} MiB"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def _path_rows(runs: Sequence[PathRun]) -> list[str]:
    rows = []
    for run in runs:
        ctrd = run.daemon_cpu("containerd")
        ctrd_rss = run.daemon_peak_rss.get("containerd")
        rows.append(
            f"| {run.tool} | {run.wall_s:.1f} | {run.cpu_s:.1f} | "
            f"{ctrd:.1f} | {run.daemon_cpu('registry'):.1f} | {_mib(run.peak_rss)} | "
            f"{'-' if ctrd_rss is None else _mib(ctrd_rss)}"
            f" | {_mib(run.output_size)} | {run.other_cpu_s:.1f} |"
        )
    return rows


TABLE_HEAD = [
    "| tool | wall s | cpu s (client) | cpu s (containerd) | cpu s (registry) | peak RSS client |"
    " peak RSS containerd | output layers | other cpu s |",
    "|---|---|---|---|---|---|---|---|---|",
]


def _step_lines(run: PathRun) -> list[str]:
    return [
        f"    {step.name:<40} wall {step.sample.wall_s:6.1f} s  cpu {step.sample.cpu_s:6.1f} s"
        f"  containerd cpu {step.daemon_cpu_s.get('containerd', 0.0):5.1f} s"
        f"  rss {_mib(step.sample.max_rss)}"
        for step in run.steps
    ]


def render_single(result: SingleResult) -> list[str]:
    """The table and ratios of single mode."""
    image = result.image
    uncompressed = sum(layer.uncompressed_size for layer in image.layers)
    lines = [
        f"image: {len(image.layers)} gzip layers, {_mib(uncompressed)} uncompressed, "
        f"{_mib(sum(layer.size for layer in image.layers))} compressed",
        "",
        *TABLE_HEAD,
        *_path_rows([*result.ctr, *result.esgz]),
        "",
    ]
    for run in [*result.ctr, *result.esgz]:
        lines += [f"  {run.tool} steps ({run.verified}):", *_step_lines(run)]
    if result.ctr and result.esgz:
        ctr, esgz = result.best(result.ctr), result.best(result.esgz)
        ctr_total_cpu = ctr.cpu_s + ctr.daemon_cpu("containerd")
        wall_ratio = esgz.wall_s / ctr.wall_s
        verdict = "met" if wall_ratio <= TARGET_WALL_RATIO else "MISSED"
        lines += [
            "",
            f"wall esgz/ctr-remote = {wall_ratio:.2f}x (target <= {TARGET_WALL_RATIO}x: {verdict})",
            f"cpu esgz/ctr-remote (client + containerd) = {_ratio(esgz.cpu_s, ctr_total_cpu)}",
            f"peak RSS esgz/ctr-remote client = {_ratio(esgz.peak_rss, ctr.peak_rss)}; "
            f"esgz/containerd = {_ratio(esgz.peak_rss, ctr.daemon_peak_rss['containerd'])}",
            f"output size esgz/ctr-remote = {_ratio(esgz.output_size, ctr.output_size)}",
        ]
    return lines


def render_batch(result: BatchResult) -> list[str]:
    """The batch table and the base-layer evidence."""
    runs = [result.esgz] + ([result.ctr] if result.ctr else [])
    lines = [
        f"batch: {len(result.images)} images, {BASE_LAYERS} shared base layers + 2 own layers each",
        "",
        *TABLE_HEAD,
        *_path_rows(runs),
        "",
    ]
    for digest in result.base_converted:
        lines.append(
            f"base layer {digest[:19]}: converted {result.base_converted[digest]}x, "
            f"taken from the conversion cache {result.base_cached[digest]}x (esgz run events)"
        )
    once = all(count == 1 for count in result.base_converted.values())
    lines.append(
        f"base converted once: {'yes' if once else 'NO'}; distinct base-layer outputs across "
        f"the {len(result.images)} targets: {result.base_outputs} (expected {BASE_LAYERS})"
    )
    if result.ctr:
        lines.append(
            f"wall esgz/ctr-remote (batch) = {_ratio(result.esgz.wall_s, result.ctr.wall_s)}"
        )
    return lines


# --- main -----------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/convert_image.py",
        description="Convert an image registry-to-registry: esgz convert vs ctr-remote 0.12.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--batch", action="store_true", help="only the 10-image batch")
    mode.add_argument("--all", action="store_true", help="single image and batch")
    parser.add_argument("--reps", type=int, default=1, help="runs per tool (single mode)")
    parser.add_argument("--total-mib", type=int, default=256, help="image size, uncompressed")
    parser.add_argument("--layer-mib", type=int, default=48, help="about this much per layer")
    parser.add_argument("--no-ctr", action="store_true", help="skip ctr-remote (esgz only)")
    parser.add_argument("--no-ctr-batch", action="store_true", help="skip ctr-remote in batch")
    parser.add_argument("--json", action="store_true", help="print the JSON record on stdout")
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the temp dir")
    parser.add_argument(
        "--nice",
        type=int,
        default=-10,
        help="scheduling priority for this script and everything it starts (default -10:"
        " both tools ahead of unrelated load on a shared machine; 0 to leave it)",
    )
    return parser.parse_args(argv)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def _workdir(parent: Path | None) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="esgz-bench-image-", dir=parent))
    try:
        yield path
    finally:
        unmount_all(path)
        shutil.rmtree(path, ignore_errors=True)


def _record(
    args: argparse.Namespace, single: SingleResult | None, batch: BatchResult | None
) -> dict[str, object]:
    record: dict[str, object] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "target_wall_ratio": TARGET_WALL_RATIO,
    }
    if single is not None:
        record["single"] = {
            "layers": len(single.image.layers),
            "uncompressed_bytes": sum(layer.uncompressed_size for layer in single.image.layers),
            "compressed_bytes": sum(layer.size for layer in single.image.layers),
            "ctr_remote": [run.as_dict() for run in single.ctr],
            "esgz": [run.as_dict() for run in single.esgz],
        }
    if batch is not None:
        record["batch"] = {
            "images": len(batch.images),
            "esgz": batch.esgz.as_dict(),
            "base_converted": batch.base_converted,
            "base_cached": batch.base_cached,
            "base_outputs": batch.base_outputs,
            "ctr_remote": batch.ctr.as_dict() if batch.ctr else None,
        }
    return record


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the report (stdout) and save the JSON record."""
    args = _parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    if args.nice:
        # Inherited by the registry, containerd and every measured child alike.
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    try:
        require_tools("docker-registry", "skopeo", *([] if args.no_ctr else ["ctr-remote"]))
        single: SingleResult | None = None
        batch: BatchResult | None = None
        with _workdir(args.workdir) as work, run_registry(work / "registry") as registry:
            if not args.batch:
                single = run_single(args, work, registry)
            if args.batch or args.all:
                batch = run_batch(args, work, registry)
    except (ServiceError, RunFailed, RuntimeError) as exc:
        print(f"convert_image: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("convert_image: interrupted; daemons stopped and temp files removed", file=sys.stderr)
        return 130
    record = _record(args, single, batch)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS_DIR / f"convert_image-{stamp}.json").write_text(json.dumps(record, indent=1))
    if args.json:
        print(json.dumps(record, indent=1))
        return 0
    lines = [f"{record['date']}  {record['command']}"]
    if single is not None:
        lines += ["", *render_single(single)]
    if batch is not None:
        lines += ["", *render_batch(batch)]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
