"""Running the ``esgz`` CLI of this checkout as a real process."""

from __future__ import annotations

import signal
import subprocess
import sys
from typing import IO

from tests.fixtures.cache import REPO_ROOT


def esgz_command(*args: str) -> list[str]:
    """The command line running the ``esgz`` CLI of this checkout."""
    return [sys.executable, "-c", "from esgz.cli import main; main()", *args]


def default_sigint() -> None:
    """Restore the default SIGINT handler in a child (a non-interactive parent may ignore it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_esgz(*args: str) -> subprocess.Popen[bytes]:
    """Start ``esgz ARGS`` with piped output, ready to be interrupted with SIGINT."""
    return subprocess.Popen(
        esgz_command(*args),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=default_sigint,
    )


def read_until(stream: IO[bytes] | None, marker: str) -> list[str]:
    """Lines of ``stream`` up to and including the first containing ``marker``."""
    assert stream is not None
    seen: list[str] = []
    while not any(marker in line for line in seen):
        line = stream.readline().decode()
        assert line, f"esgz ended early: {''.join(seen)}"
        seen.append(line)
    return seen
