"""The OCI runtime spec (``config.json``) for the profiled container.

:func:`build_spec` starts from the same defaults as containerd's ``WithDefaultSpec`` +
``WithDefaultUnixDevices`` (pid/ipc/uts/mount/network namespaces, the default capability
set, masked and read-only /proc paths, ``noNewPrivileges``, ``RLIMIT_NOFILE`` 1024, the
/proc /dev /dev/pts /dev/shm /dev/mqueue /sys /run mounts, the default device rules),
applies the image config (Env, Entrypoint, Cmd, WorkingDir, User) and then the workload
overrides, and appends the ``--mount`` mounts and the generated /etc/resolv.conf and
/etc/hosts (bind-mounted read-only; with ``--net-host`` the host's files are mounted after
them, so they win).

:func:`resolve_user` turns ``name``, ``uid``, ``user:group`` or ``uid:gid`` into numeric
ids using the image's /etc/passwd and /etc/group, read on the host before the workload
starts (so these reads are not recorded); symlinks are resolved inside the rootfs.
"""

from __future__ import annotations

import os
import posixpath
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esgz.errors import WorkloadError
from esgz.runtime.workload import HostEntry, WorkloadOptions

__all__ = [
    "DEFAULT_CAPABILITIES",
    "DEFAULT_PATH_ENV",
    "ResolvedUser",
    "build_spec",
    "hosts_file",
    "merge_env",
    "process_args",
    "read_file_in_root",
    "resolv_conf",
    "resolve_user",
    "stop_signal",
]

DEFAULT_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

_MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
)
_READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

_DEFAULT_HOSTS = (
    ("127.0.0.1", "localhost"),
    ("::1", "localhost ip6-localhost ip6-loopback"),
    ("fe00::0", "ip6-localnet"),
    ("ff00::0", "ip6-mcastprefix"),
    ("ff02::1", "ip6-allnodes"),
    ("ff02::2", "ip6-allrouters"),
)

# (type, major, minor) of the devices containerd allows by default; minor None = any.
_DEFAULT_DEVICE_RULES: tuple[tuple[str, int, int | None], ...] = (
    ("c", 1, 3),  # /dev/null
    ("c", 1, 8),  # /dev/random
    ("c", 1, 7),  # /dev/full
    ("c", 5, 0),  # /dev/tty
    ("c", 1, 5),  # /dev/zero
    ("c", 1, 9),  # /dev/urandom
    ("c", 5, 1),  # /dev/console
    ("c", 136, None),  # /dev/pts/*
    ("c", 5, 2),  # /dev/ptmx
)

_MAX_ID = 2**31 - 1
_MAX_SYMLINKS = 40


@dataclass(frozen=True, slots=True)
class ResolvedUser:
    """Numeric ids the workload runs as."""

    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = field(default=())


def read_file_in_root(root: Path, path: str) -> str | None:
    """Read ``path`` as seen from inside ``root`` (symlinks resolved within it); None if absent.

    Blocking.
    """
    resolved = "/"
    pending = [p for p in path.split("/") if p]
    links = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            resolved = posixpath.dirname(resolved) or "/"
            continue
        candidate = posixpath.join(resolved, part)
        host = root / candidate.lstrip("/")
        if host.is_symlink():
            links += 1
            if links > _MAX_SYMLINKS:
                return None
            target = os.readlink(host)
            if target.startswith("/"):
                resolved = "/"
            pending = [p for p in target.split("/") if p] + pending
            continue
        resolved = candidate
    host = root / resolved.lstrip("/")
    try:
        return host.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def _parse_colon_file(text: str | None, fields: int) -> list[list[str]]:
    rows = []
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) < fields:
            parts += [""] * (fields - len(parts))
        rows.append(parts)
    return rows


def _numeric(text: str) -> int | None:
    if text.isdigit():
        value = int(text)
        if value <= _MAX_ID:
            return value
    return None


def resolve_user(root: Path, user: str | None) -> ResolvedUser:
    """Resolve a user spec against the image's /etc/passwd and /etc/group (blocking).

    Same rules as containerd's ``WithUser``: a numeric uid missing from /etc/passwd runs
    with gid 0; an unknown user or group name is a WorkloadError. Supplementary groups
    are the primary gid plus the groups listing the user as a member.
    """
    if not user:
        return ResolvedUser()
    passwd = _parse_colon_file(read_file_in_root(root, "/etc/passwd"), 7)
    groups = _parse_colon_file(read_file_in_root(root, "/etc/group"), 4)
    parts = user.split(":")
    if len(parts) > 2 or not all(parts):
        raise WorkloadError(f"user {user!r}: expected user, uid, user:group or uid:gid")

    def by_name(name: str) -> list[str]:
        for row in passwd:
            if row[0] == name:
                return row
        raise WorkloadError(f"user {user!r}: no user {name!r} in the image's /etc/passwd")

    def by_uid(uid: int) -> list[str] | None:
        for row in passwd:
            if _numeric(row[2]) == uid:
                return row
        return None

    def group_id(name: str) -> int:
        for row in groups:
            if row[0] == name and _numeric(row[2]) is not None:
                return int(row[2])
        raise WorkloadError(f"user {user!r}: no group {name!r} in the image's /etc/group")

    uid_value = _numeric(parts[0])
    entry = by_uid(uid_value) if uid_value is not None else by_name(parts[0])
    if entry is not None and _numeric(entry[2]) is None:
        raise WorkloadError(f"user {user!r}: bad uid in the image's /etc/passwd")
    uid = int(entry[2]) if entry is not None else (uid_value or 0)
    if len(parts) == 2:
        gid_value = _numeric(parts[1])
        gid = gid_value if gid_value is not None else group_id(parts[1])
    elif entry is not None:
        gid = _numeric(entry[3]) or 0
    else:
        gid = 0
    extra = [gid]
    if entry is not None:
        for row in groups:
            gid_of_group = _numeric(row[2])
            if (
                gid_of_group is not None
                and entry[0] in row[3].split(",")
                and gid_of_group not in extra
            ):
                extra.append(gid_of_group)
    return ResolvedUser(uid=uid, gid=gid, additional_gids=tuple(extra))


def merge_env(base: Sequence[str], overrides: Sequence[str]) -> list[str]:
    """``base`` with each ``KEY=value`` of ``overrides`` replacing the same key or appended."""
    result = list(base)
    positions = {item.split("=", 1)[0]: i for i, item in enumerate(result)}
    for item in overrides:
        key = item.split("=", 1)[0]
        if key in positions:
            result[positions[key]] = item
        else:
            positions[key] = len(result)
            result.append(item)
    return result


def process_args(image: Mapping[str, Any], workload: WorkloadOptions) -> list[str]:
    """Entrypoint ++ Cmd, with ``--entrypoint`` / ``--args`` replacing the image's."""
    entrypoint = workload.entrypoint if workload.entrypoint is not None else image.get("Entrypoint")
    cmd = workload.args if workload.args is not None else image.get("Cmd")
    args = list(entrypoint or []) + list(cmd or [])
    if not args:
        raise WorkloadError("no command to run: the image has no Entrypoint/Cmd; use --entrypoint")
    return args


def stop_signal(image: Mapping[str, Any]) -> signal.Signals:
    """The image's StopSignal (``SIGTERM``, ``TERM`` or ``15``); SIGKILL when unset."""
    text = str(image.get("StopSignal") or "").strip().upper()
    if not text:
        return signal.SIGKILL
    try:
        if text.isdigit():
            return signal.Signals(int(text))
        return signal.Signals[text if text.startswith("SIG") else "SIG" + text]
    except (ValueError, KeyError):
        raise WorkloadError(f"image StopSignal {text!r} is not a signal") from None


def hosts_file(add_hosts: Sequence[HostEntry]) -> str:
    """The generated /etc/hosts: Docker's defaults, then ``IP<TAB>host`` per extra host."""
    lines = [f"{ip}\t{host}" for ip, host in _DEFAULT_HOSTS]
    lines += [f"{entry.ip}\t{entry.host}" for entry in add_hosts]
    return "\n".join(lines) + "\n"


def resolv_conf(nameservers: Sequence[str], search: Sequence[str], options: Sequence[str]) -> str:
    """The generated /etc/resolv.conf: ``nameserver`` lines, one ``search``, one ``options``."""
    lines = [f"nameserver {server}" for server in nameservers]
    if search:
        lines.append("search " + " ".join(search))
    if options:
        lines.append("options " + " ".join(options))
    return "".join(line + "\n" for line in lines)


def _default_mounts() -> list[dict[str, Any]]:
    def mount(destination: str, kind: str, source: str, *options: str) -> dict[str, Any]:
        return {
            "destination": destination,
            "type": kind,
            "source": source,
            "options": list(options),
        }

    return [
        mount("/proc", "proc", "proc", "nosuid", "noexec", "nodev"),
        mount("/dev", "tmpfs", "tmpfs", "nosuid", "strictatime", "mode=755", "size=65536k"),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
            "gid=5",
        ),
        mount("/dev/shm", "tmpfs", "shm", "nosuid", "noexec", "nodev", "mode=1777", "size=65536k"),
        mount("/dev/mqueue", "mqueue", "mqueue", "nosuid", "noexec", "nodev"),
        mount("/sys", "sysfs", "sysfs", "nosuid", "noexec", "nodev", "ro"),
        mount("/run", "tmpfs", "tmpfs", "nosuid", "strictatime", "mode=755", "size=65536k"),
    ]


def _device_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}]
    for kind, major, minor in _DEFAULT_DEVICE_RULES:
        rule: dict[str, Any] = {"allow": True, "type": kind, "major": major, "access": "rwm"}
        if minor is not None:
            rule["minor"] = minor
        rules.append(rule)
    return rules


def _bind(source: Path | str, destination: str) -> dict[str, Any]:
    return {
        "destination": destination,
        "type": "bind",
        "source": str(source),
        "options": ["rbind", "ro"],
    }


def build_spec(
    *,
    rootfs: Path,
    image_config: Mapping[str, Any],
    workload: WorkloadOptions,
    user: ResolvedUser,
    hosts_path: Path,
    resolv_conf_path: Path,
    env_file_entries: Sequence[str] = (),
    netns_path: str | None = None,
    hostname: str | None = None,
    console_size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """The runtime spec as a JSON-ready dict.

    ``image_config`` is the image config's ``config`` object (Env, Entrypoint, Cmd,
    WorkingDir, User, StopSignal). ``netns_path`` joins an existing network namespace
    (CNI); otherwise a fresh one is created, unless ``workload.net_host``.
    ``console_size`` (rows, columns) sizes the terminal of a ``workload.terminal`` run.
    """
    image_env = list(image_config.get("Env") or []) or [DEFAULT_PATH_ENV]
    env = merge_env(merge_env(image_env, workload.env), env_file_entries)
    capabilities = list(DEFAULT_CAPABILITIES)
    namespaces: list[dict[str, str]] = [
        {"type": "pid"},
        {"type": "ipc"},
        {"type": "uts"},
        {"type": "mount"},
    ]
    if not workload.net_host:
        network: dict[str, str] = {"type": "network"}
        if netns_path is not None:
            network["path"] = netns_path
        namespaces.append(network)
    mounts = _default_mounts()
    mounts += [m.to_oci() for m in workload.mounts]
    mounts += [_bind(resolv_conf_path, "/etc/resolv.conf"), _bind(hosts_path, "/etc/hosts")]
    if workload.net_host:
        mounts += [_bind("/etc/resolv.conf", "/etc/resolv.conf"), _bind("/etc/hosts", "/etc/hosts")]
    spec: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "root": {"path": str(rootfs), "readonly": False},
        "process": {
            "terminal": workload.terminal,
            "user": {
                "uid": user.uid,
                "gid": user.gid,
                "additionalGids": list(user.additional_gids),
            },
            "args": process_args(image_config, workload),
            "env": env,
            "cwd": workload.cwd or image_config.get("WorkingDir") or "/",
            "capabilities": {
                "bounding": capabilities,
                "effective": capabilities,
                "permitted": capabilities,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "mounts": mounts,
        "linux": {
            "resources": {"devices": _device_rules()},
            "namespaces": namespaces,
            "maskedPaths": list(_MASKED_PATHS),
            "readonlyPaths": list(_READONLY_PATHS),
        },
    }
    if hostname:
        spec["hostname"] = hostname
    if workload.terminal and console_size is not None:
        rows, columns = console_size
        spec["process"]["consoleSize"] = {"height": rows, "width": columns}
    return spec
