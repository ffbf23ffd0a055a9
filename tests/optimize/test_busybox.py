"""`esgz optimize` on the busybox image: workload flags, failures, --reuse, platforms."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.images import HOST_PLATFORM, OTHER_ARCH, SMALL_TEXT, SampleImage
from tests.optimize.support import (
    AS_NOBODY,
    NO_PREFETCH,
    OPTIMIZE_JSON,
    PREFETCH,
    LayerReport,
    Run,
    prioritized_files,
    read_layers,
    records_of,
    require_sandbox,
    run_esgz,
)

pytestmark = [pytest.mark.root, pytest.mark.slow]

SECRET = "secret from a bind mount"


@dataclass
class CatRun:
    """`cat /etc/passwd /host/secret.txt` with /host bind-mounted from the host."""

    run: Run
    out: Path
    record: Path
    layers: list[LayerReport]


@pytest.fixture(scope="module")
def cat_run(busybox_image: SampleImage, tmp_path_factory: pytest.TempPathFactory) -> CatRun:
    require_sandbox()
    tmp = tmp_path_factory.mktemp("cat")
    host_dir = tmp / "host"
    host_dir.mkdir()
    (host_dir / "secret.txt").write_text(SECRET + "\n")
    out = tmp / "out"
    record = tmp / "record.json"
    run = run_esgz(
        *OPTIMIZE_JSON,
        "--record-out",
        str(record),
        "--entrypoint",
        '["/bin/cat"]',
        "--args",
        '["/etc/passwd", "/host/secret.txt"]',
        "--mount",
        f"type=bind,src={host_dir},dst=/host,options=rbind:ro",
        busybox_image.reference,
        f"local://{out}:opt",
    )
    assert run.returncode == 0, run.stderr
    ((_, layers),) = read_layers(out, "opt")
    return CatRun(run, out, record, layers)


def test_cat_prioritizes_the_file_it_reads(cat_run: CatRun, busybox_image: SampleImage) -> None:
    base, data = cat_run.layers
    listed = prioritized_files(base, busybox_image.layers[0].files)
    assert "etc/passwd" in listed
    assert base.landmark == PREFETCH
    # the data layer was not touched
    assert data.prioritized == []
    assert data.landmark == NO_PREFETCH
    # the bind-mounted file was read (its line is in the output) but is not recorded
    lines = [(e["stream"], e["line"]) for e in cat_run.run.events("workload_output")]
    assert ("stdout", SECRET) in lines
    assert ("stdout", "nobody:x:65534:65534::/:/bin/false") in lines
    paths = [entry.path for entry in records_of(cat_run.record)]
    assert "etc/passwd" in paths
    assert not [path for path in paths if "secret" in path or path.startswith("host")]
    assert {entry.layer_index for entry in records_of(cat_run.record)} == {0}


def test_reuse_passes_untouched_estargz_layers_through(cat_run: CatRun, tmp_path: Path) -> None:
    """Re-optimizing the optimized image: the untouched data layer is copied as is."""
    out = tmp_path / "again"
    run = run_esgz(
        "optimize",
        "--oci",
        "--no-cache",
        "--reuse",
        "--log-format",
        "json",
        "--entrypoint",
        '["/bin/cat"]',
        "--args",
        '["/etc/passwd"]',
        f"local://{cat_run.out}:opt",
        f"local://{out}:opt",
    )
    assert run.returncode == 0, run.stderr
    base, data = cat_run.layers
    (reused,) = run.events("layer_reused")
    assert reused["layer"] == data.digest
    assert reused["reason"].startswith("no access occur; copying without conversion")
    (converted,) = run.events("layer_converted")
    assert converted["layer"] == base.digest
    assert not converted["cached"]
    ((_, layers),) = read_layers(out, "opt")
    assert layers[1].digest == data.digest
    assert "etc/passwd" in layers[0].prioritized
    assert layers[0].landmark == PREFETCH


def test_user_nobody_and_period_cut(busybox_image: SampleImage, tmp_path: Path) -> None:
    """--user nobody runs as 65534; a workload that sleeps on is stopped at --period."""
    require_sandbox()
    out = tmp_path / "out"
    run = run_esgz(
        *OPTIMIZE_JSON,
        "--user",
        "nobody",
        "--period",
        "2",
        "--args",
        '["id -u; cat /data/small.txt; exec sleep 600"]',
        busybox_image.reference,
        f"local://{out}:opt",
    )
    assert run.returncode == 0, run.stderr
    assert run.seconds < 60
    lines = [e["line"] for e in run.events("workload_output") if e["stream"] == "stdout"]
    assert lines == ["65534", SMALL_TEXT.decode().strip()]
    (profiled,) = run.events("image_profiled")
    assert profiled["stopped"] == "period"
    assert 2 <= profiled["seconds"] < 30
    # what it read before it was stopped is kept
    ((_, (base, data)),) = read_layers(out, "opt")
    assert prioritized_files(data, busybox_image.layers[1].files) == ["data/small.txt"]
    assert "bin/busybox" in base.prioritized


def test_failed_workload_stops_the_run(busybox_image: SampleImage, tmp_path: Path) -> None:
    require_sandbox()
    out = tmp_path / "out"
    args = ["optimize", "--oci", "--no-cache", "--args", '["echo going to fail >&2; exit 3"]']
    run = run_esgz(*args, busybox_image.reference, f"local://{out}:opt")
    assert run.returncode == 1
    error = run.error_line()
    assert error.startswith("esgz: error: ")
    assert "stage profile" in error
    assert "exited with code 3" in error
    assert "going to fail" in error
    assert (
        not (out / "index.json").exists()
        or json.loads((out / "index.json").read_text())["manifests"] == []
    )

    accepted = run_esgz(
        *args, "--accept-failed-workload", busybox_image.reference, f"local://{out}:opt"
    )
    assert accepted.returncode == 0, accepted.stderr
    assert "workload stderr: going to fail" in accepted.stderr
    read_layers(out, "opt")


def test_workload_that_cannot_start(busybox_image: SampleImage, tmp_path: Path) -> None:
    require_sandbox()
    out = tmp_path / "out"
    run = run_esgz(
        "optimize",
        "--no-cache",
        "--entrypoint",
        '["/no/such/program"]',
        busybox_image.reference,
        f"local://{out}:opt",
    )
    assert run.returncode == 1
    assert "workload cannot start" in run.error_line()
    assert not (out / "index.json").exists()


def test_all_platforms_profiles_only_the_host(
    multiplatform_image: SampleImage, tmp_path: Path
) -> None:
    require_sandbox()
    out = tmp_path / "out"
    run = run_esgz(
        "optimize",
        "--oci",
        "--no-cache",
        "--all-platforms",
        "--no-emulation",  # the reference's behaviour, whatever binfmt_misc has here
        "--log-format",
        "json",
        multiplatform_image.reference,
        f"local://{out}:opt",
    )
    assert run.returncode == 0, run.stderr
    (profiled,) = run.events("image_profiled")
    assert profiled["platform"] == HOST_PLATFORM
    outputs = read_layers(out, "opt")
    assert len(outputs) == 2
    for output, layers in outputs:
        if output.platform == HOST_PLATFORM:
            host_source = next(
                m for m in multiplatform_image.manifests if m.platform == HOST_PLATFORM
            )
            # the image's Cmd: cat /data/small.txt && ls /
            data = prioritized_files(layers[1], host_source.layers[1].files)
            assert data == ["data/small.txt"]
            assert layers[0].landmark == PREFETCH
        else:
            assert [layer.landmark for layer in layers] == [NO_PREFETCH] * len(layers)
            assert all(layer.prioritized == [] for layer in layers)


def test_record_out_needs_the_workload(busybox_image: SampleImage, tmp_path: Path) -> None:
    run = run_esgz(
        "optimize",
        "--no-optimize",
        "--record-out",
        str(tmp_path / "r.json"),
        busybox_image.reference,
        f"local://{tmp_path}/out:x",
    )
    assert run.returncode == 2
    assert "--record-out: needs the workload to run" in run.error_line()


def test_not_root_is_one_line_naming_it(busybox_image: SampleImage, tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux): the test drops to the nobody user")
    run = run_esgz(
        "optimize",
        "--no-cache",
        busybox_image.reference,
        f"local://{tmp_path}/out:x",
        env={**os.environ, "HOME": str(tmp_path)},
        prefix=AS_NOBODY,
    )
    assert run.returncode == 1, run.stderr
    assert run.stderr.strip().splitlines() == [run.error_line()]
    assert "running the workload needs root" in run.error_line()


def test_missing_runc_is_one_line_naming_it(busybox_image: SampleImage, tmp_path: Path) -> None:
    require_sandbox()
    env = {**os.environ, "PATH": str(tmp_path)}
    run = run_esgz("optimize", "--no-cache", busybox_image.reference, "local://x:y", env=env)
    assert run.returncode == 1, run.stderr
    assert run.stderr.strip().splitlines() == [run.error_line()]
    assert "needs the OCI runtime 'runc'" in run.error_line()


def test_other_platform_only_is_not_profiled(
    multiplatform_image: SampleImage, tmp_path: Path
) -> None:
    require_sandbox()
    out = tmp_path / "out"
    record = tmp_path / "record.json"
    run = run_esgz(
        *OPTIMIZE_JSON,
        "--platform",
        f"linux/{OTHER_ARCH}",
        "--no-emulation",
        "--record-out",
        str(record),
        multiplatform_image.reference,
        f"local://{out}:opt",
    )
    assert run.returncode == 0, run.stderr
    assert run.events("image_profiled") == []
    (warning,) = run.events("warning_event")
    assert warning["message"].startswith("Platform mismatch or optimization disabled")
    assert "record_out not written" in warning["message"]
    assert not record.exists()
    ((_, layers),) = read_layers(out, "opt")
    assert [layer.landmark for layer in layers] == [NO_PREFETCH] * len(layers)


def test_yaml_workload_block(busybox_image: SampleImage, tmp_path: Path) -> None:
    """`esgz run`: the image's workload keys are merged over defaults.workload."""
    require_sandbox()
    record = tmp_path / "record.json"
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        "defaults:\n"
        "  oci: true\n"
        "  accept_failed_workload: true\n"
        "  workload: {entrypoint: [/bin/cat], args: [/etc/passwd], period: 5}\n"
        "cache: {enabled: false}\n"
        "images:\n"
        f"  - source: {busybox_image.reference}\n"
        f"    target: local://{tmp_path}/out:opt\n"
        f"    record_out: {record}\n"
        "    workload: {args: [/data/small.txt, /no/such/file]}\n"
    )
    run = run_esgz("run", "--log-format", "json", str(pipeline))
    assert run.returncode == 0, run.stderr
    (profiled,) = run.events("image_profiled")
    assert profiled["exit_status"] == 1  # cat: /no/such/file, accepted
    assert [entry.path for entry in records_of(record)] == ["bin/busybox", "data/small.txt"]
    ((_, (base, data)),) = read_layers(tmp_path / "out", "opt")
    assert "etc/passwd" not in base.prioritized
    assert "data/small.txt" in data.prioritized
