"""Ctrl-C on a real `esgz convert` process: one line, exit 130, nothing left behind."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from tests.fixtures.cache import REPO_ROOT
from tests.fixtures.images import SampleImage


def test_ctrl_c_during_conversion(python_image: SampleImage, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cache = tmp_path / "cache"
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from esgz.cli import main; main()",
            "convert",
            "--oci",
            "--cache-dir",
            str(cache),
            python_image.reference,
            f"local://{out}:x",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # a non-interactive parent may have SIGINT ignored; give the child the default
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stderr is not None
    seen = []
    while not any("fetched" in line for line in seen):
        line = process.stderr.readline().decode()
        assert line, f"esgz ended early: {''.join(seen)}"
        seen.append(line)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr.decode()
    assert stderr.decode().strip().splitlines() == ["esgz: interrupted"]
    assert stdout == b""
    assert list((cache / "tmp").iterdir()) == []
    if (out / "index.json").exists():
        assert json.loads((out / "index.json").read_text())["manifests"] == []
