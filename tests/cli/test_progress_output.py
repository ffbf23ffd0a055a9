"""What a person sees while `esgz optimize` runs: JSON lines, log lines, a real terminal.

Each test runs the CLI of this checkout as a process on the busybox sample image with a
workload that sleeps through its ``--period``, so that the run has a few seconds in which
the layers wait for the profile. The terminal test runs it in a real tmux pane and reads
the screen with ``tmux capture-pane`` while it runs.
"""

from __future__ import annotations

import itertools
import re
import shlex
import shutil
import subprocess
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.process import esgz_command
from tests.fixtures.cache import REPO_ROOT
from tests.fixtures.images import SampleImage
from tests.optimize.support import require_sandbox, run_esgz

pytestmark = [pytest.mark.root, pytest.mark.slow]

SLEEPING = ("--entrypoint", '["/bin/sh", "-c"]', "--args", '["sleep 60"]')


def optimize_args(image: SampleImage, out: Path, period: float, *extra: str) -> list[str]:
    return [
        "optimize",
        "--oci",
        "--no-cache",
        "--period",
        str(period),
        *SLEEPING,
        *extra,
        image.reference,
        f"local://{out}:opt",
    ]


def test_json_lines_tell_each_layers_phases_bytes_and_the_workloads_clock(
    busybox_image: SampleImage, tmp_path: Path
) -> None:
    require_sandbox()
    run = run_esgz(*optimize_args(busybox_image, tmp_path / "out", 2, "--log-format", "json"))
    assert run.returncode == 0, run.stderr
    events = run.events()
    phases: dict[str, list[str]] = defaultdict(list)
    for event in events:
        if event["event"] == "layer_phase":
            phases[event["layer"]].append(event["phase"])
    layers = busybox_image.layers
    assert {layer.digest: phases[layer.digest] for layer in layers} == {
        layer.digest: ["fetch", "wait", "convert", "upload"] for layer in layers
    }
    ticks = [event for event in events if event["event"] == "profile_progress"]
    assert len(ticks) >= 4  # every 0.5 s through a 2 s period
    assert all(tick["period"] == 2 for tick in ticks)
    elapsed = [tick["elapsed"] for tick in ticks]
    assert elapsed == sorted(elapsed)
    assert elapsed[0] == 0
    assert elapsed[-1] >= 2
    # ticks are paced, not a busy loop (the last one comes when the workload is stopped)
    gaps = [b["time"] - a["time"] for a, b in itertools.pairwise(ticks[:-1])]
    assert min(gaps) > 0.2
    kinds = [event["event"] for event in events]
    assert kinds.index("image_profiled") > max(
        i for i, k in enumerate(kinds) if k == "profile_progress"
    )
    for layer in layers:
        read = [
            event
            for event in events
            if event["event"] == "bytes_converted" and event["layer"] == layer.digest
        ]
        (converted,) = [
            event
            for event in events
            if event["event"] == "layer_converted" and event["layer"] == layer.digest
        ]
        assert read[-1]["done"] == read[-1]["total"] == layer.size
        assert read[-1]["written"] == converted["size"]


def test_log_lines_name_each_phase_once_and_no_byte_counts(
    busybox_image: SampleImage, tmp_path: Path
) -> None:
    require_sandbox()
    run = run_esgz(*optimize_args(busybox_image, tmp_path / "out", 1.5))
    assert run.returncode == 0, run.stderr
    lines = [line.removeprefix("esgz: ") for line in run.stderr.splitlines()]
    for layer in busybox_image.layers:
        short = layer.digest[:19]
        for verb in ("fetching", "converting", "uploading"):
            assert sum(1 for line in lines if line.startswith(f"{verb} {short} (")) == 1, verb
    profiling = [line for line in lines if line.startswith("profiling ")]
    assert profiling == [
        f"profiling {busybox_image.reference} ({busybox_image.platform}):"
        " running the workload for up to 1.5s"
    ]
    assert not any(re.search(r"\d/\d|/s\b", line) for line in lines), run.stderr


# ------------------------------------------------------------------ a real terminal

#: A layer row: indented short digest, a phase, then a size with its unit.
LAYER_ROW = re.compile(
    r"^\s+sha256:[0-9a-f]{12}\s+"
    r"(fetch|waiting|wait for profile|convert|compress|converted|upload|done)\s.*"
    r"\d (B|KiB|MiB|GiB)\b"
)
PROFILE_ROW = re.compile(r"^\s+profile \S+\s+workload running\s.*\d+\.\ds / 6s period")


class Tmux:
    """A tmux server of its own (``-L``), so that nothing else's sessions are touched."""

    def __init__(self) -> None:
        self.socket = f"esgz-test-{uuid.uuid4().hex[:8]}"

    def __call__(self, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def screen(self) -> list[str]:
        return self("capture-pane", "-p", "-t", "run").splitlines()


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.skip("needs tmux: apt-get install tmux")
    server = Tmux()
    try:
        yield server
    finally:
        subprocess.run(["tmux", "-L", server.socket, "kill-server"], capture_output=True)


EXITED = re.compile(r"^ESGZ-EXIT=")


def poll(tmux: Tmux, found: re.Pattern[str], seconds: float) -> list[str]:
    """The screen once a line matches ``found`` (checked every 0.2 s, at most ``seconds``).

    Fails at once if the run ended without it.
    """
    deadline = time.monotonic() + seconds
    screen: list[str] = []
    while time.monotonic() < deadline:
        screen = tmux.screen()
        if any(found.search(line) for line in screen):
            return screen
        if any(EXITED.search(line) for line in screen):
            break
        time.sleep(0.2)
    raise AssertionError("not seen: " + found.pattern + "\n" + "\n".join(screen))


def test_a_terminal_shows_a_row_per_layer_with_phase_and_bytes(
    busybox_image: SampleImage, tmp_path: Path, tmux: Tmux
) -> None:
    require_sandbox()
    out = tmp_path / "out"
    script = tmp_path / "run.sh"
    command = shlex.join(esgz_command(*optimize_args(busybox_image, out, 6)))
    # (COLUMNS may be inherited from the test's environment; the pane's size is the truth)
    script.write_text(
        f"unset COLUMNS LINES\ncd {shlex.quote(str(REPO_ROOT))}\n{command}\n"
        "echo ESGZ-EXIT=$?\nsleep 600\n"
    )
    tmux(
        "new-session",
        "-d",
        "-s",
        "run",
        "-x",
        "160",
        "-y",
        "40",
        f"bash {shlex.quote(str(script))}",
    )

    # mid-run: the layers wait for the workload, which runs against its period
    screen = poll(tmux, PROFILE_ROW, 90)
    layer_rows = [line for line in poll(tmux, LAYER_ROW, 30) if LAYER_ROW.search(line)]
    assert len(layer_rows) >= 1, "\n".join(screen)
    rows_text = "\n".join(tmux.screen())
    for layer in busybox_image.layers:
        assert layer.digest[:19] in rows_text, rows_text
    assert re.search(r"\d/2 layers done \(\d/2 fetched, \d/2 converted\)", rows_text), rows_text

    # the end: the display is gone, the summary and the result are printed
    final = poll(tmux, EXITED, 90)
    assert "ESGZ-EXIT=0" in final, "\n".join(final)
    text = "\n".join(final)
    assert "1 image(s) done in" in text
    assert not any(LAYER_ROW.search(line) for line in final), text
    assert (out / "index.json").exists()
