"""The workload to profile: the options model and parsers for the flags' string forms.

:class:`WorkloadOptions` holds everything that decides how the image runs while it is
profiled, with the same meaning (and snake_case names) as ``ctr-remote image optimize``'s
flags: ``--entrypoint``/``--args`` (JSON arrays), ``--env`` (add-or-replace),
``--env-file``, ``--user``, ``--cwd``, ``--period``, ``--wait-on-signal``,
``--wait-on-line``, ``-t``/``-i``, ``--mount`` (containerd ``ctr`` syntax), ``--cni`` with
its directories, ``--net-host``, ``--add-hosts`` and the DNS lists. Each field accepts its
CLI string form as well as the typed value, so one model serves the command line and YAML.

Malformed input (bad JSON, a mount spec with an unknown key, a host entry without ``:``)
raises :class:`~esgz.errors.WorkloadError` with a one-line message when the model is built,
before anything is started.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from esgz.errors import WorkloadError

__all__ = [
    "DEFAULT_CNI_CONF_DIR",
    "DEFAULT_CNI_PLUGIN_DIRS",
    "DEFAULT_PERIOD",
    "HostEntry",
    "MountSpec",
    "WorkloadOptions",
    "parse_add_hosts",
    "parse_csv",
    "parse_env_file",
    "parse_json_array",
    "parse_mount",
]

#: Seconds of profiling when ``--period`` is not given (or is not positive).
DEFAULT_PERIOD = 10.0
#: Where CNI network configurations are looked up by default (as go-cni).
DEFAULT_CNI_CONF_DIR = Path("/etc/cni/net.d")
#: Where CNI plugin binaries are looked up by default: upstream's place, then Debian's.
DEFAULT_CNI_PLUGIN_DIRS: tuple[Path, ...] = (Path("/opt/cni/bin"), Path("/usr/lib/cni"))

_MOUNT_KEYS = {
    "type": "type",
    "source": "source",
    "src": "source",
    "destination": "destination",
    "dst": "destination",
    "options": "options",
}


class MountSpec(BaseModel):
    """One extra mount for the container, as in the OCI runtime spec."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str = "bind"
    source: str = ""
    destination: str
    options: tuple[str, ...] = ()

    def to_oci(self) -> dict[str, Any]:
        """The mount as an OCI runtime spec ``mounts`` item."""
        return {
            "destination": self.destination,
            "type": self.type,
            "source": self.source,
            "options": list(self.options),
        }


class HostEntry(BaseModel):
    """One ``--add-hosts`` entry: a host name and the address it resolves to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str
    ip: str


def parse_json_array(text: str, *, flag: str = "--entrypoint") -> list[str]:
    """Parse a JSON array of strings such as ``'["/bin/sh","-c"]'``; WorkloadError if not one."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise WorkloadError(f"{flag}: cannot parse {text!r} as a JSON array: {err.msg}") from None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise WorkloadError(f"{flag}: {text!r} must be a JSON array of strings")
    return value


def parse_mount(spec: str) -> MountSpec:
    """Parse ``type=bind,src=/x,dst=/y,options=rbind:ro`` (containerd ``ctr --mount``).

    Keys: ``type``, ``source``/``src``, ``destination``/``dst``, ``options`` (``:``
    separated). Any other key, a field without exactly one ``=``, or a missing
    destination is a WorkloadError.
    """
    fields: dict[str, Any] = {}
    for field in spec.split(","):
        parts = field.split("=")
        if len(parts) != 2:
            raise WorkloadError(f"--mount {spec!r}: field {field!r} must be key=value")
        key, value = parts[0].strip(), parts[1]
        if key not in _MOUNT_KEYS:
            raise WorkloadError(f"--mount {spec!r}: unknown key {key!r}")
        name = _MOUNT_KEYS[key]
        fields[name] = tuple(o for o in value.split(":") if o) if name == "options" else value
    if not fields.get("destination"):
        raise WorkloadError(f"--mount {spec!r}: destination (dst=) is required")
    if not str(fields["destination"]).startswith("/"):
        raise WorkloadError(f"--mount {spec!r}: destination must be an absolute path")
    return MountSpec(**fields)


def _parse_host(item: str) -> HostEntry:
    host, sep, ip = item.partition(":")
    if not sep or not host or not ip:
        raise WorkloadError(f'cannot parse {item!r} as extra host; must be "host:IP"')
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise WorkloadError(f"--add-hosts {item!r}: {ip!r} is not an IP address") from None
    return HostEntry(host=host, ip=ip)


def parse_add_hosts(text: str) -> list[HostEntry]:
    """Parse ``host:IP,host2:IP2`` (split at the first ``:``, so IPv6 addresses work)."""
    return [_parse_host(item) for item in parse_csv(text)]


def parse_csv(text: str) -> list[str]:
    """Split a comma-separated flag value; blanks around items and empty items are dropped."""
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_env_file(text: str, *, source: str = "--env-file") -> list[str]:
    """``KEY=value`` lines of an env file (blank lines and ``#`` comments skipped).

    A line without ``=`` is a WorkloadError (containerd's ``WithEnvFile`` behaves alike).
    """
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line or line.startswith("="):
            raise WorkloadError(f"{source}: line {number}: {raw!r} is not KEY=value")
        entries.append(line)
    return entries


def _str_list(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        return parse_csv(value)
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return list(value)
    raise WorkloadError(f"{what}: expected a comma-separated string or a list of strings")


class WorkloadOptions(BaseModel):
    """How to run the image while profiling it (flags of ``optimize``; YAML ``workload:``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    entrypoint: list[str] | None = None
    """Replaces the image Entrypoint (the image Cmd is still appended unless ``args``)."""
    args: list[str] | None = None
    """Replaces the image Cmd."""
    env: list[str] = Field(default_factory=list)
    """``KEY=value`` items, added to the image env or replacing the same key."""
    env_file: Path | None = None
    """File of ``KEY=value`` lines applied after ``env``."""
    user: str | None = None
    """``name``, ``uid``, ``user:group`` or ``uid:gid``; resolved from the image files."""
    cwd: str | None = None
    """Working directory; default the image WorkingDir, else ``/``."""
    period: float = DEFAULT_PERIOD
    """Seconds to profile; a value <= 0 means the default (10)."""
    stop_grace_period: float = 5.0
    """Seconds between the stop signal and SIGKILL when the period ends."""
    wait_on_signal: bool = False
    """Ignore the period: run until the workload exits or the run is cancelled (Ctrl-C)."""
    wait_on_line: str | None = None
    """Stop the workload as soon as a line of its stdout contains this text."""
    terminal: bool = False
    """``-t``: give the workload a terminal (needs ``stdin``); stdout and stderr both on it."""
    stdin: bool = False
    """``-i``: connect this process's stdin to the workload."""
    mounts: list[MountSpec] = Field(default_factory=list)
    """Extra mounts appended to the default ones."""
    cni: bool = False
    """Attach the workload to the first CNI network of ``cni_plugin_conf_dir``."""
    cni_plugin_conf_dir: Path = DEFAULT_CNI_CONF_DIR
    cni_plugin_dir: list[Path] = Field(default_factory=lambda: list(DEFAULT_CNI_PLUGIN_DIRS))
    """Directories searched, in order, for CNI plugin binaries."""
    net_host: bool = False
    """Use the host network namespace and the host's /etc/hosts and /etc/resolv.conf."""
    add_hosts: list[HostEntry] = Field(default_factory=list)
    dns_nameservers: list[str] = Field(default_factory=lambda: ["8.8.8.8"])
    dns_search_domains: list[str] = Field(default_factory=list)
    dns_options: list[str] = Field(default_factory=list)
    accept_failed_workload: bool = False
    """Keep the profile of a workload that failed to start or exited non-zero."""

    @field_validator("entrypoint", "args", mode="before")
    @classmethod
    def _json_array(cls, value: Any, info: Any) -> Any:
        flag = "--" + str(info.field_name)
        if isinstance(value, str):
            return parse_json_array(value, flag=flag)
        if value is not None and (
            not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value)
        ):
            raise WorkloadError(f"{flag}: expected a JSON array of strings")
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, value: Any) -> Any:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, Sequence) or not all(isinstance(v, str) for v in items):
            raise WorkloadError("--env: expected KEY=value strings")
        for item in items:
            if "=" not in item or item.startswith("="):
                raise WorkloadError(f"--env {item!r}: must be KEY=value")
        return list(items)

    @field_validator("mounts", mode="before")
    @classmethod
    def _mounts(cls, value: Any) -> Any:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, Sequence):
            raise WorkloadError("--mount: expected mount specs")
        return [parse_mount(item) if isinstance(item, str) else item for item in items]

    @field_validator("add_hosts", mode="before")
    @classmethod
    def _hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_add_hosts(value)
        if not isinstance(value, Sequence):
            raise WorkloadError('--add-hosts: expected "host:IP" entries')
        hosts: list[Any] = []
        for item in value:
            hosts.extend(parse_add_hosts(item) if isinstance(item, str) else [item])
        return hosts

    @field_validator("dns_nameservers", "dns_search_domains", "dns_options", mode="before")
    @classmethod
    def _csv(cls, value: Any, info: Any) -> Any:
        return _str_list(value, "--" + str(info.field_name).replace("_", "-"))

    @field_validator("cni_plugin_dir", mode="before")
    @classmethod
    def _plugin_dirs(cls, value: Any) -> Any:
        if isinstance(value, str | Path):
            return [Path(p) for p in str(value).split(":") if p]
        return value

    @model_validator(mode="after")
    def _terminal(self) -> WorkloadOptions:
        if self.terminal and not self.stdin:
            raise WorkloadError("-t/--terminal requires -i (stdin)")
        if self.terminal and self.wait_on_signal:
            raise WorkloadError("-t/--terminal cannot be combined with --wait-on-signal")
        return self

    @property
    def effective_period(self) -> float:
        """The profiling period in seconds (the default when ``period`` is not positive)."""
        return self.period if self.period > 0 else DEFAULT_PERIOD
