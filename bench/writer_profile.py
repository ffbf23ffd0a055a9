"""Time the layer writer on one input (a tuning aid, not the benchmark).

    python bench/writer_profile.py LAYER [--workers N ...] [--level L] [--zstd]
        [--prioritized FILE] [--out PATH]

Runs each worker count in a fresh process and prints wall time, CPU time, throughput
(uncompressed MB/s), output size and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def _child(args: argparse.Namespace) -> None:
    from esgz.estargz import ConvertOptions, convert_layer

    prioritized: tuple[str, ...] = ()
    if args.prioritized:
        lines = Path(args.prioritized).read_text().splitlines()
        prioritized = tuple(line for line in lines if line.strip())
    options = ConvertOptions(
        format="zstdchunked" if args.zstd else "estargz",
        compression_level=args.level,
        prioritized_files=prioritized,
        workers=args.workers[0],
    )
    started = time.perf_counter()
    cpu = time.process_time()
    with open(args.layer, "rb") as src, open(args.out, "wb") as dst:
        result = convert_layer(src, dst, options)
    wall = time.perf_counter() - started
    report = {
        "workers": args.workers[0],
        "wall_s": round(wall, 3),
        "cpu_s": round(time.process_time() - cpu, 3),
        "uncompressed_MBps": round(result.uncompressed_size / wall / 1e6, 1),
        "size": result.size,
        "uncompressed_size": result.uncompressed_size,
        "peak_rss_MiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "digest": result.digest,
    }
    print(json.dumps(report))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("layer")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--level", type=int, default=None)
    parser.add_argument("--zstd", action="store_true")
    parser.add_argument("--prioritized")
    parser.add_argument("--out", default="/tmp/writer_profile.out")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    for workers in args.workers:
        command = [sys.executable, __file__, args.layer, "--child", "--workers", str(workers)]
        command += ["--out", args.out]
        if args.level is not None:
            command += ["--level", str(args.level)]
        if args.zstd:
            command.append("--zstd")
        if args.prioritized:
            command += ["--prioritized", args.prioritized]
        subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
