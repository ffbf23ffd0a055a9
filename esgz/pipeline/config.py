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
      no_emulation: false        # profile other platforms only natively (no binfmt_misc)
      workload: {period: 10, entrypoint: [...], ...}
    cache: {enabled: true, dir: ~/.cache/esgz, max_size: 10GiB,
            registry: registry.example/esgz-cache}   # shared conversion cache (optional)
    executor: {broker: redis://redis:6379/0}         # convert on esgz workers (optional)
    concurrency: {fetch: 4, convert: 2, upload: 4, ...}
    registries:
      "localhost:5000": {plain_http: true, insecure: false, ca_file: null}
    images:
      - source: registry.example/app:1
        target: registry.example/app:1-esgz
        reuse: true              # any defaults key may be overridden here
        workload: {args: ["--version"]}
        record_out: app.record.json

Each setting is declared once, as a field with its type, default, range and description:
the image settings in the base of :class:`DefaultsConfig` and :class:`ImageSpec`, the
workload in :class:`~esgz.runtime.workload.WorkloadOptions`, the level ranges in
:mod:`esgz.levels`.
The ``optimize`` / ``convert`` flags are built from these fields (:mod:`esgz.cli.options`)
and the cross-field rules are checked here only, after the defaults are merged.

Validation errors become one :class:`~esgz.errors.ConfigError` naming every problem in
its reader's words (:mod:`esgz.spelling`): for a YAML file the file, the line and the key
path (``pipeline.yaml:12: images[1].target: field required``), for Python data the
Python names (``images[0].format: the zstd:chunked format requires oci=True``), for the
command line the flags.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from esgz.errors import ConfigError, EsgzError
from esgz.levels import DEFAULT_LEVELS, LEVEL_RANGES, LayerFormat
from esgz.oci.platform import parse_platform
from esgz.oci.reference import LayoutReference, RegistryReference, parse_reference
from esgz.pipeline.yamlfile import (
    KeyPath,
    LineMap,
    YamlProblem,
    format_key_path,
    load_yaml_with_lines,
    read_yaml_text,
)
from esgz.runtime.workload import PARTIAL, WorkloadOptions
from esgz.spelling import KEYWORDS, NO_FLAG, YAML, Flag, Vocabulary, render

__all__ = [
    "CacheConfig",
    "ConcurrencyConfig",
    "DefaultsConfig",
    "ExecutorConfig",
    "ImageSpec",
    "PipelineConfig",
    "RegistryHostConfig",
    "ResolvedImage",
    "config_from_data",
    "default_cache_dir",
    "load_config_file",
    "parse_config_text",
]


#: The workload section of a config: the same model the profiler takes.

_LOWEST_LEVEL = min(low for low, _ in LEVEL_RANGES.values())
_HIGHEST_LEVEL = max(high for _, high in LEVEL_RANGES.values())


def _level_help() -> str:
    ranges = ", ".join(f"{fmt} {low}..{high}" for fmt, (low, high) in LEVEL_RANGES.items())
    defaults = ", ".join(f"{level} for {fmt}" for fmt, level in DEFAULT_LEVELS.items())
    return f"Compression level ({ranges}); default: {defaults}."


class _Strict(BaseModel):
    """Immutable model that rejects unknown keys and non-finite numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _ImageSettings(_Strict):
    """The settings of one image's conversion, each declared once with its default.

    ``defaults`` holds them for every image and each image may set any of them again
    (what an image sets is in its ``model_fields_set``). ``Annotated`` :class:`Flag`
    metadata says how the ``optimize`` / ``convert`` flag built from a field is spelled.
    """

    format: Annotated[LayerFormat, NO_FLAG] = Field(
        "estargz",
        description="Layer format: estargz (gzip) or zstdchunked (zstd; requires oci).",
    )
    oci: bool = Field(
        False, description="Convert Docker media types to OCI (keeps the TOC-digest annotations)."
    )
    compression_level: Annotated[int | None, NO_FLAG] = Field(
        None, ge=_LOWEST_LEVEL, le=_HIGHEST_LEVEL, description=_level_help()
    )
    chunk_size: Annotated[int, Flag(("--estargz-chunk-size",))] = Field(
        0, ge=0, description="Chunk size of large files in bytes (0: 4 MiB)."
    )
    reuse: bool = Field(
        False,
        description="Pass layers that are already valid eStargz / zstd:chunked (and were not"
        " accessed by the workload) through without converting them.",
    )
    platforms: Annotated[list[str], Flag(("--platform",), metavar="PLATFORM", multiple=True)] = (
        Field(
            default_factory=list,
            description="Convert the image of this platform (<os>|<arch>|<os>/<arch>[/<variant>]);"
            " repeatable. Default: the host platform.",
        )
    )
    all_platforms: Annotated[bool, Flag(("--all-platforms", "--all-platform"))] = Field(
        False,
        description="Convert the images of all platforms (optimize profiles each one that can"
        " run here: natively, or under a binfmt_misc emulator).",
    )
    plain_http: bool = Field(
        False,
        description="Allow plain-HTTP registries; name them with an http:// prefix"
        " (http://host:5000/repo:tag).",
    )
    no_optimize: bool = Field(
        False, description="Convert without running the workload (no prioritized files)."
    )
    no_emulation: bool = Field(
        False,
        description="Profile only the host platform; other platforms get no prioritized"
        " files, even where a binfmt_misc emulator could run them.",
    )
    accept_failed_workload: Annotated[bool, NO_FLAG] = Field(
        False,
        description=f"{WorkloadOptions.model_fields['accept_failed_workload'].description}"
        " (also a workload key).",
    )

    @field_validator("platforms")
    @classmethod
    def _check_platforms(cls, value: list[str]) -> list[str]:
        for spec in value:
            try:
                parse_platform(spec)
            except EsgzError as exc:
                raise ValueError(exc.message) from None
        return value


class DefaultsConfig(_ImageSettings):
    """Settings applied to every image unless the image sets them too."""

    workload: WorkloadOptions = Field(
        default_factory=WorkloadOptions, description="How to run the workload that is profiled."
    )


class ImageSpec(_ImageSettings):
    """One image to convert: where from, where to, and the settings it sets itself."""

    source: Annotated[str, NO_FLAG] = Field(description="Source reference (registry or local://).")
    target: Annotated[str, NO_FLAG] = Field(description="Target reference (registry or local://).")
    workload: WorkloadOptions | None = Field(
        None, description="Workload keys of this image (each replaces the one of defaults)."
    )
    record_out: Annotated[Path | None, Flag(path="file")] = Field(
        None, description="Write the workload's file accesses to this record file (JSON lines)."
    )
    record_in: Annotated[
        Path | None,
        Flag(("--record-in", "--estargz-record-in", "--zstdchunked-record-in"), path="file"),
    ] = Field(
        None,
        description="Record file (JSON lines, from optimize --record-out): its paths are"
        " prioritized in every layer that has them.",
    )
    prefetch_list: Annotated[Path | None, Flag(path="file")] = Field(
        None,
        description="File of paths and globs to prioritize, each in the layer that provides it"
        " (instead of running the workload).",
    )


class CacheConfig(_Strict):
    """The persistent blob and conversion cache."""

    enabled: bool = True
    dir: Path | None = Field(None, description="default: $XDG_CACHE_HOME/esgz")
    max_size: ByteSize = Field(ByteSize(10 << 30), description="evict beyond this size")
    registry: str | None = Field(
        None,
        description="Conversion cache in a registry repository, HOST[:PORT]/REPO"
        " (http://HOST[:PORT]/REPO for plain HTTP): looked up before converting a layer,"
        " filled after; shared by every machine that names it.",
    )

    @field_validator("registry")
    @classmethod
    def _check_registry(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ref = parse_reference(value)
            except EsgzError as exc:
                raise ValueError(exc.message) from None
            tagged = "@" in value or ":" in value.rsplit("/", 1)[-1]
            if not isinstance(ref, RegistryReference) or tagged:
                raise ValueError(
                    f"{value!r} is not a registry repository (HOST[:PORT]/REPO, no tag)"
                )
        return value


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


class ExecutorConfig(_Strict):
    """Where the images are converted: in this process, or by ``esgz worker`` processes."""

    broker: str | None = Field(
        None,
        description="Celery broker URL (redis://HOST:PORT/DB): send each image to the"
        " esgz workers listening there instead of converting in this process.",
    )
    queue: str = Field("esgz", min_length=1, description="the Celery queue of the workers")
    visibility_timeout: int = Field(
        300,
        ge=10,
        description="seconds before Redis redelivers a job whose worker died (late acks)",
    )

    @field_validator("broker")
    @classmethod
    def _check_broker(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://")):
            raise ValueError(f"{value!r} is not a Redis URL (redis://HOST:PORT/DB)")
        return value


class PipelineConfig(_Strict):
    """A whole pipeline: defaults, cache, concurrency, registries and the images."""

    version: Literal[1] = 1
    defaults: DefaultsConfig = Field(default_factory=DefaultsConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    concurrency: ConcurrencyConfig = Field(default_factory=ConcurrencyConfig)
    registries: dict[str, RegistryHostConfig] = Field(default_factory=dict)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
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
    """The effective settings of one image: defaults with its own settings applied."""

    index: int
    source: str
    target: str
    source_ref: RegistryReference | LayoutReference
    target_ref: RegistryReference | LayoutReference
    format: LayerFormat
    oci: bool
    compression_level: int
    chunk_size: int
    reuse: bool
    platforms: tuple[str, ...]
    all_platforms: bool
    no_optimize: bool
    no_emulation: bool
    workload: WorkloadOptions
    record_out: Path | None
    record_in: Path | None
    prefetch_list: Path | None

    @property
    def accept_failed_workload(self) -> bool:
        """Whether the profile of a failed workload is kept."""
        return self.workload.accept_failed_workload

    def workload_options(self) -> WorkloadOptions:
        """The profiler's options for this image's workload."""
        return self.workload

    @property
    def needs_workload(self) -> bool:
        """Whether the image is optimized by running its workload."""
        return not self.no_optimize and self.prefetch_list is None and self.record_in is None


def _pick(image: ImageSpec, defaults: DefaultsConfig, name: str) -> Any:
    return getattr(image if name in image.model_fields_set else defaults, name)


def _merged_workload(config: PipelineConfig, image: ImageSpec) -> WorkloadOptions:
    workload = config.defaults.workload
    update: dict[str, Any] = {}
    if "accept_failed_workload" in config.defaults.model_fields_set:
        update["accept_failed_workload"] = config.defaults.accept_failed_workload
    if image.workload is not None:
        update |= {name: getattr(image.workload, name) for name in image.workload.model_fields_set}
    if "accept_failed_workload" in image.model_fields_set:
        update["accept_failed_workload"] = image.accept_failed_workload
    return workload.model_copy(update=update) if update else workload


def _resolve(config: PipelineConfig, index: int, image: ImageSpec) -> ResolvedImage:
    defaults = config.defaults
    fmt: LayerFormat = _pick(image, defaults, "format")
    level = _pick(image, defaults, "compression_level")
    return ResolvedImage(
        index=index,
        source=image.source,
        target=image.target,
        source_ref=parse_reference(image.source),
        target_ref=parse_reference(image.target),
        format=fmt,
        oci=_pick(image, defaults, "oci"),
        compression_level=DEFAULT_LEVELS[fmt] if level is None else level,
        chunk_size=_pick(image, defaults, "chunk_size"),
        reuse=_pick(image, defaults, "reuse"),
        platforms=tuple(_pick(image, defaults, "platforms")),
        all_platforms=_pick(image, defaults, "all_platforms"),
        no_optimize=_pick(image, defaults, "no_optimize"),
        no_emulation=_pick(image, defaults, "no_emulation"),
        workload=_merged_workload(config, image),
        record_out=image.record_out,
        record_in=image.record_in,
        prefetch_list=image.prefetch_list,
    )


# --------------------------------------------------------------------------- checks


@dataclass(frozen=True, slots=True)
class _Issue:
    """A problem at a key path; ``message`` may name settings as ``{name=value}``."""

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
        return [_Issue(("images", index, key), _literal(exc.message))]
    if isinstance(ref, RegistryReference) and ref.plain_http:
        host_allows = config.registry_options(ref.registry).plain_http
        if not (plain_http_allowed or host_allows):
            bare = _literal(text[len("http://") :])
            return [
                _Issue(
                    ("images", index, key),
                    f'{{plain_http=true}} is needed to connect to "{bare}" using HTTP',
                )
            ]
    return []


def _literal(text: str) -> str:
    """``text`` as a part of a rule message (its braces are not placeholders)."""
    return text.replace("{", "{{").replace("}", "}}")


def _rule_issues(config: PipelineConfig, index: int, resolved: ResolvedImage) -> list[_Issue]:
    issues: list[_Issue] = []
    if resolved.format == "zstdchunked" and not resolved.oci:
        issues.append(
            _Issue(
                _setting_path(config, index, "format"),
                "the zstd:chunked format requires {oci=true}",
            )
        )
    low, high = LEVEL_RANGES[resolved.format]
    if not low <= resolved.compression_level <= high:
        issues.append(
            _Issue(
                _setting_path(config, index, "compression_level"),
                f"{resolved.compression_level} is out of range for {resolved.format}"
                f" ({low}..{high})",
            )
        )
    if resolved.record_out is not None and resolved.no_optimize:
        issues.append(
            _Issue(
                ("images", index, "record_out"),
                "needs the workload to run; it cannot be used with {no_optimize=true}",
            )
        )
    if resolved.prefetch_list is not None and resolved.no_optimize:
        issues.append(
            _Issue(
                ("images", index, "prefetch_list"),
                "cannot be used with {no_optimize=true}",
            )
        )
    if resolved.prefetch_list is not None and resolved.record_in is not None:
        issues.append(_Issue(("images", index, "prefetch_list"), "cannot be used with {record_in}"))
    for name, template in resolved.workload.rule_violations():
        issues.append(_Issue(_workload_path(config, index, name), template))
    return issues


def _semantic_issues(config: PipelineConfig) -> list[_Issue]:
    issues: list[_Issue] = []
    for index, image in enumerate(config.images):
        plain_http = bool(_pick(image, config.defaults, "plain_http"))
        ref_issues = _check_reference(config, index, "source", plain_http)
        ref_issues += _check_reference(config, index, "target", plain_http)
        issues += ref_issues
        if not ref_issues:
            issues += _rule_issues(config, index, _resolve(config, index, image))
    return issues


# --------------------------------------------------------------------------- loading

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
        issues.append(_Issue(tuple(item["loc"]), _literal(message)))
    return issues


def _raise_issues(
    issues: Sequence[_Issue], source: str, lines: LineMap | None, vocabulary: Vocabulary
) -> None:
    parts = []
    for issue in issues:
        where = source
        line = lines.line_of(issue.path) if lines is not None else None
        if line is not None:
            where += f":{line}"
        name = vocabulary.label(issue.path)
        if name is None:
            name = format_key_path(issue.path)
        prefix = ": ".join(part for part in (where, name) if part)
        message = render(issue.message, vocabulary)
        parts.append(f"{prefix}: {message}" if prefix else message)
    raise ConfigError("; ".join(parts))


def config_from_data(
    data: Any,
    *,
    source: str = "config",
    lines: LineMap | None = None,
    vocabulary: Vocabulary | None = None,
) -> PipelineConfig:
    """Validate plain data (as loaded from YAML, or built in Python) into a
    :class:`PipelineConfig`.

    ``source`` names where the data came from (a file name) and ``lines`` maps key
    paths to its lines. ``vocabulary`` spells the settings in messages (default: YAML
    keys when ``lines`` are given, else Python names, see :mod:`esgz.spelling`; the CLI
    passes its flags). Raises :class:`ConfigError` listing every problem on one line.
    """
    if vocabulary is None:
        vocabulary = YAML if lines is not None else KEYWORDS
    if not isinstance(data, Mapping):
        where = f"{source}:1" if lines is not None else source
        raise ConfigError(f"{where}: a pipeline config must be a mapping")
    try:
        config = PipelineConfig.model_validate(data, context=dict(PARTIAL))
    except ValidationError as exc:
        _raise_issues(_pydantic_issues(exc), source, lines, vocabulary)
        raise AssertionError("unreachable") from exc
    issues = _semantic_issues(config)
    if issues:
        _raise_issues(issues, source, lines, vocabulary)
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
        text = await anyio.to_thread.run_sync(read_yaml_text, file)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read pipeline config {str(path)!r}: {exc}") from None
    return parse_config_text(text, source=str(path))
