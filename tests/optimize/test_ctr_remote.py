"""Same image, same workload: `esgz optimize` vs Debian's `ctr-remote image optimize` (0.12).

The image goes to the test registry; ctr-remote pulls it into a private containerd and
optimizes it with ``--record-out``; esgz optimizes it from the registry with
``--record-out``. ctr-remote 0.12 writes one record line per fanotify event (duplicates
included), esgz each path once, so the records are compared as first-occurrence
sequences. Every path ctr-remote recorded must be in esgz's record, with the same layer
index and in the same relative order; the overlap is printed.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from bench._image_services import ServiceError, run_containerd
from esgz.runtime.record import RecordEntry, read_record_file
from tests.fixtures.images import SampleImage
from tests.fixtures.registry import RegistryServer
from tests.optimize.support import require_sandbox, run_esgz

pytestmark = [pytest.mark.root, pytest.mark.slow]


def first_occurrences(entries: list[RecordEntry]) -> list[RecordEntry]:
    seen: dict[str, RecordEntry] = {}
    for entry in entries:
        seen.setdefault(entry.path, entry)
    return list(seen.values())


@pytest.mark.parametrize(
    ("image_name", "workload"),
    [
        ("python_image", []),
        ("busybox_image", ["--entrypoint", '["/bin/cat"]', "--args", '["/etc/passwd"]']),
    ],
)
def test_same_record_as_ctr_remote(
    plain_registry: RegistryServer,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    image_name: str,
    workload: list[str],
) -> None:
    require_sandbox()
    image: SampleImage = request.getfixturevalue(image_name)
    repository = f"cmp/{image_name}-{tmp_path.name.lower()}"
    plain_registry.skopeo_push_layout(image.layout, f"{repository}:1", tag="latest")
    source = f"{plain_registry.host}/{repository}:1"
    theirs_file = tmp_path / "ctr-remote.json"
    try:
        with run_containerd(tmp_path / "containerd") as containerd:

            def ctr(*args: str) -> None:
                done = subprocess.run(
                    containerd.ctr_remote(*args), capture_output=True, text=True, timeout=120
                )
                assert done.returncode == 0, done.stderr

            ctr("images", "pull", "--plain-http", source)
            started = time.monotonic()
            ctr(
                "images", "optimize", "--oci", "--record-out", str(theirs_file), *workload,
                source, f"{source}-esgz",
            )  # fmt: skip
            theirs_seconds = time.monotonic() - started
    except ServiceError as err:
        pytest.skip(f"needs a private containerd: {err}")

    ours_file = tmp_path / "esgz.json"
    run = run_esgz(
        "optimize", "--plain-http", "--oci", "--no-cache", "--record-out", str(ours_file),
        *workload, f"http://{source}", f"local://{tmp_path}/out:x",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr

    theirs = first_occurrences(read_record_file(theirs_file))
    ours = read_record_file(ours_file)
    ours_paths = [entry.path for entry in ours]
    common = [entry for entry in theirs if entry.path in set(ours_paths)]
    print(
        f"\n{image_name}: ctr-remote recorded {len(theirs)} paths in {theirs_seconds:.1f}s"
        f" (optimize incl. conversion), esgz {len(ours)} in {run.seconds:.1f}s (whole run);"
        f" {len(common)}/{len(theirs)} of ctr-remote's paths are in esgz's record;"
        f" esgz-only: {sorted(set(ours_paths) - {e.path for e in theirs})}"
    )
    assert len(theirs) >= 2
    assert [entry.path for entry in common] == [entry.path for entry in theirs]
    order = [ours_paths.index(entry.path) for entry in common]
    assert order == sorted(order)
    layer_of = {entry.path: entry.layer_index for entry in ours}
    assert all(layer_of[entry.path] == entry.layer_index for entry in theirs)
    assert {entry.manifest_digest for entry in ours} == {e.manifest_digest for e in theirs}
