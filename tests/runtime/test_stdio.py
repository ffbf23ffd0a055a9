"""-i (stdin) and -t (terminal), driven from a separate process whose stdin we control."""

from __future__ import annotations

import json
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
lines = []

async def main():
    result = await profile_workload(
        layers, config, WorkloadOptions.model_validate(json.loads(sys.argv[3])),
        work_dir=Path(sys.argv[4]), on_output=lambda stream, line: lines.append([stream, line]),
    )
    print(json.dumps({"lines": lines, "status": result.exit_status}), flush=True)

anyio.run(main, backend=sys.argv[5])
"""


def run_in_process(
    image: SampleImage, work_dir: Path, options: dict[str, object], stdin: bytes, backend: str
) -> dict[str, object]:
    """Profile in a child process fed ``stdin``; its output lines and exit status."""
    require_sandbox()
    layers = [
        [layer.digest, str(image.blob_path(layer.digest)), layer.diff_id] for layer in image.layers
    ]
    config = image.blob_path(str(image.config_digest))
    argv = [json.dumps(layers), str(config), json.dumps(options), str(work_dir), backend]
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, *argv],
        cwd=REPO_ROOT,
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    summary: dict[str, object] = json.loads(result.stdout.decode().splitlines()[-1])
    return summary


# Each test runs its child under one backend; together they cover both.
@pytest.mark.parametrize("backend", ["asyncio"])
def test_stdin_reaches_the_workload(
    busybox_image: SampleImage, tmp_path: Path, backend: str
) -> None:
    summary = run_in_process(
        busybox_image,
        tmp_path / "work",
        {"args": ["cat; echo done >&2"], "stdin": True},
        b"first\nsecond\n",
        backend,
    )
    lines = summary["lines"]
    assert isinstance(lines, list)
    # Two pipes: the order between stdout and stderr lines is not defined.
    assert [line for line in lines if line[0] == "stdout"] == [
        ["stdout", "first"],
        ["stdout", "second"],
    ]
    assert [line for line in lines if line[0] == "stderr"] == [["stderr", "done"]]
    assert summary["status"] == 0


@pytest.mark.parametrize("backend", ["trio"])
def test_terminal(busybox_image: SampleImage, tmp_path: Path, backend: str) -> None:
    summary = run_in_process(
        busybox_image,
        tmp_path / "work",
        {
            "args": ["test -t 0 && test -t 1 && echo on-a-tty; read x; echo got:$x >&2"],
            "terminal": True,
            "stdin": True,
        },
        b"typed\n",
        backend,
    )
    # One terminal carries stdout and stderr, and echoes what is typed.
    lines = summary["lines"]
    assert isinstance(lines, list)
    assert {stream for stream, _ in lines} == {"stdout"}
    assert [line for _, line in lines if line != "typed"] == ["on-a-tty", "got:typed"]
    assert summary["status"] == 0
