"""--wait-on-signal: no period; SIGINT ends the run normally (in a separate process)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.cache import REPO_ROOT
from tests.fixtures.images import SampleImage
from tests.runtime.conftest import require_sandbox

pytestmark = pytest.mark.root

SCRIPT = """
import json, sys
from pathlib import Path
import anyio
from esgz.runtime.profile import profile_workload
from esgz.runtime.unpack import LayerFile
from esgz.runtime.workload import WorkloadOptions

layers = [LayerFile(d, Path(p), i) for d, p, i in json.loads(sys.argv[1])]
config = json.loads(Path(sys.argv[2]).read_text())

def show(stream, line):
    print(line, flush=True)

async def main():
    result = await profile_workload(
        layers, config,
        WorkloadOptions(args=["echo started; sleep 1000"], wait_on_signal=True, period=0.5),
        work_dir=Path(sys.argv[3]), on_output=show,
    )
    print(json.dumps({"signal": result.stopped_on_signal, "expired": result.period_expired,
                      "status": result.exit_status, "layers": result.prioritized}), flush=True)

anyio.run(main, backend=sys.argv[4])
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sigint_ends_the_run_and_keeps_the_profile(
    busybox_image: SampleImage, tmp_path: Path, backend: str
) -> None:
    require_sandbox()
    layers = [
        [layer.digest, str(busybox_image.blob_path(layer.digest)), layer.diff_id]
        for layer in busybox_image.layers
    ]
    config = busybox_image.blob_path(str(busybox_image.config_digest))
    work_dir = f"{tmp_path}/work"
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, json.dumps(layers), str(config), work_dir, backend],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "started"
        # Longer than the (ignored) period: the workload keeps running until the signal.
        subprocess.run(["sleep", "1"], check=True)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0
    summary = json.loads(output.strip().splitlines()[-1])
    assert summary == {
        "signal": True,
        "expired": False,
        "status": 128 + signal.SIGKILL,
        "layers": [["bin/busybox"], []],
    }
