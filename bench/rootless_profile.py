"""Root against rootless profiling: time and agreement of the records (docs/rootless.md).

``python -m bench.rootless_profile [--runs N]`` (as root: it creates the unprivileged
test user of ``tests/fixtures/rootless.py``). For each workload — python ``import json``,
busybox ``cat`` as ``nobody``, ``go build`` — it profiles the sample image N times in root
mode (in this process, warm layer cache) and N times in rootless mode (as the user, by
``tests/runtime/rootless_driver.py``, so interpreter start-up and the helper are part of
the time, as for a CLI user), and prints the median wall times (root mode also with a
fresh work dir each run, unpacked and removed as in the pipeline), the rootless phases, the
Jaccard index of the ``(layer, path)`` records and the fraction of record pairs in the
same order — also between two root runs, the baseline for workloads whose order varies.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio

from esgz.runtime.profile import profile_workload
from esgz.runtime.workload import WorkloadOptions
from tests.fixtures.goimage import build_go_image
from tests.fixtures.images import SampleImage, build_busybox_image, build_python_image
from tests.fixtures.rootless import RootlessUser, rootless_user
from tests.runtime.conftest import layer_sources

DRIVER = Path(__file__).resolve().parents[1] / "tests" / "runtime" / "rootless_driver.py"
Record = tuple[int, str]


def _root(
    image: SampleImage, workload: dict[str, Any], work: Path, *, warm: bool
) -> tuple[float, list[Record]]:
    async def run() -> list[Record]:
        result = await profile_workload(
            layer_sources(image),
            image.config(),
            WorkloadOptions.model_validate(workload),
            work_dir=work,
        )
        return [(entry.layer_index or 0, entry.path) for entry in result.records()]

    started = time.monotonic()
    records = anyio.run(run)
    if not warm:  # as the pipeline does: its profile work dir is per run
        shutil.rmtree(work)
    return time.monotonic() - started, records


def _rootless(
    user: RootlessUser, image: SampleImage, workload: dict[str, Any]
) -> tuple[float, list[Record], dict[str, float]]:
    work = user.home / f"bench-{uuid.uuid4().hex[:12]}"
    subprocess.run(user.command("mkdir", work), check=True)
    request = {
        "layers": [[lf.digest, str(lf.path), lf.diff_id] for lf in layer_sources(image)],
        "config": image.config(),
        "workload": workload,
        "work_dir": str(work),
    }
    started = time.monotonic()
    done = subprocess.run(
        user.command(user.python, DRIVER, json.dumps(request)),
        env=user.env(),
        cwd=user.home,
        capture_output=True,
        text=True,
        check=True,
    )
    seconds = time.monotonic() - started
    subprocess.run(user.command("rm", "-rf", work), check=True)
    result = json.loads(done.stdout.splitlines()[-1])
    if "records" not in result:
        raise SystemExit(f"rootless run failed: {result}")
    return seconds, [(layer, path) for layer, path in result["records"]], result["timings"]


def _jaccard(a: list[Record], b: list[Record]) -> float:
    union = set(a) | set(b)
    return len(set(a) & set(b)) / len(union) if union else 1.0


def _same_order(a: list[Record], b: list[Record]) -> float:
    position = {record: index for index, record in enumerate(b)}
    ranks = [position[record] for record in a if record in position]
    pairs = same = 0
    for i, rank in enumerate(ranks):
        for later in ranks[i + 1 :]:
            pairs += 1
            same += rank < later
    return same / pairs if pairs else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rootless_profile")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    user = rootless_user()
    cases = [
        ("python import json", build_python_image(), {}),
        (
            "busybox cat as nobody",
            build_busybox_image(),
            {"entrypoint": ["cat", "/etc/passwd"], "args": [], "user": "nobody"},
        ),
        ("go build", build_go_image(), {"period": 300}),
    ]
    with tempfile.TemporaryDirectory(prefix="esgz-bench-") as temp:
        for name, image, workload in cases:
            warm = Path(temp) / "warm"
            root = [_root(image, workload, warm, warm=True) for _ in range(args.runs + 1)][1:]
            cold = [
                _root(image, workload, Path(temp) / f"cold-{i}", warm=False)
                for i in range(args.runs)
            ]
            rootless = [_rootless(user, image, workload) for _ in range(args.runs)]
            base = root[0][1]
            print(f"{name}: {len(base)} records")
            print(f"  root      {statistics.median(t for t, _ in root):6.2f} s (warm layer cache)")
            print(f"  root      {statistics.median(t for t, _ in cold):6.2f} s (unpack and remove)")
            print(f"  rootless  {statistics.median(t for t, _, _ in rootless):6.2f} s, phases", {
                phase: round(statistics.median(r[2].get(phase, 0.0) for r in rootless), 2)
                for phase in ("unpack", "setup", "run", "teardown")
            })  # fmt: skip
            pairs = [("root/root", root[1][1] if len(root) > 1 else base)]
            pairs += [(f"root/rootless #{i + 1}", r[1]) for i, r in enumerate(rootless)]
            for label, other in pairs:
                print(
                    f"  {label:18} Jaccard {_jaccard(base, other):.3f}"
                    f"  pairs in the same order {_same_order(base, other):.3f}"
                )


if __name__ == "__main__":
    main()
