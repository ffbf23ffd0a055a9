"""Check that a converter's output is a valid eStargz / zstd:chunked blob before it is timed.

The reference Go checker (``tests/interop/go/checker``: ``estargz.Open``, ``VerifyTOC``, read
every file and compare it with the source tar) is the judge.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.fixtures.gotools import go_tool_path


class InvalidOutput(RuntimeError):
    """A converter wrote a blob that the reference reader rejects."""


def check_with_go(blob: Path, toc_digest: str, *, zstd: bool, source: Path | None) -> str:
    """Verify ``blob`` with the Go checker; return a one-line verdict or raise InvalidOutput."""
    argv = [str(go_tool_path("checker")), "--blob", str(blob), "--toc-digest", toc_digest]
    argv.append("--json")
    if zstd:
        argv.append("--zstd")
    if source is not None:
        argv += ["--source-tar", str(source)]
    result = subprocess.run(argv, capture_output=True, text=True)
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise InvalidOutput(
            f"Go checker printed no JSON for {blob.name} (exit {result.returncode}): "
            f"{result.stderr.strip()[-500:]}"
        ) from None
    if result.returncode != 0 or not report.get("ok"):
        errors = "; ".join(str(e) for e in (report.get("errors") or [])[:5])
        raise InvalidOutput(f"Go checker rejected {blob.name}: {errors or result.stderr.strip()}")
    what = "content compared with source" if source is not None else "TOC and chunks verified"
    return f"Go checker ok ({what})"


def check_with_reader(blob: Path, toc_digest: str, diff_id: str | None) -> str:
    """Verify ``blob`` with esgz's own reader (TOC digest, every chunk, the DiffID)."""
    try:
        from esgz.estargz.reader import open_layer
    except ImportError:
        return "esgz reader unavailable"
    from esgz.errors import EsgzError

    try:
        with open_layer(blob) as layer:
            layer.verify(toc_digest, check_data=True)
            actual_diff_id, _ = layer.uncompressed_digest()
    except EsgzError as err:
        raise InvalidOutput(f"esgz reader rejected {blob.name}: {err}") from None
    if diff_id is not None and actual_diff_id != diff_id:
        raise InvalidOutput(f"{blob.name}: DiffID {actual_diff_id} != reported {diff_id}")
    return "esgz reader ok (TOC, chunks, DiffID)"
