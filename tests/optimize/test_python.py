"""`esgz optimize` on the python image: what `python3 -c "import json"` reads comes first."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from tests.fixtures.images import SampleImage
from tests.optimize.support import (
    NO_PREFETCH,
    OPTIMIZE_JSON,
    PREFETCH,
    prioritized_files,
    read_layers,
    records_of,
    require_sandbox,
    run_esgz,
)

pytestmark = [pytest.mark.root, pytest.mark.slow]

MACHINE = platform.machine()


def test_python_import_json(python_image: SampleImage, tmp_path: Path) -> None:
    require_sandbox()
    out = tmp_path / "out"
    record = tmp_path / "record.json"
    run = run_esgz(
        *OPTIMIZE_JSON,
        "--record-out",
        str(record),
        python_image.reference,
        f"local://{out}:opt",
    )
    assert run.returncode == 0, run.stderr
    (profiled,) = run.events("image_profiled")
    assert profiled["exit_status"] == 0
    assert profiled["stopped"] is None
    print(f"profile took {profiled['seconds']:.2f}s, {profiled['accessed']} files accessed")

    ((output, layers),) = read_layers(out, "opt")
    assert len(layers) == len(python_image.layers) == 2
    files = [
        prioritized_files(report, layer.files)
        for report, layer in zip(layers, python_image.layers, strict=True)
    ]
    for report, listed in zip(layers, files, strict=True):
        assert report.landmark == (PREFETCH if listed else NO_PREFETCH)

    # the libraries come from the base layer, python and its modules from layer 1
    base, python = files
    assert f"usr/lib/{MACHINE}-linux-gnu/libc.so.6" in base
    assert any(name.startswith(f"usr/lib/{MACHINE}-linux-gnu/ld-linux") for name in base)
    json_modules = [
        f"usr/lib/python3.11/json/{name}.py"
        for name in ("__init__", "decoder", "scanner", "encoder")
    ]
    for name in ["usr/bin/python3.11", *json_modules, "usr/lib/python3.11/encodings/__init__.py"]:
        assert name in python, name
    # access order: the interpreter first; json imports .decoder (which imports scanner),
    # then .encoder
    assert python[0] == "usr/bin/python3.11"
    positions = [python.index(name) for name in json_modules]
    assert positions == sorted(positions)
    # nothing prioritized that the layer does not hold, and nothing twice
    for listed, layer in zip(files, python_image.layers, strict=True):
        assert len(set(listed)) == len(listed)
        assert set(listed) <= set(layer.files)

    # the record file: the same files, per layer in the same order, of the source manifest
    entries = records_of(record)
    assert {entry.manifest_digest for entry in entries} == {python_image.manifest_digest}
    assert len({entry.path for entry in entries}) == len(entries)
    for index, listed in enumerate(files):
        assert [e.path for e in entries if e.layer_index == index] == listed
    assert output.config["config"]["Cmd"] == ["python3", "-c", "import json"]
