"""`esgz optimize --all-platforms` profiles the arm64 image too, under qemu-user-static.

The images are real multi-arch images built from Debian's amd64 and arm64 packages
(:mod:`tests.fixtures.multiarch`); qemu is registered in binfmt_misc by the
``qemu_binfmt`` fixture, as an administrator would. Every output layer goes through the
Go reference checker, and the converted arm64 image is run (under qemu) from its
converted layers. Also: the same guest paths recorded natively and emulated,
``--no-emulation``, a single-manifest arm64 image, Ctrl-C during an emulated run. A host
whose binfmt_misc cannot run arm64 (no handler, no F flag) is shown to the resolve stage
as handler files in the kernel's format in a temporary directory, since the real
registrations are the host's and are left alone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

import pytest

import esgz
import esgz.stages.resolve as resolve_stage
from esgz import EventBus, ImageProfiled, PlatformExecution, WarningEvent
from esgz.oci.platform import host_platform
from esgz.runtime.emulation import read_binfmt
from tests.cli.outputcheck import blob_path
from tests.cli.process import read_until, start_esgz
from tests.fixtures.images import SMALL_TEXT, SampleImage
from tests.fixtures.multiarch import APP_GREETING, TRIPLETS
from tests.fixtures.rootless import rootless_skip_reason, rootless_user
from tests.optimize.support import (
    NO_PREFETCH,
    OPTIMIZE_JSON,
    PREFETCH,
    LayerReport,
    prioritized_files,
    read_layers,
    records_of,
    require_sandbox,
    run_esgz,
)
from tests.optimize.test_interrupt import SLEEP, mounts_below

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _amd64_host() -> None:
    if str(host_platform()) != "linux/amd64":
        pytest.skip("the multi-arch fixtures emulate arm64 on an amd64 host")


def _layers_by_platform(out: Path, tag: str) -> dict[str, list[LayerReport]]:
    return {output.platform or "": layers for output, layers in read_layers(out, tag)}


def _guest_path(path: str, arch: str) -> str:
    """``path`` without its architecture-specific names (GNU triplet, loader)."""
    path = path.replace(TRIPLETS[arch], "<triplet>")
    return re.sub(r"ld-linux-[a-z0-9_-]+\.so\.[0-9]+", "<loader>", path)


def _extract(layout: Path, layers: list[LayerReport], root: Path) -> None:
    """The converted layers, bottom first, extracted with the standard tarfile module."""
    for report in layers:
        with tarfile.open(blob_path(layout, report.digest), "r:gz") as tar:
            members = [
                member
                for member in tar.getmembers()
                if member.name not in ("stargz.index.json", PREFETCH, NO_PREFETCH)
            ]
            tar.extractall(root, members=members, filter="fully_trusted")


def test_busybox_every_platform_profiled(
    multiarch_busybox_image: SampleImage, qemu_binfmt: dict[str, str], tmp_path: Path
) -> None:
    require_sandbox()
    out = tmp_path / "out"
    run = run_esgz(
        *OPTIMIZE_JSON, "--all-platforms", multiarch_busybox_image.reference, f"local://{out}:opt"
    )
    assert run.returncode == 0, run.stderr
    plans = {event["platform"]: event for event in run.events("platform_execution")}
    assert plans["linux/amd64"]["execution"] == "native"
    assert plans["linux/arm64"]["execution"] == "emulated"
    assert plans["linux/arm64"]["emulator"] == qemu_binfmt["arm64"]
    profiled = {event["platform"]: event for event in run.events("image_profiled")}
    assert set(profiled) == {"linux/amd64", "linux/arm64"}
    for event in profiled.values():
        assert event["exit_status"] == 0, event
    assert profiled["linux/arm64"]["execution"] == "emulated"
    # the data layer is the same blob in both manifests: the native profile chose its files
    assert profiled["linux/arm64"]["shared_from"] == [[1, "linux/amd64"]]
    print(
        "busybox workload: native {:.2f}s, emulated {:.2f}s".format(
            profiled["linux/amd64"]["seconds"], profiled["linux/arm64"]["seconds"]
        )
    )

    layers = _layers_by_platform(out, "opt")  # every layer through the Go checker
    for arch in ("amd64", "arm64"):
        source = next(m for m in multiarch_busybox_image.manifests if m.platform == f"linux/{arch}")
        base, data = (
            prioritized_files(report, layer.files)
            for report, layer in zip(layers[f"linux/{arch}"], source.layers, strict=True)
        )
        assert "bin/busybox" in base, (arch, base)
        assert data == ["data/small.txt"], (arch, data)
        assert all(report.landmark == PREFETCH for report in layers[f"linux/{arch}"])
    # one prioritization, so one output blob for the shared layer
    assert layers["linux/amd64"][1].digest == layers["linux/arm64"][1].digest
    assert layers["linux/amd64"][0].digest != layers["linux/arm64"][0].digest

    # the converted arm64 image runs under qemu from its converted layers
    root = tmp_path / "root"
    _extract(out, layers["linux/arm64"], root)
    result = subprocess.run(
        ["chroot", str(root), "/bin/sh", "-c", "uname -m && cat /data/small.txt"],
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"aarch64\n" + SMALL_TEXT


def test_python_same_guest_paths_native_and_emulated(
    multiarch_python_image: SampleImage, qemu_binfmt: dict[str, str], tmp_path: Path
) -> None:
    require_sandbox()
    out = tmp_path / "out"
    record = tmp_path / "record.json"
    run = run_esgz(
        *OPTIMIZE_JSON,
        "--all-platforms",
        "--record-out",
        str(record),
        multiarch_python_image.reference,
        f"local://{out}:opt",
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    profiled = {event["platform"]: event for event in run.events("image_profiled")}
    assert [profiled[p]["execution"] for p in ("linux/amd64", "linux/arm64")] == [
        "native",
        "emulated",
    ]
    outputs = [e["line"] for e in run.events("workload_output") if e["stream"] == "stdout"]
    assert outputs == [APP_GREETING, APP_GREETING]
    print(
        "python workload: native {:.2f}s, emulated {:.2f}s".format(
            profiled["linux/amd64"]["seconds"], profiled["linux/arm64"]["seconds"]
        )
    )

    # the record has each platform's accesses under its manifest digest
    sources = {m.platform: m for m in multiarch_python_image.manifests}
    recorded: dict[str, list[str]] = {}
    for entry in records_of(record):
        for name, manifest in sources.items():
            if entry.manifest_digest == manifest.manifest_digest:
                assert name is not None
                arch = name.split("/")[1]
                recorded.setdefault(arch, []).append(_guest_path(entry.path, arch))
    assert set(recorded) == {"amd64", "arm64"}
    assert recorded["arm64"] == recorded["amd64"]  # same guest paths, same order
    assert "usr/bin/python3.11" in recorded["arm64"]
    assert "app/data.json" in recorded["arm64"]
    assert not any("qemu" in path for path in recorded["arm64"])

    layers = _layers_by_platform(out, "opt")
    for name, reports in layers.items():
        files = [
            prioritized_files(report, layer.files)
            for report, layer in zip(reports, sources[name].layers, strict=True)
        ]
        assert all(files), (name, files)
        assert files[2] == ["app/main.py", "app/data.json"]
    assert layers["linux/amd64"][2].digest == layers["linux/arm64"][2].digest

    root = tmp_path / "root"
    _extract(out, layers["linux/arm64"], root)
    result = subprocess.run(
        ["chroot", str(root), "/usr/bin/python3", "/app/main.py"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == APP_GREETING + "\n"


def test_no_emulation_profiles_the_host_only(
    multiarch_busybox_image: SampleImage, qemu_binfmt: dict[str, str], tmp_path: Path
) -> None:
    require_sandbox()
    out = tmp_path / "out"
    run = run_esgz(
        *OPTIMIZE_JSON,
        "--all-platforms",
        "--no-emulation",
        multiarch_busybox_image.reference,
        f"local://{out}:opt",
    )
    assert run.returncode == 0, run.stderr
    plans = {event["platform"]: event for event in run.events("platform_execution")}
    assert plans["linux/amd64"]["execution"] == "native"
    assert plans["linux/arm64"]["execution"] == "not profiled"
    assert plans["linux/arm64"]["reason"] == "emulation is disabled"
    assert [event["platform"] for event in run.events("image_profiled")] == ["linux/amd64"]
    assert not run.events("warning_event")
    layers = _layers_by_platform(out, "opt")
    assert layers["linux/arm64"][0].landmark == NO_PREFETCH
    # the shared data layer keeps the host profile's files on both platforms
    assert layers["linux/arm64"][1].digest == layers["linux/amd64"][1].digest
    assert layers["linux/arm64"][1].landmark == PREFETCH


_AARCH64_WITHOUT_F = (
    "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PO\noffset 0\n"
    "magic 7f454c460201010000000000000000000200b700\n"
    "mask ffffffffffffff00fffffffffffffffffeffffff\n"
)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        (None, "no binfmt_misc handler for arm64 is registered (such as qemu-aarch64 from"),
        (_AARCH64_WITHOUT_F, "the binfmt_misc handler qemu-aarch64 lacks the F flag"),
    ],
    ids=["missing", "without-F"],
)
async def test_platform_that_cannot_run_keeps_no_prefetch_landmark(
    multiarch_busybox_image: SampleImage,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    handler: str | None,
    reason: str,
) -> None:
    """A host whose binfmt_misc cannot run arm64 (its files, as the kernel shows them)."""
    require_sandbox()
    binfmt = tmp_path / "binfmt_misc"
    binfmt.mkdir()
    (binfmt / "status").write_text("enabled\n")
    if handler is not None:
        (binfmt / "qemu-aarch64").write_text(handler)
    monkeypatch.setattr(resolve_stage, "read_binfmt", lambda: read_binfmt(binfmt))
    bus = EventBus()
    events = bus.subscribe()
    out = tmp_path / "out"
    result = await esgz.optimize(
        multiarch_busybox_image.reference,
        f"local://{out}:opt",
        oci=True,
        all_platforms=True,
        cache=False,
        events=bus,
    )
    seen = [event async for event in events]
    warnings = [e.message for e in seen if isinstance(e, WarningEvent)]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(
        "platform linux/arm64 is not profiled (its layers get .no.prefetch.landmark): " + reason
    )
    plans = {e.platform: e for e in seen if isinstance(e, PlatformExecution)}
    assert plans["linux/amd64"].execution == "native"
    assert plans["linux/arm64"].execution == "not profiled"
    assert plans["linux/arm64"].emulator == "qemu-aarch64"
    assert [e.platform for e in seen if isinstance(e, ImageProfiled)] == ["linux/amd64"]
    manifests = result.images[0].manifests
    assert [(m.platform, m.execution) for m in manifests] == [
        ("linux/amd64", "native"),
        ("linux/arm64", "not profiled"),
    ]
    layers = _layers_by_platform(out, "opt")
    assert layers["linux/arm64"][0].landmark == NO_PREFETCH
    assert layers["linux/arm64"][1].digest == layers["linux/amd64"][1].digest


def test_single_manifest_arm64_image_runs_emulated(
    multiarch_busybox_image: SampleImage, qemu_binfmt: dict[str, str], tmp_path: Path
) -> None:
    """A thin arm64 image (its manifest named by digest) is profiled under qemu."""
    require_sandbox()
    arm64 = next(m for m in multiarch_busybox_image.manifests if m.platform == "linux/arm64")
    out = tmp_path / "out"
    run = run_esgz(
        *OPTIMIZE_JSON,
        f"local://{multiarch_busybox_image.layout}@{arm64.manifest_digest}",
        f"local://{out}:opt",
    )
    assert run.returncode == 0, run.stderr
    (plan,) = run.events("platform_execution")
    assert (plan["platform"], plan["execution"]) == ("linux/arm64", "emulated")
    (profiled,) = run.events("image_profiled")
    assert (profiled["execution"], profiled["emulator"]) == ("emulated", qemu_binfmt["arm64"])
    (layers,) = _layers_by_platform(out, "opt").values()
    assert prioritized_files(layers[1], arm64.layers[1].files) == ["data/small.txt"]


@pytest.mark.anyio
async def test_single_manifest_image_that_cannot_run_is_not_profiled(
    multiarch_busybox_image: SampleImage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_sandbox()
    binfmt = tmp_path / "binfmt_misc"
    binfmt.mkdir()
    (binfmt / "status").write_text("enabled\n")
    monkeypatch.setattr(resolve_stage, "read_binfmt", lambda: read_binfmt(binfmt))
    arm64 = next(m for m in multiarch_busybox_image.manifests if m.platform == "linux/arm64")
    bus = EventBus()
    events = bus.subscribe()
    out = tmp_path / "out"
    result = await esgz.optimize(
        f"local://{multiarch_busybox_image.layout}@{arm64.manifest_digest}",
        f"local://{out}:opt",
        oci=True,
        cache=False,
        events=bus,
    )
    seen = [event async for event in events]
    (plan,) = [e for e in seen if isinstance(e, PlatformExecution)]
    assert (plan.platform, plan.execution, plan.emulator) == (
        "linux/arm64",
        "not profiled",
        "qemu-aarch64",
    )
    assert not [e for e in seen if isinstance(e, ImageProfiled)]
    assert result.images[0].manifests[0].execution == "not profiled"
    (layers,) = _layers_by_platform(out, "opt").values()
    assert [layer.landmark for layer in layers] == [NO_PREFETCH, NO_PREFETCH]


def _emulated_sleepers() -> list[int]:
    """Pids of ``sleep 987`` processes, also run by qemu (``qemu … sleep 987``)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        except OSError:
            continue
        if argv[-2:] == [b"sleep", SLEEP.encode()]:
            pids.append(int(proc.name))
    return pids


def test_ctrl_c_while_an_emulated_workload_runs(
    multiarch_busybox_image: SampleImage, qemu_binfmt: dict[str, str], tmp_path: Path
) -> None:
    """Ctrl-C under emulation: exit 130, no mount, container, qemu process or temp dir left."""
    require_sandbox()
    cache = tmp_path / "cache"
    out = tmp_path / "out"
    process = start_esgz(
        "optimize",
        "--cache-dir",
        str(cache),
        "--platform",
        "linux/arm64",
        "--period",
        "120",
        "--args",
        f'["echo started; exec sleep {SLEEP}"]',
        multiarch_busybox_image.reference,
        f"local://{out}:x",
    )
    try:
        read_until(process.stderr, "workload stdout: started")
        deadline = time.monotonic() + 30
        while not _emulated_sleepers() and time.monotonic() < deadline:
            time.sleep(0.1)  # the shell's exec of sleep, under qemu
        assert _emulated_sleepers()
        assert mounts_below(cache)
    finally:
        process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr.decode()
    assert stderr.decode().strip().splitlines()[-1] == "esgz: interrupted"
    assert stdout == b""
    assert mounts_below(cache) == []
    assert list((cache / "tmp").iterdir()) == []
    assert _emulated_sleepers() == []
    assert not (out / "index.json").exists()


def test_rootless_user_profiles_the_emulated_platform_too(
    multiarch_busybox_image: SampleImage, qemu_binfmt: dict[str, str]
) -> None:
    """binfmt handlers are global: an unprivileged user's rootless run emulates arm64 too."""
    reason = rootless_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    user = rootless_user()
    work = user.home / f"work-{uuid.uuid4().hex[:12]}"
    work.mkdir()
    os.chown(work, user.uid, user.gid)
    try:
        run = subprocess.run(
            user.command(
                user.esgz, *OPTIMIZE_JSON, "--all-platforms",
                multiarch_busybox_image.reference, f"local://{work}/out:opt",
            ),
            env=user.env(XDG_CACHE_HOME=str(work / "cache")),
            cwd=user.home,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
        profiled = {e["platform"]: e for e in events if e["event"] == "image_profiled"}
        assert set(profiled) == {"linux/amd64", "linux/arm64"}
        assert {e["mode"] for e in profiled.values()} == {"rootless"}
        arm64 = profiled["linux/arm64"]
        assert (arm64["execution"], arm64["emulator"]) == ("emulated", qemu_binfmt["arm64"])
        assert arm64["exit_status"] == 0
        assert arm64["prioritized"][0] > 0  # busybox's own files, read under qemu
    finally:
        shutil.rmtree(work, ignore_errors=True)
