"""The rootless mode, run by a real unprivileged user (tests/fixtures/rootless.py).

The same fixtures are profiled as root (mount mark) in this process and as the user (a
user namespace with its subordinate ids, inode marks) by tests/runtime/rootless_driver.py
in the user's own venv; the records must agree. Cancellation and SIGKILL of the user's
profiler must leave no process, mount or file of the run behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from esgz.errors import WorkloadError
from esgz.pipeline.config import parse_config_text
from esgz.runtime.profile import profile_workload
from esgz.runtime.unpack import LayerFile
from esgz.runtime.userns import IdMapping, choose_mode, subordinate_range
from esgz.runtime.workload import WorkloadOptions
from tests.fixtures.goimage import go_image
from tests.fixtures.images import SampleImage
from tests.fixtures.rootless import (
    RootlessUser,
    rootless_skip_reason,
    rootless_user,
    single_id_user,
)
from tests.runtime.conftest import layer_sources, make_layer, require_sandbox, tar_member

DRIVER = Path(__file__).with_name("rootless_driver.py")

__all__ = ["go_image"]


@pytest.fixture(scope="module")
def user() -> RootlessUser:
    reason = rootless_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    return rootless_user()


@pytest.fixture
def user_dir(user: RootlessUser) -> Iterator[Path]:
    """A fresh work dir in the user's home (pytest's tmp dirs are root's alone)."""
    path = user.home / f"work-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    os.chown(path, user.uid, user.gid)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _request(image: SampleImage, work_dir: Path, **workload: Any) -> dict[str, Any]:
    return {
        "layers": [[lf.digest, str(lf.path), lf.diff_id] for lf in layer_sources(image)],
        "config": image.config(),
        "workload": workload,
        "work_dir": str(work_dir),
    }


def _start(user: RootlessUser, request: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        user.command(user.python, DRIVER, json.dumps(request)),
        env=user.env(),
        cwd=user.home,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _as_user(user: RootlessUser, request: dict[str, Any]) -> dict[str, Any]:
    process = _start(user, request)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    result: dict[str, Any] = json.loads(stdout.splitlines()[-1])
    return result


async def _as_root(image: SampleImage, work_dir: Path, **workload: Any) -> list[tuple[int, str]]:
    require_sandbox()
    result = await profile_workload(
        layer_sources(image),
        image.config(),
        WorkloadOptions.model_validate(workload),
        work_dir=work_dir,
    )
    assert result.mode == "root"
    assert result.exit_status == 0
    return [(entry.layer_index or 0, entry.path) for entry in result.records()]


def _jaccard(a: list[tuple[int, str]], b: list[tuple[int, str]]) -> float:
    union = set(a) | set(b)
    return len(set(a) & set(b)) / len(union) if union else 1.0


def _user_processes(user: RootlessUser) -> list[str]:
    """Processes of the user or of its subordinate ids (the workload's)."""
    out = subprocess.run(
        ["ps", "-e", "-o", "uid=,pid=,args="], capture_output=True, text=True, check=True
    ).stdout
    found = []
    for line in out.splitlines():
        uid = int(line.split()[0])
        if uid == user.uid or 1_000_000_000 <= uid < 1_000_065_536:
            found.append(line.strip())
    return found


# --- mode and ids ------------------------------------------------------------------------


def test_mode_is_forced_or_detected() -> None:
    assert choose_mode(True) == "rootless"
    assert choose_mode(False) == "root"
    expected = "root" if os.geteuid() == 0 else "rootless"
    assert choose_mode(None) == expected


def test_subordinate_range_by_name_or_uid(tmp_path: Path) -> None:
    table = tmp_path / "subuid"
    table.write_text("other:1:5\nbad line\nalice:100000:65536\n1001:200000:10\n")
    assert subordinate_range(table, "alice", 1000) == (100000, 65536)
    assert subordinate_range(table, "bob", 1001) == (200000, 10)
    assert subordinate_range(table, "carol", 1002) is None


def test_single_id_mapping_refuses_other_users() -> None:
    single = IdMapping(1000, 1000, "alice", None, None)
    single.check_user(0, 0)
    with pytest.raises(WorkloadError, match=r"maps only root.*subuid"):
        single.check_user(65534, 65534)
    full = IdMapping(1000, 1000, "alice", (100000, 65536), (100000, 65536))
    full.check_user(65534, 65534, [5])
    with pytest.raises(WorkloadError, match="outside the subordinate id range"):
        full.check_user(70000, 0)


# --- records: rootless as the unprivileged user vs root ----------------------------------


@pytest.mark.anyio
async def test_python_import_json_matches_root(
    user: RootlessUser, python_image: SampleImage, user_dir: Path, work_dir: Path
) -> None:
    root = await _as_root(python_image, work_dir)
    result = _as_user(user, _request(python_image, user_dir))
    assert result["mode"] == "rootless", result
    assert result["exit_status"] == 0
    rootless = [(layer, path) for layer, path in result["records"]]
    assert _jaccard(root, rootless) >= 0.95, (root, rootless)
    common = set(root) & set(rootless)
    assert [r for r in root if r in common] == [r for r in rootless if r in common]
    assert rootless[0] == (1, "usr/bin/python3.11")
    assert (1, "usr/lib/python3.11/json/decoder.py") in rootless


@pytest.mark.anyio
async def test_busybox_cat_as_nobody_matches_root(
    user: RootlessUser, busybox_image: SampleImage, user_dir: Path, work_dir: Path
) -> None:
    workload = {"entrypoint": ["sh", "-c", "id -u; cat /etc/passwd"], "args": [], "user": "nobody"}
    root = await _as_root(busybox_image, work_dir, **workload)
    result = _as_user(user, _request(busybox_image, user_dir, **workload))
    assert result["mode"] == "rootless", result
    assert result["exit_status"] == 0
    rootless = [(layer, path) for layer, path in result["records"]]
    assert rootless == root
    assert (0, "etc/passwd") in rootless


def _pairs_in_same_order(a: list[tuple[int, str]], b: list[tuple[int, str]]) -> float:
    """Of the records both have, the fraction of pairs that come in the same order."""
    position = {record: index for index, record in enumerate(b)}
    ranks = [position[record] for record in a if record in position]
    pairs = same = 0
    for i, rank in enumerate(ranks):
        for later in ranks[i + 1 :]:
            pairs += 1
            same += rank < later
    return same / pairs if pairs else 1.0


@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the comparison, not the backend
async def test_go_build_matches_root(
    user: RootlessUser, go_image: SampleImage, user_dir: Path, work_dir: Path
) -> None:
    # go build reads the standard packages from parallel goroutines: the order varies
    # between two root runs too (measured: about 80 % of the pairs agree).
    root = await _as_root(go_image, work_dir, period=300)
    result = _as_user(user, _request(go_image, user_dir, period=300))
    assert result["mode"] == "rootless", result
    assert result["exit_status"] == 0
    rootless = [(layer, path) for layer, path in result["records"]]
    assert len(rootless) > 1000
    assert _jaccard(root, rootless) >= 0.95
    assert rootless[:3] == root[:3]  # go, then the dynamic loader and libc
    assert _pairs_in_same_order(root, rootless) >= 0.6


def test_failing_workload_is_the_same_error_as_in_root_mode(
    user: RootlessUser, busybox_image: SampleImage, user_dir: Path
) -> None:
    workload = {"entrypoint": ["sh", "-c", "echo bye; exit 3"], "args": []}
    result = _as_user(user, _request(busybox_image, user_dir, **workload))
    assert result["type"] == "WorkloadError"
    assert "workload exited with code 3" in result["error"]
    assert "bye" in result["error"]


def test_single_id_mapping_runs_root_and_refuses_nobody(
    user: RootlessUser, busybox_image: SampleImage, tmp_path: Path
) -> None:
    alone = single_id_user()
    work = alone.home / f"work-{uuid.uuid4().hex[:12]}"
    work.mkdir()
    os.chown(work, alone.uid, alone.gid)
    try:
        workload = {"entrypoint": ["cat", "/etc/passwd"], "args": []}
        result = _as_user(alone, _request(busybox_image, work, **workload))
        assert result.get("mode") == "rootless", result
        assert [0, "etc/passwd"] in result["records"]
        result = _as_user(alone, _request(busybox_image, work, user="nobody", **workload))
        assert result["type"] == "WorkloadError"
        assert "which maps only root" in result["error"]
        assert list(work.iterdir()) == []
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.anyio
async def test_rootless_forced_as_root(
    user: RootlessUser, busybox_image: SampleImage, work_dir: Path
) -> None:
    workload = {"entrypoint": ["cat", "/etc/passwd"], "args": []}
    root = await _as_root(busybox_image, work_dir, **workload)
    result = await profile_workload(
        layer_sources(busybox_image),
        busybox_image.config(),
        WorkloadOptions.model_validate({**workload, "rootless": True}),
        work_dir=work_dir,
    )
    assert result.mode == "rootless"
    assert [(e.layer_index or 0, e.path) for e in result.records()] == root
    assert not list(await anyio.to_thread.run_sync(lambda: list(work_dir.glob("userns-*"))))


OWNERS_SCRIPT = (
    "stat -c '%n %u:%g %a' /srv/private /srv/private/secret /srv/tool /srv/owned;"
    " ls /opt/replaced; test -e /etc/motd && echo motd-present || echo motd-gone"
)


OWNERS_EXPECTED = [
    "/srv/private 65534:65534 700",
    "/srv/private/secret 65534:65534 600",
    "/srv/tool 0:0 4755",
    "/srv/owned 1234:5678 640",
    "new.txt",
    "motd-gone",
]


def _owners_layer(directory: Path) -> LayerFile:
    return make_layer(
        directory / "extra.tar.gz",
        [
            (tar_member("srv", tarfile.DIRTYPE), b""),
            (tar_member("srv/private", tarfile.DIRTYPE, mode=0o700, uid=65534, gid=65534), b""),
            (tar_member("srv/private/secret", mode=0o600, uid=65534, gid=65534), b"s"),
            (tar_member("srv/tool", mode=0o4755), b"#!/bin/sh\n"),
            (tar_member("srv/owned", mode=0o640, uid=1234, gid=5678), b"o"),
        ],
    )


@pytest.mark.anyio
async def test_owners_modes_whiteouts_and_opaque_dirs_survive(
    user: RootlessUser, busybox_image: SampleImage, user_dir: Path, work_dir: Path
) -> None:
    layers = [*layer_sources(busybox_image), _owners_layer(user_dir)]
    workload = {"entrypoint": ["sh", "-c", OWNERS_SCRIPT], "args": []}
    request = {
        "layers": [[lf.digest, str(lf.path), lf.diff_id] for lf in layers],
        "config": busybox_image.config(),
        "workload": workload,
        "work_dir": str(user_dir / "work"),
    }
    process = _start(user, request)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    rootless = [line.removeprefix("output stdout ") for line in stdout.splitlines()[1:-1]]
    root: list[str] = []
    require_sandbox()
    await profile_workload(
        layers,
        busybox_image.config(),
        WorkloadOptions.model_validate(workload),
        work_dir=work_dir,
        on_output=lambda _stream, line: root.append(line),
    )
    assert root == OWNERS_EXPECTED
    assert rootless == OWNERS_EXPECTED


def test_too_many_layers_for_overlayfs_are_copied(
    user: RootlessUser, busybox_image: SampleImage, user_dir: Path
) -> None:
    """60 more layers than one overlay mount's options can name: the rootless mode falls
    back to a copied rootfs, with the same owners, whiteouts and opaque dirs."""
    many = [
        make_layer(user_dir / f"many-{i}.tar.gz", [(tar_member(f"many/f{i}"), f"{i}\n".encode())])
        for i in range(60)
    ]
    layers = [*layer_sources(busybox_image), _owners_layer(user_dir), *many]
    workload = {"entrypoint": ["sh", "-c", OWNERS_SCRIPT + "; cat /many/f42"], "args": []}
    request = {
        "layers": [[lf.digest, str(lf.path), lf.diff_id] for lf in layers],
        "config": busybox_image.config(),
        "workload": workload,
        "work_dir": str(user_dir / "work"),
    }
    process = _start(user, request)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert "copying the layers into one directory instead" in stderr
    lines = stdout.splitlines()
    output = [line.removeprefix("output stdout ") for line in lines[1:-1]]
    assert output == [*OWNERS_EXPECTED, "42"]
    result = json.loads(lines[-1])
    assert [3 + 42, "many/f42"] in result["records"]
    assert list((user_dir / "work").iterdir()) == []


def test_cni_is_refused_in_rootless_mode(
    user: RootlessUser, busybox_image: SampleImage, user_dir: Path
) -> None:
    result = _as_user(user, _request(busybox_image, user_dir, cni=True))
    assert result["type"] == "WorkloadError"
    assert "--cni needs root" in result["error"]


def test_net_host_works_rootless(
    user: RootlessUser, busybox_image: SampleImage, user_dir: Path
) -> None:
    workload = {"entrypoint": ["cat", "/etc/hosts"], "args": [], "net_host": True}
    result = _as_user(user, _request(busybox_image, user_dir, **workload))
    assert result.get("exit_status") == 0, result


# --- cleanup -----------------------------------------------------------------------------


def _wait_running(process: subprocess.Popen[str]) -> None:
    """Wait until the workload printed its first line (the sandbox is up)."""
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("output stdout started"):
            return
    raise AssertionError(process.stderr.read() if process.stderr else "no output")


def _assert_nothing_left(user: RootlessUser, user_dir: Path) -> None:
    deadline = time.monotonic() + 10
    while _user_processes(user) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _user_processes(user) == []
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(user_dir) not in mounts


def test_wait_on_signal_ends_the_run_normally(
    user: RootlessUser, busybox_image: SampleImage, user_dir: Path
) -> None:
    workload = {
        "entrypoint": ["sh", "-c", "echo started; cat /etc/passwd; sleep 60"],
        "args": [],
        "wait_on_signal": True,
    }
    process = _start(user, _request(busybox_image, user_dir, **workload))
    _wait_running(process)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    result = json.loads(stdout.splitlines()[-1])
    assert result["stopped_on_signal"] is True, result
    assert [0, "etc/passwd"] in result["records"]
    _assert_nothing_left(user, user_dir)


def test_rootless_is_a_workload_key_in_yaml() -> None:
    text = "images:\n  - source: a\n    target: b\n    workload:\n      rootless: true\n"
    (image,) = parse_config_text(text).resolved_images()
    assert image.workload.rootless is True
    (default,) = parse_config_text("images:\n  - {source: a, target: b}\n").resolved_images()
    assert default.workload.rootless is False


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_leaves_nothing(
    user: RootlessUser, busybox_image: SampleImage, user_dir: Path, how: signal.Signals
) -> None:
    workload = {"entrypoint": ["sh", "-c", "echo started; sleep 60"], "args": [], "period": 60}
    process = _start(user, _request(busybox_image, user_dir, **workload))
    _wait_running(process)
    process.send_signal(how)
    process.communicate(timeout=30)
    _assert_nothing_left(user, user_dir)
    assert list(user_dir.iterdir()) == []


def test_sigkill_leaves_nothing_after_recover(
    user: RootlessUser, busybox_image: SampleImage, user_dir: Path
) -> None:
    workload = {"entrypoint": ["sh", "-c", "echo started; sleep 60"], "args": [], "period": 60}
    process = _start(user, _request(busybox_image, user_dir, **workload))
    _wait_running(process)
    process.kill()
    process.communicate(timeout=30)
    _assert_nothing_left(user, user_dir)
    leftovers = [p.name for p in user_dir.iterdir()]
    assert all(name.startswith("userns-") for name in leftovers), leftovers
    removed = _as_user(user, {"recover": str(user_dir)})["removed"]
    assert len(removed) == len(leftovers)
    assert list(user_dir.iterdir()) == []


# --- the CLI, as the user ----------------------------------------------------------------


def test_optimize_as_user_says_rootless(
    user: RootlessUser, busybox_image: SampleImage, user_dir: Path
) -> None:
    record = user_dir / "record.json"
    run = subprocess.run(
        user.command(
            user.esgz,
            "optimize",
            "--no-cache",
            "--user",
            "nobody",
            "--record-out",
            record,
            busybox_image.reference,
            f"local://{user_dir}/out:x",
        ),
        env=user.env(XDG_CACHE_HOME=str(user_dir / "cache")),
        cwd=user.home,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "(rootless)" in run.stderr + run.stdout
    assert record.read_text().strip()
    _assert_nothing_left(user, user_dir)


def _start_cli(user: RootlessUser, user_dir: Path, image: SampleImage) -> subprocess.Popen[str]:
    # As nobody, the workload leaves a file in a directory of its own in the upper dir:
    # owned by a subordinate id, which the user cannot remove outside a user namespace.
    script = "mkdir /tmp/own && echo x > /tmp/own/file && echo started; sleep 60"
    return subprocess.Popen(
        user.command(
            user.esgz, "optimize", "--cache-dir", user_dir / "cache", "--period", "60",
            "--user", "nobody", "--entrypoint", json.dumps(["sh", "-c", script]),
            image.reference, f"local://{user_dir}/out:x",
        ),
        env=user.env(),
        cwd=user.home,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def _wait_cli_running(process: subprocess.Popen[str]) -> None:
    assert process.stderr is not None
    for line in process.stderr:
        if "workload stdout: started" in line:
            return
    raise AssertionError("the workload never started")


def _run_dirs(user_dir: Path) -> list[Path]:
    return sorted((user_dir / "cache" / "tmp").glob("*"))


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_cli_interrupted_leaves_nothing(
    user: RootlessUser, busybox_image: SampleImage, user_dir: Path, how: signal.Signals
) -> None:
    process = _start_cli(user, user_dir, busybox_image)
    _wait_cli_running(process)
    process.send_signal(how)
    process.communicate(timeout=60)
    assert process.returncode != 0
    _assert_nothing_left(user, user_dir)
    assert _run_dirs(user_dir) == []


def test_cli_killed_is_cleaned_by_the_next_run(
    user: RootlessUser, busybox_image: SampleImage, user_dir: Path
) -> None:
    process = _start_cli(user, user_dir, busybox_image)
    _wait_cli_running(process)
    process.kill()
    process.communicate(timeout=60)
    _assert_nothing_left(user, user_dir)  # the workload died with the profiler
    assert _run_dirs(user_dir) != []  # its files stay until the next run
    owners = {p.lstat().st_uid for p in (user_dir / "cache" / "tmp").rglob("*")}
    assert owners - {user.uid}, "expected files of a subordinate id (the workload's)"
    after = subprocess.run(
        user.command(
            user.esgz, "convert", "--cache-dir", user_dir / "cache",
            busybox_image.reference, f"local://{user_dir}/out2:x",
        ),
        env=user.env(),
        cwd=user.home,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert after.returncode == 0, after.stderr
    assert _run_dirs(user_dir) == []
