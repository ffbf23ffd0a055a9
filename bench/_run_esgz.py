"""Child-process runner: convert one layer with the esgz writer and print a JSON summary.

``python -m bench._run_esgz --in LAYER --out BLOB [--format estargz|zstdchunked]
[--level N] [--chunk-size N] [--workers N]``

Run by ``bench/convert_layer.py`` in a process of its own, so that its wall time, CPU time
and peak RSS are those of the esgz conversion alone (plus the interpreter start).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from esgz.estargz.constants import DEFAULT_CHUNK_SIZE
from esgz.estargz.convert import convert_layer
from esgz.estargz.options import ConvertOptions


def main() -> None:
    """Parse arguments, convert, print ``{digest, toc_digest, diff_id, size}`` as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench._run_esgz")
    parser.add_argument("--in", dest="src", type=Path, required=True)
    parser.add_argument("--out", dest="dst", type=Path, required=True)
    parser.add_argument("--format", choices=["estargz", "zstdchunked"], default="estargz")
    parser.add_argument("--level", type=int, default=None)
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()

    options = ConvertOptions(
        format=args.format,
        compression_level=args.level,
        chunk_size=args.chunk_size or DEFAULT_CHUNK_SIZE,
        workers=args.workers,
    )

    tmp = args.dst.with_name(f".{args.dst.name}.tmp")
    with open(args.src, "rb") as src, open(tmp, "wb") as dst:
        result = convert_layer(src, dst, options)
    os.replace(tmp, args.dst)
    print(
        json.dumps(
            {
                "digest": str(result.digest),
                "toc_digest": str(result.toc_digest),
                "diff_id": str(result.diff_id),
                "size": int(result.size),
            }
        )
    )


if __name__ == "__main__":
    main()
