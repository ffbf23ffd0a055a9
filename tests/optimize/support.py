"""Shared code of the optimize tests: run ``esgz`` as a process, read what it wrote."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from esgz.runtime.record import RecordEntry, read_record_file
from tests.cli.outputcheck import OutputManifest, blob_path, check_converted, manifests_of
from tests.cli.process import default_sigint, esgz_command
from tests.fixtures.cache import REPO_ROOT
from tests.fixtures.gotools import go_check

TOC_DIGEST = "containerd.io/snapshot/stargz/toc.digest"
PREFETCH = ".prefetch.landmark"
NO_PREFETCH = ".no.prefetch.landmark"


def require_sandbox() -> None:
    """Skip unless real containers can run here (root, runc)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: overlay mounts, namespaces, fanotify and runc")
    if shutil.which("runc") is None:
        pytest.skip("needs runc: apt-get install runc")


@dataclass
class Run:
    """A finished ``esgz`` process."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The JSON events (``--log-format json``), optionally of one kind."""
        events = [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]
        return [e for e in events if kind is None or e["event"] == kind]

    def error_line(self) -> str:
        """The last stderr line (the one-line error)."""
        lines = self.stderr.strip().splitlines()
        return lines[-1] if lines else ""


#: ``esgz optimize`` to OCI media types, without the shared cache, events as JSON lines.
OPTIMIZE_JSON = ("optimize", "--oci", "--no-cache", "--log-format", "json")


#: Run a command as the ``nobody`` user that can still read and write every file (so it
#: reaches the interpreter under root's home), but is not root.
AS_NOBODY = (
    "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
    "--inh-caps=+dac_read_search,+dac_override", "--ambient-caps=+dac_read_search,+dac_override",
)  # fmt: skip


def run_esgz(
    *args: str,
    timeout: float = 120,
    env: dict[str, str] | None = None,
    prefix: tuple[str, ...] = (),
) -> Run:
    """Run ``esgz ARGS`` to the end (behind the ``prefix`` command, if given)."""
    started = time.monotonic()
    result = subprocess.run(
        [*prefix, *esgz_command(*args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        preexec_fn=default_sigint,
    )
    return Run(result.returncode, result.stdout, result.stderr, time.monotonic() - started)


@dataclass
class LayerReport:
    """One output layer as the Go reference reader sees it."""

    index: int
    digest: str
    landmark: str
    prioritized: list[str]


def read_layers(layout: Path, tag: str) -> list[tuple[OutputManifest, list[LayerReport]]]:
    """Every manifest of the output and its layers, each checked by the Go reader.

    Also checks diff_ids and sizes (:func:`tests.cli.outputcheck.check_converted`).
    """
    _, outputs = manifests_of(layout, tag)
    result = []
    for output in outputs:
        check_converted(layout, output)
        layers = []
        for index, layer in enumerate(output.manifest["layers"]):
            zstd = layer["mediaType"].endswith("zstd")
            verdict = go_check(
                blob_path(layout, layer["digest"]), layer["annotations"][TOC_DIGEST], zstd=zstd
            )
            assert verdict.ok, verdict.errors
            report = verdict.report
            layers.append(
                LayerReport(index, layer["digest"], report["landmark"], report["prioritized"])
            )
        result.append((output, layers))
    return result


def prioritized_files(report: LayerReport, files: tuple[str, ...] | list[str]) -> list[str]:
    """The prioritized entries of a layer that are not directories (its ``files`` say)."""
    names = {name.rstrip("/") for name in files}
    directories = {
        "/".join(name.split("/")[:depth])
        for name in names
        for depth in range(1, name.count("/") + 1)
    }
    return [name for name in report.prioritized if name in names and name not in directories]


def records_of(path: Path) -> list[RecordEntry]:
    """The entries of a record file."""
    return read_record_file(path)
