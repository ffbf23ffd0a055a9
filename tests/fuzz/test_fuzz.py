"""Coverage-guided fuzzing of every parser of outside input (atheris), short and long.

The default suite fuzzes each target for ``ESGZ_FUZZ_SECONDS`` (default 2) seconds,
starting from its seeds plus the corpus earlier runs grew in the test cache. The long run
is behind the ``fuzz`` marker (deselected by default)::

    ESGZ_FUZZ_SECONDS=300 .venv/bin/python -m pytest -m fuzz tests/fuzz

A target fails when an input ends in anything but an EsgzError, exceeds ``-timeout``
seconds or ``-rss_limit_mb`` of memory; the report shows the traceback and the input.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.cache import REPO_ROOT, cache_dir
from tests.fuzz.targets import TARGETS

#: Limits every input must stay within.
PER_INPUT_TIMEOUT = 10
RSS_LIMIT_MB = 2048


def _fuzz(name: str, seconds: int, artifacts: Path) -> None:
    corpus = cache_dir("fuzz-corpus", name)
    command = [
        sys.executable,
        "-m",
        "tests.fuzz.run",
        name,
        str(corpus),
        f"-max_total_time={seconds}",
        f"-timeout={PER_INPUT_TIMEOUT}",
        f"-rss_limit_mb={RSS_LIMIT_MB}",
        f"-artifact_prefix={artifacts}/",
        "-print_final_stats=1",
    ]
    done = subprocess.run(
        command,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=seconds + 120,
        check=False,
    )
    if done.returncode != 0:
        crashes = sorted(artifacts.iterdir())
        inputs = "\n".join(
            f"{path.name}: {base64.b64encode(path.read_bytes()[:4096]).decode()}"
            for path in crashes
        )
        pytest.fail(
            f"fuzz target {name!r} failed:\n{done.stderr[-6000:]}\ninputs (base64):\n{inputs}"
        )
    assert "Done" in done.stderr, done.stderr[-2000:]


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_briefly(name: str, tmp_path: Path) -> None:
    _fuzz(name, int(os.environ.get("ESGZ_FUZZ_SECONDS", "2")), tmp_path)


@pytest.mark.fuzz
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_long(name: str, tmp_path: Path) -> None:
    _fuzz(name, int(os.environ.get("ESGZ_FUZZ_SECONDS", "300")), tmp_path)
