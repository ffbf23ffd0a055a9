"""Ctrl-C on a real `esgz convert` process: one line, exit 130, nothing left behind."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.cli.process import read_until, start_esgz
from tests.fixtures.images import SampleImage


def test_ctrl_c_during_conversion(python_image: SampleImage, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cache = tmp_path / "cache"
    # events go to stdout (JSON lines), so stderr holds nothing but what the interrupt prints
    process = start_esgz(
        "convert",
        "--oci",
        "--log-format",
        "json",
        "--cache-dir",
        str(cache),
        python_image.reference,
        f"local://{out}:x",
    )
    seen = read_until(process.stdout, '"event":"layer_fetched"')
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr.decode()
    assert stderr.decode().strip().splitlines() == ["esgz: interrupted"]
    events = "".join(seen) + stdout.decode()
    assert '"event":"image_pushed"' not in events
    assert '"event":"image_done"' not in events
    assert list((cache / "tmp").iterdir()) == []
    if (out / "index.json").exists():
        assert json.loads((out / "index.json").read_text())["manifests"] == []
