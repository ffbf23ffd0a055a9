"""Networking for the profiled container: an isolated netns, or one set up by CNI plugins.

Without ``--cni`` the runtime spec asks for a fresh network namespace, which holds only
the loopback interface (runc brings it up); nothing here is needed. With ``--cni``,
:func:`cni_network` creates a named network namespace (``ip netns add``), runs the
plugins of the first network configuration found in the config dir — ``.conf``,
``.conflist`` or ``.json``, in name order, as go-cni's default — on ``eth0``, after a
``loopback`` network on ``lo``, and yields the namespace path for the spec. On exit
(also on error or cancellation, shielded) it runs ``DEL`` through the plugins in reverse
order and deletes the namespace.

Plugins are executed as the CNI spec says: the binary (looked up in the plugin dirs) gets
``CNI_COMMAND`` (``ADD``/``DEL``), ``CNI_CONTAINERID``, ``CNI_NETNS``, ``CNI_IFNAME``,
``CNI_ARGS``, ``CNI_PATH`` in its environment and the network config on stdin, with
``name``, ``cniVersion`` and the previous plugin's result (``prevResult``) injected for
chained plugins (bridge + host-local IPAM, portmap, firewall, ...).

Each namespace has a lock file (``/run/esgz/netns/<name>.lock``) that its creator holds
(``flock``) from before ``ip netns add`` to after ``ip netns del``; :func:`sweep_netns`
deletes the ``esgz-*`` namespaces whose lock nobody holds, i.e. those of dead runs.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from esgz.errors import SandboxError

__all__ = [
    "CniNetwork",
    "NetworkAttachment",
    "cni_network",
    "find_plugin",
    "load_network_config",
    "sweep_netns",
]

log = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")
#: Where the lock files of esgz's named network namespaces live.
NETNS_LOCK_DIR = Path("/run/esgz/netns")
_NETNS_NAME = re.compile(r"^esgz-[0-9a-f]{12}$")
_CONFIG_EXTENSIONS = (".conf", ".conflist", ".json")
_LOOPBACK = {"cniVersion": "0.3.1", "name": "cni-loopback", "plugins": [{"type": "loopback"}]}


@dataclass(frozen=True, slots=True)
class CniNetwork:
    """A network configuration list: its name, CNI version and chained plugin configs."""

    name: str
    cni_version: str
    plugins: tuple[Mapping[str, Any], ...]
    source: Path | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: Path | None = None) -> CniNetwork:
        """From a ``.conflist`` object, or a single ``.conf`` plugin config."""
        where = str(source) if source else "CNI config"
        if "plugins" in data:
            plugins = data["plugins"]
            if not isinstance(plugins, list) or not plugins:
                raise SandboxError(f"{where}: 'plugins' must be a non-empty list")
        else:
            plugins = [data]
        for plugin in plugins:
            if not isinstance(plugin, dict) or not isinstance(plugin.get("type"), str):
                raise SandboxError(f"{where}: every plugin needs a 'type'")
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise SandboxError(f"{where}: the network has no 'name'")
        return cls(
            name=name,
            cni_version=str(data.get("cniVersion") or "0.4.0"),
            plugins=tuple(plugins),
            source=source,
        )


@dataclass(frozen=True, slots=True)
class NetworkAttachment:
    """A network namespace set up by CNI: its path and each network's ADD result."""

    netns_path: Path
    results: dict[str, Any] = field(default_factory=dict)


def load_network_config(conf_dir: Path) -> CniNetwork:
    """The first network configuration in ``conf_dir`` (blocking); SandboxError if none."""
    try:
        files = sorted(p for p in conf_dir.iterdir() if p.suffix in _CONFIG_EXTENSIONS)
    except OSError as err:
        raise SandboxError(f"cannot read the CNI config dir {conf_dir}: {err}") from err
    if not files:
        raise SandboxError(f"no CNI network config (.conf/.conflist/.json) in {conf_dir}")
    path = files[0]
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SandboxError(f"cannot load CNI config {path}: {err}") from err
    if not isinstance(data, dict):
        raise SandboxError(f"{path}: a CNI config must be a JSON object")
    return CniNetwork.from_dict(data, path)


def find_plugin(plugin_type: str, plugin_dirs: Sequence[Path]) -> Path:
    """The executable for ``plugin_type`` in the first dir that has it (blocking)."""
    if "/" in plugin_type or plugin_type in ("", ".", ".."):
        raise SandboxError(f"bad CNI plugin type {plugin_type!r}")
    for directory in plugin_dirs:
        candidate = directory / plugin_type
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    dirs = ", ".join(str(d) for d in plugin_dirs)
    raise SandboxError(f"CNI plugin {plugin_type!r} not found in {dirs}")


def _version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        return (0,)


class _CniRunner:
    def __init__(self, container_id: str, netns: Path, plugin_dirs: Sequence[Path]) -> None:
        self.container_id = container_id
        self.netns = netns
        self.plugin_dirs = list(plugin_dirs)

    async def _exec(
        self,
        command: str,
        network: CniNetwork,
        plugin: Mapping[str, Any],
        ifname: str,
        prev_result: Any,
    ) -> Any:
        config = dict(plugin)
        config["name"] = network.name
        config["cniVersion"] = network.cni_version
        if prev_result is not None:
            config["prevResult"] = prev_result
        plugin_type = str(plugin["type"])
        binary = await anyio.to_thread.run_sync(find_plugin, plugin_type, self.plugin_dirs)
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": self.container_id,
            "CNI_NETNS": str(self.netns),
            "CNI_IFNAME": ifname,
            "CNI_ARGS": "",
            "CNI_PATH": ":".join(str(d) for d in self.plugin_dirs),
        }
        result = await anyio.run_process(
            [str(binary)], input=json.dumps(config).encode(), env=env, check=False
        )
        output = result.stdout.decode(errors="replace").strip()
        if result.returncode != 0:
            message = output or result.stderr.decode(errors="replace").strip()
            try:
                error = json.loads(output)
                message = f"{error.get('msg', '')} {error.get('details', '')}".strip()
            except ValueError:
                pass
            raise SandboxError(
                f"CNI plugin {plugin_type} {command} on network {network.name!r} failed: {message}"
            )
        if command != "ADD" or not output:
            return None
        try:
            return json.loads(output)
        except ValueError as err:
            raise SandboxError(f"CNI plugin {plugin_type} returned invalid JSON: {err}") from err

    async def add(self, network: CniNetwork, ifname: str) -> Any:
        result: Any = None
        for plugin in network.plugins:
            result = await self._exec("ADD", network, plugin, ifname, result)
        return result

    async def delete(self, network: CniNetwork, ifname: str, add_result: Any) -> None:
        prev = add_result if _version_tuple(network.cni_version) >= (0, 4, 0) else None
        for plugin in reversed(network.plugins):
            try:
                await self._exec("DEL", network, plugin, ifname, prev)
            except SandboxError as err:
                log.warning("%s", err)


async def _ip_netns(*args: str) -> None:
    result = await anyio.run_process(["ip", "netns", *args], check=False)
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip()
        raise SandboxError(f"ip netns {' '.join(args)} failed: {message}")


@asynccontextmanager
async def cni_network(
    *, conf_dir: Path, plugin_dirs: Sequence[Path], container_id: str
) -> AsyncIterator[NetworkAttachment]:
    """Create a netns named ``container_id`` configured by CNI; yield it; tear down."""
    network = await anyio.to_thread.run_sync(load_network_config, conf_dir)
    loopback = CniNetwork.from_dict(_LOOPBACK)
    for plugin in (*network.plugins, *loopback.plugins):
        await anyio.to_thread.run_sync(find_plugin, str(plugin["type"]), plugin_dirs)
    name = container_id
    netns = NETNS_DIR / name
    attachment = NetworkAttachment(netns_path=netns)
    runner = _CniRunner(container_id, netns, plugin_dirs)
    added: list[tuple[CniNetwork, str]] = []
    created = False
    lock = await anyio.to_thread.run_sync(_lock_netns, name)
    try:
        with anyio.CancelScope(shield=True):
            await _ip_netns("add", name)
            created = True
        for net, ifname in ((loopback, "lo"), (network, "eth0")):
            added.append((net, ifname))
            attachment.results[net.name] = await runner.add(net, ifname)
        log.info("attached to CNI network %r (%s)", network.name, network.source)
        yield attachment
    finally:
        with anyio.CancelScope(shield=True):
            for net, ifname in reversed(added):
                await runner.delete(net, ifname, attachment.results.get(net.name))
            try:
                if created:
                    await _ip_netns("del", name)
            finally:
                await anyio.to_thread.run_sync(_unlock_netns, name, lock)


def _lock_netns(name: str) -> int:
    """Create and hold the lock file of the namespace ``name`` (before it exists)."""
    path = NETNS_LOCK_DIR / f"{name}.lock"
    while True:
        NETNS_LOCK_DIR.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # a sweeper removed the file before we locked it: again


def _unlock_netns(name: str, fd: int) -> None:
    """Remove and release the lock file (once the namespace is gone)."""
    try:
        (NETNS_LOCK_DIR / f"{name}.lock").unlink(missing_ok=True)
    finally:
        os.close(fd)


def sweep_netns(*, unlocked: bool = False) -> list[str]:
    """Delete the ``esgz-*`` network namespaces of dead runs (blocking); their names.

    A namespace whose lock file is held belongs to a live run and is kept. One without a
    lock file (made by an older esgz, which may still be running) is only deleted with
    ``unlocked``, and only if no process is in it. Lock files of namespaces that no
    longer exist are removed too.
    """
    removed: list[str] = []
    try:
        names = sorted(n for n in os.listdir(NETNS_DIR) if _NETNS_NAME.match(n))
    except OSError:
        names = []
    for name in names:
        lock_path = NETNS_LOCK_DIR / f"{name}.lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = None
        except OSError:
            continue
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live run holds it
            elif not unlocked:
                continue
            else:
                pids = subprocess.run(
                    ["ip", "netns", "pids", name], capture_output=True, check=False
                )
                if pids.returncode != 0 or pids.stdout.strip():
                    continue
            result = subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
            if result.returncode == 0:
                removed.append(name)
                lock_path.unlink(missing_ok=True)
            else:
                message = result.stderr.decode(errors="replace").strip()
                log.warning("cannot delete leftover netns %s: %s", name, message)
        finally:
            if fd is not None:
                os.close(fd)
    _remove_orphan_locks(set(names) - set(removed))
    return removed


def _remove_orphan_locks(existing: set[str]) -> None:
    """Lock files whose namespace is gone and that nobody holds (their run died)."""
    try:
        locks = os.listdir(NETNS_LOCK_DIR)
    except OSError:
        return
    for lock_name in locks:
        name = lock_name.removesuffix(".lock")
        if name in existing or not _NETNS_NAME.match(name) or (NETNS_DIR / name).exists():
            continue
        try:
            fd = os.open(NETNS_LOCK_DIR / lock_name, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            (NETNS_LOCK_DIR / lock_name).unlink(missing_ok=True)
        except OSError:
            pass
        finally:
            os.close(fd)
