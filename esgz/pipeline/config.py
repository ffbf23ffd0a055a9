"""The pipeline config: one typed model for YAML files, the CLI and the embedding API.

A pipeline converts a list of images. Settings under ``defaults`` apply to every image and
each image may override them; keys are snake_case mirrors of the ``esgz optimize`` flags
(``--dns-nameservers`` ↔ ``dns_nameservers``)::

    defaults:
      format: estargz            # or zstdchunked (needs oci: true)
      oci: false
      compression_level: null    # null: 9 for estargz (gzip), 3 for zstdchunked
      chunk_size: 0              # 0: 4 MiB
      reuse: false
      platforms: []              # empty: the host platform
      all_platforms: false
      plain_http: false          # allow http:// references (as --plain-http)
      no_optimize: false
      workload: {period: 10, entrypoint: [...], ...}
    cache: {enabled: true, dir: ~/.cache/esgz, max_size: 10GiB}
    concurrency: {fetch: 4, convert: 2, upload: 4, ...}
    registries:
      "localhost:5000": {plain_http: true, insecure: false, ca_file: null}
    images:
      - source: registry.example/app:1
        target: registry.example/app:1-esgz
        reuse: true              # any defaults key may be overridden here
        workload: {args: ["--version"]}
        record_out: app.record.json

Validation errors become one :class:`~esgz.errors.ConfigError` whose message names the
file, the line and the key path of every problem, e.g.
``pipeline.yaml:12: images[1].target: field required``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from esgz.errors import ConfigError, EsgzError, WorkloadError
from esgz.oci.platform import parse_platform
from esgz.oci.reference import LayoutReference, RegistryReference, parse_reference
from esgz.pipeline.yamlfile import (
    KeyPath,
    LineMap,
    YamlProblem,
    format_key_path,
    load_yaml_with_lines,
)
from esgz.runtime.workload import (
    DEFAULT_CNI_CONF_DIR,
    DEFAULT_PERIOD,
    WorkloadOptions,
    parse_add_hosts,
    parse_csv,
    parse_json_array,
    parse_mount,
)

__all__ = [
    "CacheConfig",
    "ConcurrencyConfig",
    "DefaultsConfig",
    "Format",
    "ImageSpec",
    "PipelineConfig",
    "RegistryHostConfig",
    "ResolvedImage",
    "WorkloadConfig",
    "config_from_data",
    "default_cache_dir",
    "load_config_file",
    "parse_config_text",
]

#: Output layer formats.
Format = Literal["estargz", "zstdchunked"]

#: Compression level used when none is configured.
DEFAULT_COMPRESSION_LEVEL: dict[str, int] = {"estargz": 9, "zstdchunked": 3}
_LEVEL_RANGE: dict[str, tuple[int, int]] = {"estargz": (-2, 9), "zstdchunked": (-7, 22)}


class _Strict(BaseModel):
    """Immutable model that rejects unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _split_csv(value: Any) -> Any:
    """Accept ``"a,b"`` (flag style) as well as ``[a, b]`` (YAML style)."""
    if isinstance(value, str):
        return parse_csv(value)
    return value


def _checked(parse: Callable[[str], Any], text: str) -> None:
    """Run a workload flag parser; its WorkloadError becomes a located config error."""
    try:
        parse(text)
    except WorkloadError as exc:
        raise ValueError(exc.message) from None


class WorkloadConfig(_Strict):
    """How to run the workload that is profiled: the ``optimize`` workload flags.

    Keys mirror the flags (``--dns-nameservers`` ↔ ``dns_nameservers``, ``-i`` ↔
    ``interactive``); list-valued keys also take the flag's comma-separated string and
    ``entrypoint``/``args`` the flag's JSON array string. :meth:`to_options` gives the
    profiler's :class:`~esgz.runtime.workload.WorkloadOptions`.
    """

    period: float = Field(DEFAULT_PERIOD, description="seconds of profiling (--period)")
    terminal: bool = Field(False, description="TTY for the workload (-t/--terminal)")
    interactive: bool = Field(False, description="attach stdin (-i)")
    user: str | None = Field(None, description="user[:group] (--user)")
    cwd: str | None = Field(None, description="working directory (--cwd)")
    entrypoint: list[str] | None = Field(None, description="entrypoint (--entrypoint)")
    args: list[str] | None = Field(None, description="arguments (--args)")
    env: list[str] = Field(default_factory=list, description="KEY=VALUE items (--env)")
    env_file: Path | None = Field(None, description="file of KEY=VALUE lines (--env-file)")
    mount: list[str] = Field(default_factory=list, description="mount specs (--mount)")
    dns_nameservers: list[str] = Field(default_factory=lambda: ["8.8.8.8"])
    dns_search_domains: list[str] = Field(default_factory=list)
    dns_options: list[str] = Field(default_factory=list)
    add_hosts: list[str] = Field(default_factory=list, description="host:IP items")
    cni: bool = False
    cni_plugin_conf_dir: Path = DEFAULT_CNI_CONF_DIR
    cni_plugin_dir: str | None = Field(None, description="default: /opt/cni/bin:/usr/lib/cni")
    net_host: bool = False
    wait_on_signal: bool = False
    wait_on_line: str | None = None
    gpus: str | None = Field(None, description="not supported; any value is an error")

    @field_validator("dns_nameservers", "dns_search_domains", "dns_options", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("add_hosts", mode="before")
    @classmethod
    def _hosts(cls, value: Any) -> Any:
        items = _split_csv(value)
        if isinstance(items, list):
            for item in items:
                if isinstance(item, str):
                    _checked(parse_add_hosts, item)
        return items

    @field_validator("entrypoint", "args", mode="before")
    @classmethod
    def _json(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            try:
                return parse_json_array(value, flag="--" + str(info.field_name))
            except WorkloadError as exc:
                raise ValueError(exc.message) from None
        return value

    @field_validator("mount")
    @classmethod
    def _mounts(cls, value: list[str]) -> list[str]:
        for item in value:
            _checked(parse_mount, item)
        return value

    @field_validator("env")
    @classmethod
    def _check_env(cls, value: list[str]) -> list[str]:
        for item in value:
            if "=" not in item or item.startswith("="):
                raise ValueError(f"invalid environment variable {item!r}: expected KEY=VALUE")
        return value

    @field_validator("gpus")
    @classmethod
    def _reject_gpus(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError("GPU passthrough (--gpus) is not supported by esgz")
        return value

    def to_options(self, *, accept_failed_workload: bool = False) -> WorkloadOptions:
        """The profiler's options for this workload; WorkloadError if it rejects them."""
        values: dict[str, Any] = {
            "entrypoint": self.entrypoint,
            "args": self.args,
            "env": self.env,
            "env_file": self.env_file,
            "user": self.user,
            "cwd": self.cwd,
            "period": self.period,
            "wait_on_signal": self.wait_on_signal,
            "wait_on_line": self.wait_on_line,
            "terminal": self.terminal,
            "stdin": self.interactive,
            "mounts": self.mount,
            "cni": self.cni,
            "cni_plugin_conf_dir": self.cni_plugin_conf_dir,
            "net_host": self.net_host,
            "add_hosts": self.add_hosts,
            "dns_nameservers": self.dns_nameservers,
            "dns_search_domains": self.dns_search_domains,
            "dns_options": self.dns_options,
            "accept_failed_workload": accept_failed_workload,
        }
        if self.cni_plugin_dir is not None:
            values["cni_plugin_dir"] = self.cni_plugin_dir
        try:
            return WorkloadOptions.model_validate(values)
        except ValidationError as exc:
            raise WorkloadError(f"invalid workload: {exc.errors()[0]['msg']}") from None


class _ImageSettings(_Strict):
    """Settings every image has; ``None`` in an image means "as in defaults"."""

    format: Format | None = None
    oci: bool | None = None
    compression_level: int | None = None
    chunk_size: int | None = Field(None, ge=0)
    reuse: bool | None = None
    platforms: list[str] | None = None
    all_platforms: bool | None = None
    plain_http: bool | None = None
    no_optimize: bool | None = None
    accept_failed_workload: bool | None = None

    @field_validator("platforms")
    @classmethod
    def _check_platforms(cls, value: list[str] | None) -> list[str] | None:
        for spec in value or ():
            try:
                parse_platform(spec)
            except EsgzError as exc:
                raise ValueError(exc.message) from None
        return value


class DefaultsConfig(_ImageSettings):
    """Settings applied to every image unless the image overrides them."""

    format: Format = "estargz"
    oci: bool = False
    chunk_size: int = Field(0, ge=0)
    reuse: bool = False
    platforms: list[str] = Field(default_factory=list)
    all_platforms: bool = False
    plain_http: bool = False
    no_optimize: bool = False
    accept_failed_workload: bool = False
    workload: WorkloadConfig = Field(default_factory=WorkloadConfig)


class ImageSpec(_ImageSettings):
    """One image to convert: where from, where to, and its own overrides."""

    source: str = Field(description="source reference (registry or local://)")
    target: str = Field(description="target reference (registry or local://)")
    workload: WorkloadConfig | None = None
    record_out: Path | None = Field(None, description="write the access record here")
    record_in: Path | None = Field(None, description="prioritize the paths of a record file")
    prefetch_list: Path | None = Field(None, description="prioritize the paths listed here")


class CacheConfig(_Strict):
    """The persistent blob and conversion cache."""

    enabled: bool = True
    dir: Path | None = Field(None, description="default: $XDG_CACHE_HOME/esgz")
    max_size: ByteSize = Field(ByteSize(10 << 30), description="evict beyond this size")


def _default_converters() -> int:
    return max(1, os.cpu_count() or 1)


class ConcurrencyConfig(_Strict):
    """Workers per stage and the buffer size of the streams between stages."""

    resolve: int = Field(2, ge=1)
    fetch: int = Field(4, ge=1)
    reuse: int = Field(2, ge=1)
    profile: int = Field(1, ge=1)
    convert: int = Field(default_factory=_default_converters, ge=1)
    upload: int = Field(4, ge=1)
    finalize: int = Field(2, ge=1)
    buffer: int = Field(1, ge=0, description="items buffered between two stages")


class RegistryHostConfig(_Strict):
    """Connection options for one registry host (``host[:port]``)."""

    plain_http: bool = False
    insecure: bool = Field(False, description="skip TLS verification")
    ca_file: Path | None = None


class PipelineConfig(_Strict):
    """A whole pipeline: defaults, cache, concurrency, registries and the images."""

    version: Literal[1] = 1
    defaults: DefaultsConfig = Field(default_factory=DefaultsConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    concurrency: ConcurrencyConfig = Field(default_factory=ConcurrencyConfig)
    registries: dict[str, RegistryHostConfig] = Field(default_factory=dict)
    images: list[ImageSpec] = Field(min_length=1)

    def resolved_images(self) -> list[ResolvedImage]:
        """Every image with the defaults applied."""
        return [_resolve(self, index, image) for index, image in enumerate(self.images)]

    def registry_options(self, host: str) -> RegistryHostConfig:
        """Options for ``host`` (``host[:port]``), or the defaults."""
        return self.registries.get(host, RegistryHostConfig())

    def cache_dir(self) -> Path:
        """Where the cache lives (configured, or the per-user default)."""
        return self.cache.dir if self.cache.dir is not None else default_cache_dir()


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/esgz`` (``~/.cache/esgz``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "esgz"


@dataclass(frozen=True, slots=True)
class ResolvedImage:
    """The effective settings of one image: defaults with its overrides applied."""

    index: int
    source: str
    target: str
    source_ref: RegistryReference | LayoutReference
    target_ref: RegistryReference | LayoutReference
    format: Format
    oci: bool
    compression_level: int
    chunk_size: int
    reuse: bool
    platforms: tuple[str, ...]
    all_platforms: bool
    no_optimize: bool
    accept_failed_workload: bool
    workload: WorkloadConfig
    record_out: Path | None
    record_in: Path | None
    prefetch_list: Path | None

    def workload_options(self) -> WorkloadOptions:
        """The profiler's options for this image's workload."""
        return self.workload.to_options(accept_failed_workload=self.accept_failed_workload)

    @property
    def needs_workload(self) -> bool:
        """Whether the image is optimized by running its workload."""
        return not self.no_optimize and self.prefetch_list is None and self.record_in is None


def _pick(image: ImageSpec, defaults: DefaultsConfig, name: str) -> Any:
    value = getattr(image, name)
    return getattr(defaults, name) if value is None else value


def _merged_workload(defaults: WorkloadConfig, image: WorkloadConfig | None) -> WorkloadConfig:
    if image is None:
        return defaults
    update = {name: getattr(image, name) for name in image.model_fields_set}
    return defaults.model_copy(update=update)


def _resolve(config: PipelineConfig, index: int, image: ImageSpec) -> ResolvedImage:
    defaults = config.defaults
    fmt: Format = _pick(image, defaults, "format")
    level = _pick(image, defaults, "compression_level")
    return ResolvedImage(
        index=index,
        source=image.source,
        target=image.target,
        source_ref=parse_reference(image.source),
        target_ref=parse_reference(image.target),
        format=fmt,
        oci=_pick(image, defaults, "oci"),
        compression_level=DEFAULT_COMPRESSION_LEVEL[fmt] if level is None else level,
        chunk_size=_pick(image, defaults, "chunk_size"),
        reuse=_pick(image, defaults, "reuse"),
        platforms=tuple(_pick(image, defaults, "platforms")),
        all_platforms=_pick(image, defaults, "all_platforms"),
        no_optimize=_pick(image, defaults, "no_optimize"),
        accept_failed_workload=_pick(image, defaults, "accept_failed_workload"),
        workload=_merged_workload(defaults.workload, image.workload),
        record_out=image.record_out,
        record_in=image.record_in,
        prefetch_list=image.prefetch_list,
    )


# --------------------------------------------------------------------------- checks


@dataclass(frozen=True, slots=True)
class _Issue:
    path: KeyPath
    message: str


def _setting_path(config: PipelineConfig, index: int, name: str) -> KeyPath:
    """Where a setting of image ``index`` comes from: the image, or defaults."""
    image = config.images[index]
    if name in image.model_fields_set:
        return ("images", index, name)
    return ("defaults", name)


def _workload_path(config: PipelineConfig, index: int, name: str) -> KeyPath:
    image = config.images[index]
    if image.workload is not None and name in image.workload.model_fields_set:
        return ("images", index, "workload", name)
    return ("defaults", "workload", name)


def _check_reference(
    config: PipelineConfig, index: int, key: str, plain_http_allowed: bool
) -> list[_Issue]:
    text: str = getattr(config.images[index], key)
    try:
        ref = parse_reference(text)
    except EsgzError as exc:
        return [_Issue(("images", index, key), exc.message)]
    if isinstance(ref, RegistryReference) and ref.plain_http:
        host_allows = config.registry_options(ref.registry).plain_http
        if not (plain_http_allowed or host_allows):
            bare = text[len("http://") :]
            return [
                _Issue(
                    ("images", index, key),
                    f'"--plain-http" option must be specified to connect to "{bare}" using HTTP'
                    f" (set plain_http: true, or registries.{ref.registry}.plain_http)",
                )
            ]
    return []


def _semantic_issues(config: PipelineConfig) -> list[_Issue]:
    issues: list[_Issue] = []
    for index, image in enumerate(config.images):
        plain_http = bool(_pick(image, config.defaults, "plain_http"))
        ref_issues = _check_reference(config, index, "source", plain_http)
        ref_issues += _check_reference(config, index, "target", plain_http)
        issues += ref_issues
        if ref_issues:
            continue
        resolved = _resolve(config, index, image)
        if resolved.format == "zstdchunked" and not resolved.oci:
            issues.append(
                _Issue(
                    _setting_path(config, index, "format"),
                    "zstdchunked must be used in conjunction with oci: true"
                    " (option --zstdchunked must be used in conjunction with --oci)",
                )
            )
        low, high = _LEVEL_RANGE[resolved.format]
        if not low <= resolved.compression_level <= high:
            issues.append(
                _Issue(
                    _setting_path(config, index, "compression_level"),
                    f"compression level {resolved.compression_level} is out of range for"
                    f" {resolved.format} ({low}..{high})",
                )
            )
        if resolved.record_out is not None and resolved.no_optimize:
            issues.append(
                _Issue(
                    ("images", index, "record_out"),
                    "record_out needs a workload run and cannot be used with no_optimize",
                )
            )
        if resolved.prefetch_list is not None and resolved.no_optimize:
            issues.append(
                _Issue(
                    ("images", index, "prefetch_list"),
                    "prefetch_list cannot be used with no_optimize",
                )
            )
        if resolved.prefetch_list is not None and resolved.record_in is not None:
            issues.append(
                _Issue(
                    ("images", index, "prefetch_list"),
                    "prefetch_list and record_in cannot be used together",
                )
            )
        workload = resolved.workload
        if resolved.needs_workload:
            try:
                workload.to_options(accept_failed_workload=resolved.accept_failed_workload)
            except WorkloadError as exc:
                issues.append(
                    _Issue(
                        ("images", index, "workload")
                        if image.workload is not None
                        else ("defaults", "workload"),
                        exc.message,
                    )
                )
        if workload.terminal and not workload.interactive:
            issues.append(
                _Issue(
                    _workload_path(config, index, "terminal"),
                    "terminal (-t) requires interactive (-i)",
                )
            )
        if workload.terminal and workload.wait_on_signal:
            issues.append(
                _Issue(
                    _workload_path(config, index, "wait_on_signal"),
                    "wait_on_signal cannot be used with terminal (-t)",
                )
            )
    return issues


# --------------------------------------------------------------------------- loading

#: Turns a key path into the name shown to the user (e.g. a CLI flag).
PathLabeler = Callable[[KeyPath], str]

_MESSAGES = {
    "missing": "field required",
    "extra_forbidden": "unknown key",
}


def _pydantic_issues(error: ValidationError) -> list[_Issue]:
    issues = []
    for item in error.errors(include_url=False):
        message = _MESSAGES.get(item["type"])
        if message is None:
            message = str(item["msg"]).removeprefix("Value error, ")
            if message[1:2].islower():
                message = message[:1].lower() + message[1:]
        issues.append(_Issue(tuple(item["loc"]), message))
    return issues


def _raise_issues(
    issues: Sequence[_Issue], source: str, lines: LineMap | None, label: PathLabeler | None
) -> None:
    parts = []
    for issue in issues:
        where = source
        line = lines.line_of(issue.path) if lines is not None else None
        if line is not None:
            where += f":{line}"
        name = label(issue.path) if label is not None else format_key_path(issue.path)
        prefix = ": ".join(part for part in (where, name) if part)
        parts.append(f"{prefix}: {issue.message}" if prefix else issue.message)
    raise ConfigError("; ".join(parts))


def config_from_data(
    data: Any,
    *,
    source: str = "config",
    lines: LineMap | None = None,
    label: PathLabeler | None = None,
) -> PipelineConfig:
    """Validate plain data (as loaded from YAML) into a :class:`PipelineConfig`.

    ``source`` names where the data came from (a file name) and ``lines`` maps key
    paths to its lines; ``label`` renames key paths in messages (the CLI shows flags).
    Raises :class:`ConfigError` listing every problem.
    """
    if not isinstance(data, Mapping):
        where = f"{source}:1" if lines is not None else source
        raise ConfigError(f"{where}: a pipeline config must be a mapping")
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        _raise_issues(_pydantic_issues(exc), source, lines, label)
        raise AssertionError("unreachable") from exc
    issues = _semantic_issues(config)
    if issues:
        _raise_issues(issues, source, lines, label)
    return config


def parse_config_text(text: str, source: str = "pipeline.yaml") -> PipelineConfig:
    """Parse and validate the YAML ``text`` of a pipeline config named ``source``."""
    try:
        data, lines = load_yaml_with_lines(text)
    except YamlProblem as exc:
        where = f"{source}:{exc.line}" if exc.line is not None else source
        raise ConfigError(f"{where}: {exc.message}") from None
    if data is None:
        raise ConfigError(f"{source}: the pipeline config is empty")
    return config_from_data(data, source=source, lines=lines)


async def load_config_file(path: Path | str) -> PipelineConfig:
    """Read and validate a YAML pipeline config file.

    Relative paths inside the file (cache dir, record and prefetch files) are kept as
    written, i.e. relative to the current directory.
    """
    file = anyio.Path(path)
    try:
        text = await file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read pipeline config {str(path)!r}: {exc}") from None
    return parse_config_text(text, source=str(path))
