"""Build and run ``tests/oci/go/ocicheck``: containerd's platforms package,
docker/distribution's reference package and Go's encoding/json, used as references for
the platform parser, the reference parser and the config rewrite.

Built in GOPATH mode against Debian's Go sources (``/usr/share/gocode``) into
``cache_dir("go-tools", "ocicheck-<hash>")``; tests that need it skip with a reason when
``go`` or the sources are missing.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.cache import cache_dir

SOURCE = Path(__file__).parent / "go" / "ocicheck" / "main.go"
DEBIAN_GOPATH = Path("/usr/share/gocode")
PLATFORMS_PACKAGE = DEBIAN_GOPATH / "src/github.com/containerd/containerd/platforms"


def ocicheck_binary() -> Path:
    """The built ``ocicheck`` binary (built on first use, cached)."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("needs Go: `go` is not on PATH (apt-get install golang-go)")
    if not PLATFORMS_PACKAGE.is_dir():
        pytest.skip(
            "needs containerd's Go sources under /usr/share/gocode"
            " (apt-get install golang-github-containerd-stargz-snapshotter-dev)"
        )
    version = subprocess.run([go, "version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256(version.encode() + SOURCE.read_bytes()).hexdigest()[:16]
    root = cache_dir("go-tools", f"ocicheck-{key}")
    binary = root / "ocicheck"
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not binary.is_file():
            package = root / "gopath" / "src" / "ocicheck"
            package.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(SOURCE, package / "main.go")
            env = {
                **os.environ,
                "GO111MODULE": "off",
                "GOPATH": f"{root / 'gopath'}:{DEBIAN_GOPATH}",
                "GOCACHE": str(cache_dir("go-tools", "gocache")),
                "GOFLAGS": "",
            }
            subprocess.run(
                [go, "build", "-o", str(root / "ocicheck.tmp"), "."],
                cwd=package,
                env=env,
                check=True,
                capture_output=True,
            )
            (root / "ocicheck.tmp").rename(binary)
    return binary


def ask(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Send requests (one JSON line each) to ``ocicheck``; return its answers in order."""
    lines = "".join(json.dumps(request) + "\n" for request in requests)
    result = subprocess.run(
        [str(ocicheck_binary())], input=lines, capture_output=True, text=True, check=True
    )
    answers = [json.loads(line) for line in result.stdout.split("\n") if line]
    assert len(answers) == len(requests), result.stderr
    return answers
