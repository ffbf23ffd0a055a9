"""Rootless profiling: the mode, the id mapping and the user-namespace sandbox around it.

An unprivileged user cannot mount overlayfs, create namespaces for runc or place fanotify
mount marks on the host. Inside a user namespace of its own, where it is root, it can do
all of that but the mount marks (see :mod:`esgz.runtime.inodemarks`). So rootless
profiling runs the same profiler (:func:`esgz.runtime.profile.profile_workload`) in a
helper process started in a fresh user, mount and pid namespace::

    setpriv --pdeathsig KILL -- unshare --user <ids> --mount --pid --fork --kill-child \\
        --mount-proc -- python -m esgz.runtime.usernshelper

* **ids** (:class:`IdMapping`): the user becomes root in the namespace; with a range in
  /etc/subuid and /etc/subgid and ``newuidmap``/``newgidmap`` installed (Debian's
  ``uidmap``), ids 1…N map to that range (``--map-auto``), so layers unpack with their
  owners (mapped) and ``--user nobody`` works. Otherwise only id 0 is mapped: files owned
  by other ids are unpacked as root's, and a workload that runs as another user (or
  switches to one) cannot start — :meth:`IdMapping.check_user` says so before the run.
* **helper**: it unpacks the layers into its own layer cache (``<layers>-userns``, whose
  owners are the mapped ids and whose opaque dirs carry ``user.overlay.opaque``), mounts
  the rootfs with overlayfs ``userxattr`` (Linux ≥ 5.11), runs ``runc`` (which detects the
  user namespace) with a spec adapted by :func:`adapt_spec`, and records with inode marks.
  It talks JSON lines on its stdout (workload output, then the result) and logs on stderr.
* **cleanup**: the helper is the init of its pid namespace, so when it dies every process
  of the workload dies with it, and the mounts go with the mount namespace. Its parent
  death signal chain (``setpriv --pdeathsig``, ``unshare --kill-child``) ends it when the
  profiler dies, even by SIGKILL. The per-run dir (``userns-*`` in the work dir) holds
  files owned by mapped ids, so it is removed from inside a user namespace with the same
  mapping (:func:`remove_userns_tree`).

The network: the default (a fresh network namespace with only loopback) and
``--net-host`` work; ``--cni`` needs root.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.abc

from esgz.errors import SandboxError, WorkloadError
from esgz.fsutil import remove_tree
from esgz.runtime.runc import read_lines
from esgz.runtime.workload import WorkloadOptions
from esgz.signals import preserving_signal_handlers

__all__ = [
    "USERNS_RUN_PREFIX",
    "IdMapping",
    "ProfileMode",
    "adapt_spec",
    "choose_mode",
    "has_sys_admin",
    "id_mapping",
    "in_user_namespace",
    "remove_userns_tree",
    "remove_userns_tree_sync",
    "rootless_unavailable_reason",
    "run_helper",
    "subordinate_range",
]

log = logging.getLogger(__name__)

#: ``root``: the profiler runs as root on the host; ``rootless``: in a user namespace.
ProfileMode = Literal["root", "rootless"]

#: Prefix of the per-run dirs of the rootless profiler in the work dir.
USERNS_RUN_PREFIX = "userns-"

_CAP_SYS_ADMIN = 21
_SUBUID = Path("/etc/subuid")
_SUBGID = Path("/etc/subgid")
_MAX_USER_NAMESPACES = Path("/proc/sys/user/max_user_namespaces")
_HELPER_MODULE = "esgz.runtime.usernshelper"
_KILL_WAIT = 5.0
_DRAIN_WAIT = 5.0


def has_sys_admin() -> bool:
    """Whether this process has CAP_SYS_ADMIN in its effective set."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAP_SYS_ADMIN & 1)
    except OSError:
        pass
    return os.geteuid() == 0


def in_user_namespace() -> bool:
    """Whether this process runs in a user namespace other than the initial one."""
    try:
        text = Path("/proc/self/uid_map").read_text().split()
    except OSError:
        return False
    return text != ["0", "0", "4294967295"]


def choose_mode(rootless: bool | None) -> ProfileMode:
    """The profiling mode: forced by ``rootless``, else root when root with CAP_SYS_ADMIN
    in the initial user namespace (fanotify mount marks need it there). Blocking."""
    if rootless is not None:
        return "rootless" if rootless else "root"
    privileged = os.geteuid() == 0 and has_sys_admin() and not in_user_namespace()
    return "root" if privileged else "rootless"


def subordinate_range(table: Path, name: str, ident: int) -> tuple[int, int] | None:
    """The first ``start:count`` range of ``name`` (or its numeric id) in /etc/sub[ug]id."""
    try:
        lines = table.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) != 3 or fields[0] not in (name, str(ident)):
            continue
        try:
            start, count = int(fields[1]), int(fields[2])
        except ValueError:
            continue
        if count > 0:
            return start, count
    return None


@dataclass(frozen=True)
class IdMapping:
    """How ids map into the sandbox's user namespace.

    ``uid``/``gid`` (the user's own ids) become 0; ``subuids``/``subgids`` are the
    ``(start, count)`` ranges that ids 1…count map to, or None for a single-id mapping.
    """

    uid: int
    gid: int
    user: str
    subuids: tuple[int, int] | None
    subgids: tuple[int, int] | None

    @property
    def full(self) -> bool:
        """Whether ids other than 0 are mapped (a subordinate range for uids and gids)."""
        return self.subuids is not None and self.subgids is not None

    def unshare_args(self) -> list[str]:
        """The id options of ``unshare``."""
        if self.full:
            return ["--map-auto", "--map-root-user"]
        return ["--map-root-user"]

    def describe(self) -> str:
        """``0:<uid>:1`` plus the subordinate range, as a log line shows it."""
        if self.subuids is None or self.subgids is None:
            return f"0→{self.uid} only (single id)"
        (us, uc), (gs, gc) = self.subuids, self.subgids
        uids = f"uids 1-{uc - 1}→{us}-{us + uc - 2}"
        return f"0→{self.uid}, {uids}, gids 1-{gc - 1}→{gs}-{gs + gc - 2}"

    def maps_uid(self, uid: int) -> bool:
        """Whether user id ``uid`` exists inside the namespace."""
        return uid == 0 or (self.subuids is not None and 0 < uid < self.subuids[1])

    def maps_gid(self, gid: int) -> bool:
        """Whether group id ``gid`` exists inside the namespace."""
        return gid == 0 or (self.subgids is not None and 0 < gid < self.subgids[1])

    def check_user(self, uid: int, gid: int, groups: Sequence[int] = ()) -> None:
        """WorkloadError if the workload's user or groups cannot exist in the namespace."""
        if self.maps_uid(uid) and all(self.maps_gid(g) for g in (gid, *groups)):
            return
        if not self.full:
            raise WorkloadError(
                f"user {uid}:{gid} is not mapped in the rootless sandbox, which maps only root:"
                f" add a range for {self.user!r} to /etc/subuid and /etc/subgid and install"
                " newuidmap/newgidmap (uidmap)"
            )
        raise WorkloadError(
            f"user {uid}:{gid} is outside the subordinate id range of {self.user!r}"
        )


def id_mapping() -> IdMapping:
    """The mapping this user gets: subordinate ranges when usable, else a single id."""
    uid, gid = os.getuid(), os.getgid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    helpers = shutil.which("newuidmap") and shutil.which("newgidmap")
    subuids = subordinate_range(_SUBUID, name, uid) if helpers and uid != 0 else None
    subgids = subordinate_range(_SUBGID, name, uid) if helpers and uid != 0 else None
    if subuids is None or subgids is None:
        subuids = subgids = None
    return IdMapping(uid, gid, name, subuids, subgids)


def rootless_unavailable_reason() -> str | None:
    """Why rootless profiling cannot work on this host, or None. Blocking."""
    try:
        if int(_MAX_USER_NAMESPACES.read_text()) == 0:
            return "rootless profiling needs user namespaces (sysctl user.max_user_namespaces is 0)"
    except (OSError, ValueError):
        pass
    for tool, package in (("unshare", "util-linux"), ("setpriv", "util-linux")):
        if shutil.which(tool) is None:
            return f"rootless profiling needs {tool!r} ({package}) in PATH"
    return None


def adapt_spec(spec: dict[str, Any], workload: WorkloadOptions, mapping: IdMapping) -> None:
    """Change a root-mode runtime spec (in place) for runc inside the user namespace.

    No cgroup resources (not delegated to the user); with ``--net-host`` the host's /sys
    is bind-mounted (sysfs can only be mounted by the owner of the network namespace);
    /dev/pts without ``gid=5`` when group 5 is not mapped.
    """
    linux = spec.setdefault("linux", {})
    linux.pop("resources", None)
    mounts = []
    for mount in spec.get("mounts", []):
        if mount.get("destination") == "/sys" and workload.net_host:
            mount = {
                "destination": "/sys",
                "type": "bind",
                "source": "/sys",
                "options": ["rbind", "nosuid", "noexec", "nodev", "ro"],
            }
        elif mount.get("type") == "devpts" and not mapping.maps_gid(5):
            mount = dict(mount, options=[o for o in mount["options"] if o != "gid=5"])
        mounts.append(mount)
    spec["mounts"] = mounts


def _helper_command(mapping: IdMapping) -> list[str]:
    return [
        "setpriv",
        "--pdeathsig",
        "KILL",
        "--",
        "unshare",
        "--user",
        *mapping.unshare_args(),
        "--mount",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "--",
        sys.executable,
        "-m",
        _HELPER_MODULE,
    ]


def _helper_env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [p for p in sys.path if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def _remove_command(path: Path, mapping: IdMapping) -> list[str]:
    return ["unshare", "--user", *mapping.unshare_args(), "--", "rm", "-rf", "--", str(path)]


async def remove_userns_tree(path: Path, mapping: IdMapping) -> None:
    """Remove ``path``, whose files may belong to mapped ids, from inside a user namespace."""
    if not await anyio.to_thread.run_sync(os.path.lexists, path):
        return
    if os.geteuid() == 0:
        await anyio.to_thread.run_sync(lambda: remove_tree(path, ignore_errors=True))
        return
    result = await anyio.run_process(_remove_command(path, mapping), check=False)
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip()
        raise SandboxError(f"cannot remove {path}: {message}")


def remove_userns_tree_sync(path: Path) -> bool:
    """Blocking :func:`remove_userns_tree` with this user's mapping; whether it worked."""
    if shutil.which("unshare") is None:
        return False
    result = subprocess.run(_remove_command(path, id_mapping()), capture_output=True, check=False)
    return result.returncode == 0


@asynccontextmanager
async def _run_dir(work_dir: Path, mapping: IdMapping) -> AsyncIterator[Path]:
    await anyio.to_thread.run_sync(lambda: work_dir.mkdir(parents=True, exist_ok=True))
    path = Path(
        await anyio.to_thread.run_sync(
            lambda: tempfile.mkdtemp(prefix=USERNS_RUN_PREFIX, dir=work_dir)
        )
    )
    try:
        yield path
    finally:
        with anyio.CancelScope(shield=True):
            started = time.monotonic()
            await remove_userns_tree(path, mapping)
            log.debug("removed %s in %.2fs", path, time.monotonic() - started)


async def _kill(process: anyio.abc.Process) -> None:
    """SIGKILL the helper's ``unshare`` (its child, the namespace's init, follows)."""
    with anyio.CancelScope(shield=True):
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            with anyio.move_on_after(_KILL_WAIT):
                await process.wait()
        with anyio.move_on_after(_KILL_WAIT):
            await process.aclose()


async def run_helper(
    request: Mapping[str, Any],
    *,
    work_dir: Path,
    mapping: IdMapping,
    on_output: Callable[[str, str], None] | None,
    wait_on_signal: bool = False,
) -> dict[str, Any]:
    """Run the profiler in the user-namespace helper; its result as a JSON object.

    ``request`` holds :func:`esgz.runtime.usernshelper.main`'s arguments (the run dir is
    added here). Workload output lines go to ``on_output``; the helper's errors come back
    as the same :class:`~esgz.errors.EsgzError` classes. Whatever ends the call, the
    helper and its namespaces are gone and the run dir removed when it returns.
    """
    result: dict[str, Any] = {}
    error: dict[str, str] = {}
    stderr_tail: deque[str] = deque(maxlen=5)

    def log_line(line: str) -> None:
        # The helper logs "LEVEL logger: message"; its warnings stay warnings here.
        stderr_tail.append(line)
        level, _, rest = line.partition(" ")
        number = logging.getLevelName(level)
        if isinstance(number, int) and rest:
            log.log(number, "userns helper: %s", rest)
        else:
            log.info("userns helper: %s", line)

    async with _run_dir(work_dir, mapping) as run_dir:
        payload = json.dumps({**request, "run_dir": str(run_dir)}).encode() + b"\n"

        def on_message(line: str) -> None:
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                log.info("userns helper: %s", line)
                return
            if "output" in message:
                stream, text = message["output"]
                if on_output is not None:
                    on_output(stream, text)
                else:
                    log.info("workload %s: %s", stream, text)
            elif "result" in message:
                result.update(message["result"])
            elif "error" in message:
                error.update(message["error"])

        process = await anyio.open_process(
            _helper_command(mapping),
            stdin=-1,
            stdout=-1,
            stderr=-1,
            env=_helper_env(),
            start_new_session=True,
        )
        try:
            assert process.stdin is not None
            assert process.stdout is not None
            assert process.stderr is not None
            await process.stdin.send(payload)
            stdout_done = anyio.Event()

            async def read_stdout(stream: anyio.abc.ByteReceiveStream) -> None:
                try:
                    await read_lines(stream, on_message)
                finally:
                    stdout_done.set()

            async with anyio.create_task_group() as group:
                group.start_soon(read_stdout, process.stdout)
                group.start_soon(read_lines, process.stderr, log_line)
                if wait_on_signal:
                    group.start_soon(_forward_signals, process)
                await process.wait()
                log.debug("rootless profiler exited with code %s", process.returncode)
                # Its last lines (the result) may still be in the pipe.
                with anyio.move_on_after(_DRAIN_WAIT):
                    await stdout_done.wait()
                group.cancel_scope.cancel()
        finally:
            await _kill(process)
    if error:
        raise _error(error)
    if not result:
        last = f": {stderr_tail[-1]}" if stderr_tail else ""
        raise SandboxError(f"the rootless profiler ended with code {process.returncode}{last}")
    return result


async def _forward_signals(process: anyio.abc.Process) -> None:
    """With ``wait_on_signal``: the first SIGINT/SIGTERM/SIGHUP/SIGQUIT ends the run normally."""
    if threading.current_thread() is not threading.main_thread():
        return
    assert process.stdin is not None
    waited = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
    with preserving_signal_handlers(*waited), anyio.open_signal_receiver(*waited) as signals:
        async for _ in signals:
            log.info("signal detected")
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await process.stdin.send(b'{"signal": true}\n')
            return


def _error(error: Mapping[str, str]) -> Exception:
    from esgz import errors

    kind = getattr(errors, error.get("type", ""), None)
    message = error.get("message", "the rootless profiler failed")
    if isinstance(kind, type) and issubclass(kind, errors.EsgzError):
        with contextlib.suppress(TypeError):
            return kind(message)
    return SandboxError(message)
