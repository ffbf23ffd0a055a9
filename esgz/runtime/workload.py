"""The workload to profile: the options model and parsers for the flags' string forms.

:class:`WorkloadOptions` holds everything that decides how the image runs while it is
profiled, with the same meaning (and snake_case names) as ``ctr-remote image optimize``'s
flags: ``--entrypoint``/``--args`` (JSON arrays), ``--env`` (add-or-replace),
``--env-file``, ``--user``, ``--cwd``, ``--period``, ``--wait-on-signal``,
``--wait-on-line``, ``-t``/``-i``, ``--mount`` (containerd ``ctr`` syntax), ``--cni`` with
its directories, ``--net-host``, ``--add-hosts`` and the DNS lists. Each field accepts its
CLI string form as well as the typed value: this one model is the YAML ``workload:``
section, the source of the ``optimize`` flags and the profiler's input.

Malformed input (bad JSON, a mount spec with an unknown key, a host entry without ``:``,
a non-finite period) raises :class:`~esgz.errors.WorkloadError` with a one-line message
naming the field when the model is built, before anything is started. The cross-field
rules (``terminal`` needs ``interactive``, ...) are listed by
:meth:`WorkloadOptions.rule_violations`.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Self, TypeVar

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from esgz.errors import WorkloadError
from esgz.spelling import KEYWORDS, NO_FLAG, Flag, render

__all__ = [
    "DEFAULT_CNI_CONF_DIR",
    "DEFAULT_CNI_PLUGIN_DIRS",
    "DEFAULT_PERIOD",
    "PARTIAL",
    "HostEntry",
    "MountSpec",
    "WorkloadOptions",
    "parse_add_hosts",
    "parse_csv",
    "parse_env_file",
    "parse_json_array",
    "parse_mount",
    "validation_message",
]

_T = TypeVar("_T")

#: Seconds of profiling when ``period`` is not given (or is 0).
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


def parse_json_array(text: str) -> list[str]:
    """Parse a JSON array of strings such as ``'["/bin/sh","-c"]'``; WorkloadError if not one."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise WorkloadError(f"cannot parse {text!r} as a JSON array: {err.msg}") from None
    except RecursionError:
        raise WorkloadError("the JSON array is nested too deeply") from None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise WorkloadError(f"{text!r} must be a JSON array of strings")
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
            raise WorkloadError(f"{spec!r}: field {field!r} must be key=value")
        key, value = parts[0].strip(), parts[1]
        if key not in _MOUNT_KEYS:
            raise WorkloadError(f"{spec!r}: unknown key {key!r}")
        name = _MOUNT_KEYS[key]
        fields[name] = tuple(o for o in value.split(":") if o) if name == "options" else value
    if not fields.get("destination"):
        raise WorkloadError(f"{spec!r}: destination (dst=) is required")
    if not str(fields["destination"]).startswith("/"):
        raise WorkloadError(f"{spec!r}: destination must be an absolute path")
    return MountSpec(**fields)


def _parse_host(item: str) -> HostEntry:
    host, sep, ip = item.partition(":")
    if not sep or not host or not ip:
        raise WorkloadError(f'cannot parse {item!r} as extra host; must be "host:IP"')
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise WorkloadError(f"{item!r}: {ip!r} is not an IP address") from None
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


def _checked(parse: Callable[[str], _T], text: str) -> _T:
    """Run a parser of a flag's string form; its WorkloadError becomes a ValueError (which
    pydantic reports at the field)."""
    try:
        return parse(text)
    except WorkloadError as exc:
        raise ValueError(exc.message) from None


def _str_items(value: Any, what: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, Sequence) or not all(isinstance(v, str) for v in items):
        raise ValueError(f"expected {what}")
    return list(items)


def validation_message(error: ValidationError) -> str:
    """A one-line message naming the Python field of every problem of ``error``."""
    parts = []
    for item in error.errors(include_url=False):
        message = str(item["msg"]).removeprefix("Value error, ")
        if message[1:2].islower():
            message = message[:1].lower() + message[1:]
        if item["type"] == "extra_forbidden":
            message = "unknown setting"
        where = ".".join(str(part) for part in item["loc"])
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


#: Validation context for options that are one layer of a merge (the pipeline config's
#: ``defaults.workload`` or an image's own workload keys): the cross-field rules are left
#: to whoever merges them (:meth:`WorkloadOptions.rule_violations`), and errors stay
#: pydantic's, to be located in the file.
PARTIAL: Mapping[str, bool] = MappingProxyType({"esgz_partial_settings": True})


def _is_partial(info: ValidationInfo) -> bool:
    return isinstance(info.context, Mapping) and bool(info.context.get("esgz_partial_settings"))


class WorkloadOptions(BaseModel):
    """How to run the image while profiling it: the ``optimize`` workload flags, the
    ``workload:`` keys of a pipeline config and the profiler's input, in one model.

    Each field is declared once here — type, default, range, description (the flag's help)
    and its flag spelling — and each list field also takes its flag's string form
    (a comma-separated list, a JSON array, a mount spec). Constructing it with bad values
    raises :class:`~esgz.errors.WorkloadError` naming the field.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    period: Annotated[float, Flag()] = Field(
        DEFAULT_PERIOD,
        ge=0,
        description="Seconds to profile the workload's file accesses (0: the default, 10).",
    )
    stop_grace_period: Annotated[float, NO_FLAG] = Field(
        5.0, ge=0, description="Seconds between the stop signal and SIGKILL when profiling ends."
    )
    terminal: Annotated[bool, Flag(("-t", "--terminal"))] = Field(
        False, description="Give the workload a TTY (requires -i / interactive)."
    )
    interactive: Annotated[bool, Flag(("-i",))] = Field(
        False,
        validation_alias=AliasChoices("interactive", "stdin"),
        description="Attach this process's stdin to the workload.",
    )
    user: str | None = Field(
        None, description="User to run the workload as: name, uid, user:group or uid:gid."
    )
    cwd: str | None = Field(
        None, description="Working directory of the workload (default: the image's, else /)."
    )
    entrypoint: Annotated[list[str] | None, Flag(metavar="JSON")] = Field(
        None,
        description='Entrypoint of the workload as a JSON array, e.g. \'["/bin/sh", "-c"]\''
        " (the image's Cmd is still appended unless args).",
    )
    args: Annotated[list[str] | None, Flag(metavar="JSON")] = Field(
        None, description="Arguments of the entrypoint as a JSON array (replace the image's Cmd)."
    )
    env: Annotated[list[str], Flag(metavar="KEY=VALUE", multiple=True)] = Field(
        default_factory=list,
        description="Environment variable (adds or replaces); repeatable.",
    )
    env_file: Annotated[Path | None, Flag(path="file")] = Field(
        None, description="File of KEY=VALUE lines, applied after env."
    )
    mount: Annotated[list[MountSpec], Flag(metavar="SPEC", multiple=True)] = Field(
        default_factory=list,
        validation_alias=AliasChoices("mount", "mounts"),
        description="Mount into the workload: type=bind,src=/host,dst=/ctr,options=rbind:ro;"
        " repeatable.",
    )
    dns_nameservers: list[str] = Field(
        default_factory=lambda: ["8.8.8.8"],
        description="Comma-separated nameservers for the workload's /etc/resolv.conf.",
    )
    dns_search_domains: list[str] = Field(
        default_factory=list, description="Comma-separated search domains for /etc/resolv.conf."
    )
    dns_options: list[str] = Field(
        default_factory=list, description="Comma-separated options for /etc/resolv.conf."
    )
    add_hosts: list[HostEntry] = Field(
        default_factory=list, description="Comma-separated host:IP entries for /etc/hosts."
    )
    cni: bool = Field(
        False, description="Attach the workload to the first CNI network of cni_plugin_conf_dir."
    )
    cni_plugin_conf_dir: Annotated[
        Path, Flag(("--cni-plugin-conf-dir", "--cni-plugin-config-dir"), path="dir")
    ] = Field(DEFAULT_CNI_CONF_DIR, description="Directory of CNI network configurations.")
    cni_plugin_dir: Annotated[list[Path], Flag(metavar="DIRS", separator=":")] = Field(
        default_factory=lambda: list(DEFAULT_CNI_PLUGIN_DIRS),
        description="Directories of CNI plugin binaries, searched in order (: separated).",
    )
    net_host: bool = Field(
        False, description="Use the host network and its /etc/hosts and /etc/resolv.conf."
    )
    wait_on_signal: bool = Field(
        False, description="Profile until the workload exits or Ctrl-C, ignoring period."
    )
    wait_on_line: Annotated[str | None, Flag(metavar="TEXT")] = Field(
        None, description="Stop profiling once a line of the workload's stdout contains TEXT."
    )
    gpus: Annotated[str | None, Flag(metavar="DEVICES")] = Field(
        None, description="Not supported by esgz (GPU passthrough); any value is an error."
    )
    accept_failed_workload: bool = Field(
        False, description="Keep the profile of a workload that failed or exited non-zero."
    )

    @field_validator("entrypoint", "args", mode="before")
    @classmethod
    def _json_array(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _checked(parse_json_array, value)
        if value is not None:
            return _str_items(value, "a JSON array of strings")
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, value: Any) -> Any:
        items = _str_items(value, "KEY=VALUE strings")
        for item in items:
            if "=" not in item or item.startswith("="):
                raise ValueError(f"{item!r} must be KEY=VALUE")
        return items

    @field_validator("mount", mode="before")
    @classmethod
    def _mounts(cls, value: Any) -> Any:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, Sequence):
            raise ValueError("expected mount specs")
        return [_checked(parse_mount, item) if isinstance(item, str) else item for item in items]

    @field_validator("add_hosts", mode="before")
    @classmethod
    def _hosts(cls, value: Any) -> Any:
        items = parse_csv(value) if isinstance(value, str) else value
        if not isinstance(items, Sequence):
            raise ValueError('expected "host:IP" entries')
        hosts: list[Any] = []
        for item in items:
            hosts.extend(_checked(parse_add_hosts, item) if isinstance(item, str) else [item])
        return hosts

    @field_validator("dns_nameservers", "dns_search_domains", "dns_options", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_csv(value)
        return _str_items(value, "a comma-separated string or a list of strings")

    @field_validator("cni_plugin_dir", mode="before")
    @classmethod
    def _plugin_dirs(cls, value: Any) -> Any:
        if isinstance(value, str | Path):
            return [Path(p) for p in str(value).split(":") if p]
        return value

    @field_validator("cwd")
    @classmethod
    def _absolute_cwd(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"{value!r} must be an absolute path")
        return value

    @field_validator("gpus")
    @classmethod
    def _reject_gpus(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError("GPU passthrough is not supported by esgz")
        return value

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> Self:
        if _is_partial(info):
            return self
        problems = [
            f"{name}: {render(template, KEYWORDS)}" for name, template in self.rule_violations()
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="wrap")
    @classmethod
    def _one_line_errors(
        cls, data: Any, handler: ModelWrapValidatorHandler[Self], info: ValidationInfo
    ) -> Self:
        """Built on its own, bad options are a WorkloadError naming the fields; inside the
        pipeline config, pydantic's errors go on to be located in the file. (Declared
        after the other validators, so that it wraps them all.)"""
        try:
            return handler(data)
        except ValidationError as exc:
            if _is_partial(info):
                raise
            raise WorkloadError(validation_message(exc)) from None

    def rule_violations(self) -> list[tuple[str, str]]:
        """The cross-field rules these options break, as (setting, message template) pairs.

        The templates name other settings as ``{name=value}`` (see :mod:`esgz.spelling`),
        so that each front end spells them as its user wrote them.
        """
        problems = []
        if self.terminal and not self.interactive:
            problems.append(("terminal", "requires {interactive=true}"))
        if self.terminal and self.wait_on_signal:
            problems.append(("wait_on_signal", "cannot be used with {terminal=true}"))
        return problems

    @property
    def stdin(self) -> bool:
        """Whether this process's stdin is connected to the workload (``interactive``)."""
        return self.interactive

    @property
    def mounts(self) -> list[MountSpec]:
        """The extra mounts, appended to the default ones (``mount``)."""
        return self.mount

    @property
    def effective_period(self) -> float:
        """The profiling period in seconds (the default when ``period`` is 0)."""
        return self.period if self.period > 0 else DEFAULT_PERIOD
