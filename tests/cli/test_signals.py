"""Signals other than Ctrl-C on a real `esgz` process: clean up, one line, 128 + N.

SIGTERM (``timeout``, systemd, Kubernetes) and SIGHUP (the terminal went away) are
handled like Ctrl-C; a stdout pipe closed by its reader (``| head -1``) ends esgz as
SIGPIPE would, quietly with 141.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.cli.process import esgz_command, read_until, start_esgz
from tests.fixtures.cache import REPO_ROOT
from tests.fixtures.images import SampleImage
from tests.runtime.conftest import require_sandbox


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_termination_signal_during_conversion_cleans_up(
    python_image: SampleImage, tmp_path: Path, signum: signal.Signals, code: int
) -> None:
    out = tmp_path / "out"
    cache = tmp_path / "cache"
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
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr.decode()
    assert stderr.decode().strip().splitlines() == [f"esgz: terminated by {signum.name}"]
    events = "".join(seen) + stdout.decode()
    assert '"event":"image_pushed"' not in events
    assert list((cache / "tmp").iterdir()) == []
    if (out / "index.json").exists():
        assert json.loads((out / "index.json").read_text())["manifests"] == []


def test_no_cache_run_terminated_leaves_no_temp_store(
    python_image: SampleImage, tmp_path: Path
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    process = subprocess.Popen(
        [
            *esgz_command(
                "convert", "--oci", "--log-format", "json", "--no-cache",
                python_image.reference, f"local://{tmp_path / 'out'}:x",
            )
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "TMPDIR": str(temp)},
    )  # fmt: skip
    read_until(process.stdout, '"event":"layer_fetched"')
    assert [p.name[:5] for p in temp.iterdir()] == ["esgz-"]
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr.decode()
    assert list(temp.iterdir()) == []


def test_stdout_closed_by_its_reader_is_a_quiet_sigpipe_exit(
    busybox_image: SampleImage,
) -> None:
    process = subprocess.Popen(
        esgz_command("inspect", busybox_image.reference),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    process.stdout.close()  # like `| head -0`: the reader is gone before esgz writes
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 141, stderr.decode()
    assert stderr == b""


def test_head_of_inspect_through_a_shell_pipeline(busybox_image: SampleImage) -> None:
    command = " ".join(f"'{part}'" for part in esgz_command("inspect", busybox_image.reference))
    result = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command} | head -c 1 >/dev/null"],
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=120,
    )
    assert result.returncode in (0, 141), result.stderr.decode()
    assert result.stderr == b""


def test_closed_stdout_during_a_pipeline_run_cleans_up_quietly(
    python_image: SampleImage, tmp_path: Path
) -> None:
    """The events renderer hits EPIPE inside the run's task group: same quiet 141."""
    cache = tmp_path / "cache"
    process = subprocess.Popen(
        esgz_command(
            "convert", "--oci", "--log-format", "json", "--cache-dir", str(cache),
            python_image.reference, f"local://{tmp_path / 'out'}:x",
        ),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    read_until(process.stdout, '"event":"image_resolved"')
    assert process.stdout is not None
    process.stdout.close()
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 141, stderr.decode()
    assert stderr == b""
    assert list((cache / "tmp").iterdir()) == []


TERM_SLEEP = "988"  # an unusual duration, to find the workload's process


def mounts_below(path: Path) -> list[str]:
    targets = subprocess.run(
        ["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True, check=True
    ).stdout.split()
    return [target for target in targets if target.startswith(str(path))]


@pytest.mark.root
def test_sigterm_while_profiling_tears_the_sandbox_down(
    busybox_image: SampleImage, tmp_path: Path
) -> None:
    require_sandbox()
    cache = tmp_path / "cache"
    out = tmp_path / "out"
    process = start_esgz(
        "optimize", "--cache-dir", str(cache), "--period", "120",
        "--args", f'["echo started; exec sleep {TERM_SLEEP}"]',
        busybox_image.reference, f"local://{out}:x",
    )  # fmt: skip
    try:
        read_until(process.stderr, "workload stdout: started")
        assert mounts_below(cache)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == 143, stderr.decode()
    assert stderr.decode().strip().splitlines()[-1] == "esgz: terminated by SIGTERM"
    assert stdout == b""
    assert mounts_below(cache) == []
    assert list((cache / "tmp").iterdir()) == []
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert f"sleep {TERM_SLEEP}" not in processes.splitlines()
    assert not (out / "index.json").exists()
