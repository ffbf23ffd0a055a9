"""Whatever ends a profiling run — here: cancellation at random points — nothing is left."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from esgz.rundir import create_run_dir, remove_run_dir
from esgz.runtime.network import NETNS_LOCK_DIR, cni_network, sweep_netns
from esgz.runtime.profile import profile_workload
from esgz.runtime.recover import recover_work_dir, sweep_dead_runs
from esgz.runtime.runc import new_container_id
from esgz.runtime.workload import DEFAULT_CNI_PLUGIN_DIRS, WorkloadOptions
from tests.cli.process import esgz_command, read_until, start_esgz
from tests.fixtures.cache import REPO_ROOT
from tests.fixtures.images import SampleImage
from tests.runtime.conftest import layer_sources, netns_names, require_sandbox

pytestmark = pytest.mark.root

# Cancel after these many seconds: before/while unpacking, mounting, creating the
# container, arming the monitor, and while the workload runs.
DELAYS = [0.0, 0.01, 0.05, *(round(random.Random(seed).uniform(0.05, 0.6), 3) for seed in range(4))]


def leftovers(work_dir: Path, marker: str, netns_before: set[str]) -> list[str]:
    """Everything a run may leave behind, described; empty when clean."""
    found: list[str] = []
    mounts = subprocess.run(
        ["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True, check=True
    ).stdout.split()
    found += [f"mount {m}" for m in mounts if m.startswith(str(work_dir))]
    state = work_dir / "runc-state"
    if state.exists():
        listing = subprocess.run(
            ["runc", "--root", str(state), "list", "--format", "json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        found += [f"container {c['id']}" for c in json.loads(listing or "null") or []]
    found += [f"netns {n}" for n in netns_names() - netns_before]
    found += [
        f"dir {name}" for name in os.listdir(work_dir) if name not in ("layers", "runc-state")
    ]
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    found += [f"process {line}" for line in processes.splitlines() if marker in line]
    return found


async def wait_until_clean(work_dir: Path, marker: str, netns_before: set[str]) -> list[str]:
    """Leftovers, after giving killed processes a moment to be reaped."""
    for _ in range(50):
        found = leftovers(work_dir, marker, netns_before)
        if not found:
            return []
        await anyio.sleep(0.05)
    return found


@pytest.mark.anyio
@pytest.mark.parametrize("delay", DELAYS)
async def test_cancelled_run_leaves_nothing(
    busybox_image: SampleImage, tmp_path: Path, delay: float
) -> None:
    require_sandbox()
    work_dir = tmp_path / "work"
    marker = f"esgz-cleanup-{os.getpid()}-{delay}"
    netns_before = netns_names()
    with anyio.move_on_after(delay) as scope:
        await profile_workload(
            layer_sources(busybox_image),
            busybox_image.config(),
            WorkloadOptions(args=[f"sleep 1000; : {marker}"], period=30),
            work_dir=work_dir,
        )
    assert scope.cancelled_caught
    work_dir.mkdir(exist_ok=True)
    assert await wait_until_clean(work_dir, marker, netns_before) == []


@pytest.mark.anyio
@pytest.mark.parametrize("delay", [0.02, 0.15, 0.4])
async def test_cancelled_cni_run_leaves_nothing(
    busybox_image: SampleImage, tmp_path: Path, cni_conf_dir: Path, delay: float
) -> None:
    work_dir = tmp_path / "work"
    marker = f"esgz-cleanup-cni-{os.getpid()}-{delay}"
    netns_before = netns_names()
    with anyio.move_on_after(delay) as scope:
        await profile_workload(
            layer_sources(busybox_image),
            busybox_image.config(),
            WorkloadOptions(
                args=[f"sleep 1000; : {marker}"],
                period=30,
                cni=True,
                cni_plugin_conf_dir=cni_conf_dir,
            ),
            work_dir=work_dir,
        )
    assert scope.cancelled_caught
    work_dir.mkdir(exist_ok=True)
    assert await wait_until_clean(work_dir, marker, netns_before) == []
    leases = (
        [
            n
            for n in os.listdir(cni_conf_dir.parent / "ipam" / "esgz-test")
            if n.startswith("10.231.")
        ]
        if (cni_conf_dir.parent / "ipam" / "esgz-test").exists()
        else []
    )
    assert leases == []


@pytest.mark.anyio
async def test_error_inside_the_run_leaves_nothing(
    busybox_image: SampleImage, tmp_path: Path
) -> None:
    require_sandbox()
    work_dir = tmp_path / "work"
    marker = f"esgz-cleanup-error-{os.getpid()}"

    def explode(_stream: str, line: str) -> None:
        if line == "boom":
            raise RuntimeError("output handler failed")

    with pytest.raises(RuntimeError, match="output handler failed"):
        await profile_workload(
            layer_sources(busybox_image),
            busybox_image.config(),
            WorkloadOptions(args=[f"echo boom; sleep 1000; : {marker}"], period=30),
            work_dir=work_dir,
            on_output=explode,
        )
    assert await wait_until_clean(work_dir, marker, set(netns_names())) == []


ORPHAN_SCRIPT = """
import json, sys
from pathlib import Path
import anyio
from esgz.runtime.profile import profile_workload
from esgz.runtime.recover import recover_work_dir
from esgz.runtime.unpack import LayerFile
from esgz.runtime.workload import WorkloadOptions

layers = [LayerFile(d, Path(p), i) for d, p, i in json.loads(sys.argv[1])]
config = json.loads(Path(sys.argv[2]).read_text())
options = json.loads(sys.argv[5])
anyio.run(lambda: profile_workload(
    layers, config,
    WorkloadOptions(args=[f"echo started; sleep 1000; : {sys.argv[4]}"], period=60, **options),
    work_dir=Path(sys.argv[3]), on_output=lambda stream, line: print(line, flush=True),
))
"""


@pytest.mark.parametrize("cni", [False, True])
def test_workload_does_not_outlive_a_killed_profiler(
    busybox_image: SampleImage, tmp_path: Path, request: pytest.FixtureRequest, cni: bool
) -> None:
    """The shim deletes the container; recover_work_dir removes the rest."""
    require_sandbox()
    options: dict[str, object] = {}
    if cni:
        options = {"cni": True, "cni_plugin_conf_dir": str(request.getfixturevalue("cni_conf_dir"))}
    netns_before = netns_names()
    work_dir = tmp_path / "work"
    marker = f"esgz-orphan-{os.getpid()}"
    layers = [
        [layer.digest, str(busybox_image.blob_path(layer.digest)), layer.diff_id]
        for layer in busybox_image.layers
    ]
    config = busybox_image.blob_path(str(busybox_image.config_digest))
    profiler = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_SCRIPT, json.dumps(layers), str(config), str(work_dir),
         marker, json.dumps(options)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert profiler.stdout is not None
        assert profiler.stdout.readline().strip() == "started"
        profiler.kill()  # no teardown of its own can run
        profiler.wait()
        deadline = time.monotonic() + 15
        while True:
            processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True)
            containers = subprocess.run(
                ["runc", "--root", str(work_dir / "runc-state"), "list", "-q"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            if marker not in processes.stdout and not containers:
                break
            assert time.monotonic() < deadline, f"outlived the profiler: {containers}"
            time.sleep(0.1)
        removed = anyio.run(recover_work_dir, work_dir)
        assert any(item.startswith("mount ") for item in removed)
        assert any(item.startswith("netns ") for item in removed) is cni
        assert leftovers(work_dir, marker, netns_before) == []
        assert anyio.run(recover_work_dir, work_dir) == []  # nothing left to do
    finally:
        profiler.kill()
        profiler.wait()
        if profiler.stdout is not None:
            profiler.stdout.close()
        # What only the profiler itself could have removed: the overlay mount.
        mounts = subprocess.run(
            ["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True, check=True
        ).stdout.split()
        for target in mounts:
            if target.startswith(str(work_dir)):
                subprocess.run(["umount", "-l", target], check=False)


# ---------------------------------------------------------------- dead runs, swept by later runs

DEAD_SLEEP = "989"  # an unusual duration, to find the killed run's workload


def esgz_run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``esgz ARGS`` of this checkout to its end."""
    return subprocess.run(
        esgz_command(*args),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def mounts_below(path: Path) -> list[str]:
    targets = subprocess.run(
        ["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True, check=True
    ).stdout.split()
    return [target for target in targets if target.startswith(str(path))]


def sleeping(duration: str) -> bool:
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return f"sleep {duration}" in processes.splitlines()


def test_sigkilled_optimize_is_swept_by_the_next_run_never_a_live_one(
    busybox_image: SampleImage, tmp_path: Path
) -> None:
    """SIGKILL while profiling leaves the overlay mount; the next run anywhere removes it.

    A run started while the first one is still alive, on the same cache dir, leaves the
    live run's mount and scratch dir alone.
    """
    require_sandbox()
    cache, other_cache = tmp_path / "cache", tmp_path / "other-cache"
    process = start_esgz(
        "optimize", "--cache-dir", str(cache), "--period", "120",
        "--args", f'["echo started; exec sleep {DEAD_SLEEP}"]',
        busybox_image.reference, f"local://{tmp_path / 'out'}:x",
    )  # fmt: skip
    try:
        read_until(process.stderr, "workload stdout: started")
        live_mounts = mounts_below(cache)
        assert live_mounts
        (live_scratch,) = (cache / "tmp").iterdir()
        # A concurrent run on the same cache: the live run's things stay.
        concurrent = esgz_run(
            "convert", "--cache-dir", str(cache), busybox_image.reference,
            f"local://{tmp_path / 'out2'}:x",
        )  # fmt: skip
        assert concurrent.returncode == 0, concurrent.stderr
        assert mounts_below(cache) == live_mounts
        assert live_scratch.is_dir()
        process.kill()  # no cleanup of its own can run
        process.wait()
        deadline = time.monotonic() + 15
        while sleeping(DEAD_SLEEP):  # the shim deletes the container
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert mounts_below(cache) == live_mounts  # what only esgz itself could remove
        # The next run, even with another cache dir, removes the dead run's leftovers.
        later = esgz_run(
            "convert", "--cache-dir", str(other_cache), busybox_image.reference,
            f"local://{tmp_path / 'out3'}:x",
        )  # fmt: skip
        assert later.returncode == 0, later.stderr
        assert mounts_below(cache) == []
        assert list((cache / "tmp").iterdir()) == []
    finally:
        process.kill()
        process.communicate()
        for target in mounts_below(tmp_path):
            subprocess.run(["umount", "-l", target], check=False)


def test_killed_no_cache_run_leaves_nothing_after_the_next_run(
    python_image: SampleImage, tmp_path: Path
) -> None:
    """A --no-cache run killed outright leaves its temp store; the next run removes it."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {"TMPDIR": str(temp)}
    process = subprocess.Popen(
        esgz_command(
            "convert", "--oci", "--log-format", "json", "--no-cache", python_image.reference,
            f"local://{tmp_path / 'out'}:x",
        ),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **env},
    )  # fmt: skip
    read_until(process.stdout, '"event":"layer_fetched"')
    process.kill()
    process.communicate()
    (left,) = temp.iterdir()
    assert left.name.startswith("esgz-")
    result = esgz_run(
        "convert", "--oci", "--no-cache", python_image.reference,
        f"local://{tmp_path / 'out2'}:x", env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert list(temp.iterdir()) == []


DEAD_RUN_SCRIPT = """
import os, sys
from pathlib import Path
from esgz.rundir import create_run_dir

run = create_run_dir(Path(sys.argv[1]), "run-")
fd = os.open(run, os.O_RDONLY)
for _ in range(int(sys.argv[2])):
    os.mkdir("d", dir_fd=fd)
    child = os.open("d", os.O_RDONLY, dir_fd=fd)
    os.close(fd)
    fd = child
os.close(os.open("file", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
print(run)
"""


def dead_run_dir(parent: Path, depth: int) -> Path:
    """A run dir made by a process that has exited since, with ``depth`` nested dirs."""
    made = subprocess.run(
        [sys.executable, "-c", DEAD_RUN_SCRIPT, str(parent), str(depth)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(made.stdout.strip())


def test_deeply_nested_leftovers_do_not_poison_the_cache_dir(
    busybox_image: SampleImage, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    (cache / "tmp").mkdir(parents=True)
    dead = dead_run_dir(cache / "tmp", 5000)
    result = esgz_run(
        "convert", "--oci", "--cache-dir", str(cache), busybox_image.reference,
        f"local://{tmp_path / 'out'}:x",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not dead.exists()
    assert list((cache / "tmp").iterdir()) == []


def test_sweep_spares_live_young_and_foreign_dirs(tmp_path: Path) -> None:
    parent = tmp_path / "tmp"
    parent.mkdir()
    live = create_run_dir(parent, "run-")  # locked by this (live) process
    young = parent / "run-old-version"  # no lock file, not a day old: maybe live
    young.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    (outside / ".esgz-run").write_text("{}")  # looks like a dead run dir ...
    (parent / "run-link").symlink_to(outside)  # ... but is reached through a symlink
    dead = dead_run_dir(parent, 3)
    try:
        removed = sweep_dead_runs(parent, "run-")
        assert f"dir {dead}" in removed
        assert sorted(p.name for p in parent.iterdir()) == sorted(
            [live.name, "run-link", "run-old-version"]
        )
        assert (outside / "keep").exists()
        stale = time.time() - 2 * 24 * 3600
        os.utime(young, (stale, stale))
        sweep_dead_runs(parent, "run-")
        assert sorted(p.name for p in parent.iterdir()) == sorted([live.name, "run-link"])
    finally:
        remove_run_dir(live)
    assert not live.exists()


ORPHAN_SLEEP = "986"


def shim_pids(parent: int) -> list[int]:
    """Pids of the container shims that ``parent`` started."""
    listing = subprocess.run(
        ["ps", "-eo", "pid,ppid,args"], capture_output=True, text=True, check=True
    ).stdout.splitlines()[1:]
    return [
        int(pid)
        for pid, ppid, args in (line.split(None, 2) for line in listing)
        if int(ppid) == parent and "runtime/shim.py" in args
    ]


def test_container_of_a_run_killed_with_its_shim_is_deleted_by_the_next_run(
    busybox_image: SampleImage, tmp_path: Path
) -> None:
    """Kill esgz and its shim together (a cgroup kill): the container runs on, until the
    next run deletes it with the rest of the dead run's leftovers."""
    require_sandbox()
    cache = tmp_path / "cache"
    process = start_esgz(
        "optimize", "--cache-dir", str(cache), "--period", "120",
        "--args", f'["echo started; exec sleep {ORPHAN_SLEEP}"]',
        busybox_image.reference, f"local://{tmp_path / 'out'}:x",
    )  # fmt: skip
    try:
        read_until(process.stderr, "workload stdout: started")
        (shim,) = shim_pids(process.pid)
        for pid in (process.pid, shim):  # stopped first: neither can react to the other
            os.kill(pid, signal.SIGSTOP)
        for pid in (process.pid, shim):
            os.kill(pid, signal.SIGKILL)
        process.wait()
        time.sleep(0.5)
        assert sleeping(ORPHAN_SLEEP)  # the container outlived both
        later = esgz_run(
            "convert", "--cache-dir", str(tmp_path / "other-cache"), busybox_image.reference,
            f"local://{tmp_path / 'out2'}:x",
        )  # fmt: skip
        assert later.returncode == 0, later.stderr
        assert "removed leftover container esgz-" in later.stderr
        deadline = time.monotonic() + 10
        while sleeping(ORPHAN_SLEEP):
            assert time.monotonic() < deadline, "the dead run's container still runs"
            time.sleep(0.1)
        assert mounts_below(cache) == []
        assert list((cache / "tmp").iterdir()) == []
    finally:
        process.kill()
        process.communicate()
        for state in cache.glob("tmp/run-*/profile/runc-state"):  # if the test failed
            for container in subprocess.run(
                ["runc", "--root", str(state), "list", "-q"], capture_output=True, text=True
            ).stdout.split():
                subprocess.run(["runc", "--root", str(state), "delete", "--force", container])
        for target in mounts_below(tmp_path):
            subprocess.run(["umount", "-l", target], check=False)


@pytest.mark.anyio
async def test_netns_sweep_spares_the_namespaces_of_live_runs(cni_conf_dir: Path) -> None:
    """A live run's namespace (no process in it yet) stays; once its run is gone, it goes."""
    name = new_container_id()
    async with cni_network(
        conf_dir=cni_conf_dir, plugin_dirs=DEFAULT_CNI_PLUGIN_DIRS, container_id=name
    ):
        assert name not in await anyio.to_thread.run_sync(sweep_netns)
        assert name in netns_names()
    assert name not in netns_names()  # its own teardown
    assert not (NETNS_LOCK_DIR / f"{name}.lock").exists()
    # A namespace of a dead run: its lock file exists, nobody holds it.
    await anyio.run_process(["ip", "netns", "add", name])
    await anyio.Path(NETNS_LOCK_DIR / f"{name}.lock").touch()
    try:
        assert name in await anyio.to_thread.run_sync(sweep_netns)
        assert name not in netns_names()
        assert not (NETNS_LOCK_DIR / f"{name}.lock").exists()
    finally:
        await anyio.run_process(["ip", "netns", "del", name], check=False)
