"""Starting the CLI loads the command definitions only, not the machinery behind them."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.fixtures.cache import REPO_ROOT

#: Loaded when a command needs them (a registry client, the format engine, progress bars).
DEFERRED = ("httpx", "rich", "esgz.registry", "esgz.estargz", "esgz.stages")
#: The registry's value types (no I/O, no httpx): the event types name them.
ALLOWED = ("esgz.registry", "esgz.registry.model", "esgz.registry.untrusted")


def test_importing_the_cli_defers_registry_format_and_rich() -> None:
    code = "import json, sys, esgz.cli.main; print(json.dumps(sorted(sys.modules)))"
    modules = json.loads(
        subprocess.run(
            [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, check=True
        ).stdout
    )
    loaded = [
        m
        for m in modules
        if any(m == p or m.startswith(p + ".") for p in DEFERRED) and m not in ALLOWED
    ]
    assert "esgz.cli.main" in modules
    assert loaded == [], f"loaded at start-up: {loaded}"
