"""Benchmark: the same workload profiled natively (amd64) and under qemu-user-static (arm64).

Uses the multi-arch python image of the tests (:mod:`tests.fixtures.multiarch`: Debian's
amd64 and arm64 packages) and runs each workload with
:func:`esgz.runtime.profile.profile_workload` on both platforms' layers, N times each,
after one warm-up run (layers unpacked, page cache warm). It reports the ``run`` phase —
from ``runc start`` to the workload's exit, what ``--period`` bounds — and the whole
profile (unpack, container setup, run, teardown), best of N, and the emulated/native
ratio. qemu-aarch64 is registered in binfmt_misc first, as the tests do.

Run from the repository root, as root::

    .venv/bin/python bench/emulation.py [--reps N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio

from esgz.runtime.profile import profile_workload
from esgz.runtime.unpack import LayerFile
from esgz.runtime.workload import WorkloadOptions
from tests.fixtures.images import SampleImage
from tests.fixtures.multiarch import QEMU_HANDLERS, build_multiarch_python_image, register_qemu

#: name → command line (run by the image's busybox sh)
WORKLOADS = {
    "python -c pass": "python3 -c pass",
    "python /app/main.py (import json)": "python3 /app/main.py",
    "python: 20k json round trips": (
        'python3 -c \'import json; [json.loads(json.dumps({"a": [i, str(i)]}))'
        " for i in range(20000)]'"
    ),
    "busybox: 200 x cat": "for i in $(seq 200); do cat /app/data.json >/dev/null; done",
}


async def _profile(image: SampleImage, manifest: SampleImage, command: str, work: Path) -> Any:
    layers = [LayerFile(layer.digest, image.blob_path(layer.digest)) for layer in manifest.layers]
    config = manifest.config()
    workload = WorkloadOptions(entrypoint=["/bin/sh", "-c"], args=[command], period=120)
    return await profile_workload(layers, config, workload, work_dir=work)


async def _main(reps: int) -> list[dict[str, Any]]:
    image = build_multiarch_python_image()
    register_qemu(QEMU_HANDLERS.values())
    rows = []
    with tempfile.TemporaryDirectory(prefix="esgz-bench-emulation-") as temp:
        work = Path(temp)
        for name, command in WORKLOADS.items():
            row: dict[str, Any] = {"workload": name}
            for manifest in image.manifests:
                await _profile(image, manifest, command, work)  # warm-up
                runs = []
                for _ in range(reps):
                    result = await _profile(image, manifest, command, work)
                    assert result.exit_status == 0, result.output_tail
                    runs.append(result.timings)
                arch = (manifest.platform or "").split("/")[-1]
                row[f"{arch} run"] = min(t["run"] for t in runs)
                row[f"{arch} total"] = min(sum(t.values()) for t in runs)
            row["ratio run"] = row["arm64 run"] / row["amd64 run"]
            rows.append(row)
            print(
                f"{name:38} run: amd64 {row['amd64 run']:6.2f}s  arm64 {row['arm64 run']:6.2f}s"
                f"  x{row['ratio run']:4.1f}   whole profile: amd64 {row['amd64 total']:6.2f}s"
                f"  arm64 {row['arm64 total']:6.2f}s",
                flush=True,
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="runs per platform (best is kept)")
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    args = parser.parse_args(argv)
    rows = anyio.run(_main, args.reps)
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()


if __name__ == "__main__":
    main()
