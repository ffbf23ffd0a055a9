"""Platforms (``os/arch/variant``), parsing with containerd's normalisation, and matchers.

Parsing follows containerd's ``platforms.Parse`` for ``<os>|<arch>|<os>/<arch>[/<variant>]``:

* components must match ``[A-Za-z0-9_-]+``; wildcards are refused;
* names are lower-cased; ``macos`` → ``darwin``; ``x86_64``/``x86-64`` → ``amd64`` (variant
  ``v1`` dropped); ``aarch64`` → ``arm64`` (variant ``8``/``v8`` dropped: it is the
  default); ``i386`` → ``386``; ``armhf`` → ``arm/v7``; ``armel`` → ``arm/v6``;
  ``arm`` with variant ``""``/``7`` → ``v7``, ``5``/``6``/``8`` → ``v5``/``v6``/``v8``;
* a single component that is a known OS gets the host architecture; otherwise it must be
  a known architecture and gets the host OS;
* ``arm/v7`` parsed from a one- or two-component specifier has its variant left empty
  (containerd's quirk; matching normalises it back to ``v7``); a three-component
  ``os/arm64`` gets ``v8``.

Matching (containerd's ``Matcher``): both sides normalised, then ``os``, ``architecture``
and ``variant`` must be equal. :func:`default_strict` matches the host platform only
(containerd ``DefaultStrict``); :class:`OrderedMatcher` matches any of a list, ranked by
list position (``--platform a --platform b``); :data:`ALL_PLATFORMS` matches everything
(``--all-platforms``). :func:`select_manifests` keeps, in index order, the index entries
without a platform and those whose platform matches, as containerd's converter does.
"""

from __future__ import annotations

import platform as _host
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from esgz.errors import ConfigError, ImageError

if TYPE_CHECKING:
    from esgz.oci.manifest import Descriptor, Index

__all__ = [
    "ALL_PLATFORMS",
    "AllPlatforms",
    "OrderedMatcher",
    "Platform",
    "PlatformMatcher",
    "default_strict",
    "host_platform",
    "normalize",
    "parse_platform",
    "parse_platforms",
    "select_manifests",
]

KNOWN_OS = frozenset(
    [
        "aix",
        "android",
        "darwin",
        "dragonfly",
        "freebsd",
        "hurd",
        "illumos",
        "ios",
        "js",
        "linux",
        "nacl",
        "netbsd",
        "openbsd",
        "plan9",
        "solaris",
        "windows",
        "zos",
    ]
)
KNOWN_ARCH = frozenset(
    [
        "386",
        "amd64",
        "amd64p32",
        "arm",
        "armbe",
        "arm64",
        "arm64be",
        "ppc64",
        "ppc64le",
        "loong64",
        "mips",
        "mipsle",
        "mips64",
        "mips64le",
        "mips64p32",
        "mips64p32le",
        "ppc",
        "riscv",
        "riscv64",
        "s390",
        "s390x",
        "sparc",
        "sparc64",
        "wasm",
    ]
)
_COMPONENT_RE = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True, slots=True)
class Platform:
    """An OCI platform. ``extra`` keeps unknown JSON fields (not compared)."""

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __str__(self) -> str:
        return "/".join(part for part in (self.os, self.architecture, self.variant) if part)

    @classmethod
    def from_json(cls, obj: object) -> Platform:
        """Read an OCI ``platform`` object; ImageError if it is not one."""
        if not isinstance(obj, dict):
            raise ImageError(f"platform must be a JSON object, got {type(obj).__name__}")
        known = {"architecture", "os", "os.version", "os.features", "variant"}
        values = {key: obj.get(key, "") for key in ("architecture", "os", "os.version", "variant")}
        for key, value in values.items():
            if not isinstance(value, str):
                raise ImageError(f"platform field {key!r} must be a string")
        features = obj.get("os.features") or []
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise ImageError("platform field 'os.features' must be a list of strings")
        return cls(
            os=values["os"],
            architecture=values["architecture"],
            variant=values["variant"],
            os_version=values["os.version"],
            os_features=tuple(features),
            extra={key: value for key, value in obj.items() if key not in known},
        )

    def to_json(self) -> dict[str, Any]:
        """The OCI JSON object, keys in the image-spec struct order, empty fields omitted."""
        obj: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            obj["os.version"] = self.os_version
        if self.os_features:
            obj["os.features"] = list(self.os_features)
        if self.variant:
            obj["variant"] = self.variant
        for key, value in self.extra.items():
            obj.setdefault(key, value)
        return obj


def _normalize_os(os_name: str) -> str:
    os_name = os_name.lower() if os_name else host_platform().os
    return "darwin" if os_name == "macos" else os_name


def _normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    arch, variant = arch.lower(), variant.lower()
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        return "arm64", "" if variant in ("8", "v8") else variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            return "arm", "v7"
        if variant in ("5", "6", "8"):
            return "arm", "v" + variant
    return arch, variant


def normalize(platform: Platform) -> Platform:
    """``platform`` with os, architecture and variant in canonical form."""
    arch, variant = _normalize_arch(platform.architecture, platform.variant)
    return Platform(
        os=_normalize_os(platform.os),
        architecture=arch,
        variant=variant,
        os_version=platform.os_version,
        os_features=platform.os_features,
        extra=platform.extra,
    )


def host_platform() -> Platform:
    """The platform esgz runs on, normalised (e.g. ``linux/amd64``, ``linux/arm/v7``)."""
    machine = _host.machine().lower()
    variant = ""
    if machine.startswith("armv") and machine[4:5].isdigit():
        machine, variant = "arm", "v" + machine[4]
    arch, variant = _normalize_arch(machine, variant)
    return Platform(os=_host.system().lower() or "linux", architecture=arch, variant=variant)


def parse_platform(specifier: str) -> Platform:
    """Parse ``<os>|<arch>|<os>/<arch>[/<variant>]``; ConfigError naming the bad part."""
    if "*" in specifier:
        raise ConfigError(f"invalid platform {specifier!r}: wildcards are not supported")
    parts = specifier.split("/")
    for part in parts:
        if not _COMPONENT_RE.match(part):
            raise ConfigError(
                f"invalid platform {specifier!r}: component {part!r} must match [A-Za-z0-9_-]+"
            )
    host = host_platform()
    if len(parts) == 1:
        os_name = _normalize_os(parts[0])
        if os_name in KNOWN_OS:
            variant = host.variant if host.architecture == "arm" and host.variant != "v7" else ""
            return Platform(os=os_name, architecture=host.architecture, variant=variant)
        arch, variant = _normalize_arch(parts[0], "")
        if arch == "arm" and variant == "v7":
            variant = ""
        if arch in KNOWN_ARCH:
            return Platform(os=host.os, architecture=arch, variant=variant)
        raise ConfigError(
            f"invalid platform {specifier!r}: unknown operating system or architecture"
        )
    if len(parts) == 2:
        arch, variant = _normalize_arch(parts[1], "")
        if arch == "arm" and variant == "v7":
            variant = ""
        return Platform(os=_normalize_os(parts[0]), architecture=arch, variant=variant)
    if len(parts) == 3:
        arch, variant = _normalize_arch(parts[1], parts[2])
        if arch == "arm64" and not variant:
            variant = "v8"
        return Platform(os=_normalize_os(parts[0]), architecture=arch, variant=variant)
    raise ConfigError(f"invalid platform {specifier!r}: expected <os>/<arch>[/<variant>]")


def parse_platforms(specifiers: Iterable[str]) -> list[Platform]:
    """Parse several specifiers (e.g. repeated ``--platform``), keeping their order."""
    return [parse_platform(spec) for spec in specifiers]


class PlatformMatcher(Protocol):
    """Decides which platforms to take, and which to prefer."""

    def match(self, platform: Platform) -> bool:
        """Whether ``platform`` is wanted."""
        ...

    def rank(self, platform: Platform) -> int:
        """Preference order: lower is preferred; only meaningful for matching platforms."""
        ...


def _same(wanted: Platform, candidate: Platform) -> bool:
    candidate = normalize(candidate)
    return (wanted.os, wanted.architecture, wanted.variant) == (
        candidate.os,
        candidate.architecture,
        candidate.variant,
    )


@dataclass(frozen=True, slots=True)
class OrderedMatcher:
    """Matches any of ``platforms`` (normalised), preferring earlier ones."""

    platforms: tuple[Platform, ...]

    def __init__(self, platforms: Iterable[Platform]) -> None:
        object.__setattr__(self, "platforms", tuple(normalize(p) for p in platforms))

    def match(self, platform: Platform) -> bool:
        """Whether ``platform`` equals one of the wanted platforms after normalisation."""
        return any(_same(wanted, platform) for wanted in self.platforms)

    def rank(self, platform: Platform) -> int:
        """Position of the first wanted platform that matches (len(platforms) if none)."""
        for position, wanted in enumerate(self.platforms):
            if _same(wanted, platform):
                return position
        return len(self.platforms)


class AllPlatforms:
    """Matches every platform, with no preference (``--all-platforms``)."""

    def match(self, platform: Platform) -> bool:
        """Always true."""
        return True

    def rank(self, platform: Platform) -> int:
        """Always 0."""
        return 0

    def __repr__(self) -> str:
        return "AllPlatforms()"


ALL_PLATFORMS = AllPlatforms()


def default_strict() -> OrderedMatcher:
    """The host platform only, no compatible sub-platforms (containerd ``DefaultStrict``)."""
    return OrderedMatcher([host_platform()])


def select_manifests(index: Index, matcher: PlatformMatcher) -> list[Descriptor]:
    """Entries of ``index`` without a platform or whose platform matches, in index order."""
    return select_descriptors(index.manifests, matcher)


def select_descriptors(
    descriptors: Sequence[Descriptor], matcher: PlatformMatcher
) -> list[Descriptor]:
    """Like :func:`select_manifests`, for a plain sequence of descriptors."""
    return [d for d in descriptors if d.platform is None or matcher.match(d.platform)]
