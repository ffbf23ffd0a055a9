from __future__ import annotations

import pytest

from esgz.errors import ConfigError
from esgz.oci.manifest import Descriptor, Index
from esgz.oci.platform import (
    ALL_PLATFORMS,
    OrderedMatcher,
    Platform,
    default_strict,
    host_platform,
    normalize,
    parse_platform,
    parse_platforms,
    select_manifests,
)
from tests.oci.gocheck import ask

SPECIFIERS = [
    "linux",
    "windows",
    "darwin",
    "macos",
    "amd64",
    "x86_64",
    "x86-64",
    "arm64",
    "aarch64",
    "arm",
    "armhf",
    "armel",
    "i386",
    "386",
    "s390x",
    "ppc64le",
    "riscv64",
    "LINUX/AMD64",
    "linux/amd64",
    "linux/x86_64",
    "linux/amd64/v1",
    "linux/amd64/v3",
    "linux/arm64",
    "linux/arm64/v8",
    "linux/arm64/8",
    "linux/aarch64",
    "linux/aarch64/v8",
    "linux/arm",
    "linux/arm/v7",
    "linux/arm/7",
    "linux/arm/v6",
    "linux/arm/6",
    "linux/arm/5",
    "linux/arm/8",
    "linux/armhf",
    "linux/armel",
    "linux/i386",
    "linux/386",
    "windows/amd64",
    "freebsd/arm64",
    "linux/mips64le",
    "linux/unknownarch",
    "plan9/386",
    "foo",
    "",
    "linux/",
    "linux/amd64/",
    "linux/*",
    "linux/amd 64",
    "linux/amd64/v2/extra",
    "linux//amd64",
]


@pytest.mark.parametrize("specifier", SPECIFIERS)
def test_parse_matches_containerd(specifier: str) -> None:
    (expected,) = ask([{"op": "parse", "spec": specifier}])
    if "error" in expected:
        with pytest.raises(ConfigError, match="invalid platform"):
            parse_platform(specifier)
        return
    parsed = parse_platform(specifier)
    assert (parsed.os, parsed.architecture, parsed.variant) == (
        expected["os"],
        expected["architecture"],
        expected["variant"],
    )


def test_host_platform_matches_containerd() -> None:
    (expected,) = ask([{"op": "host"}])
    host = host_platform()
    assert (host.os, host.architecture, host.variant) == (
        expected["os"],
        expected["architecture"],
        expected["variant"],
    )


CANDIDATES = [
    Platform("linux", "amd64"),
    Platform("linux", "amd64", "v1"),
    Platform("linux", "amd64", "v3"),
    Platform("linux", "x86_64"),
    Platform("linux", "arm64"),
    Platform("linux", "arm64", "v8"),
    Platform("linux", "aarch64"),
    Platform("linux", "arm"),
    Platform("linux", "arm", "v7"),
    Platform("linux", "arm", "v6"),
    Platform("linux", "386"),
    Platform("windows", "amd64"),
    Platform("Linux", "AMD64"),
    Platform("unknown", "unknown"),
]
MATCH_SPECS = ["linux/amd64", "linux/arm64", "linux/arm64/v8", "linux/arm", "linux/arm/v6", "386"]


@pytest.mark.parametrize("specifier", MATCH_SPECS)
def test_strict_matching_matches_containerd(specifier: str) -> None:
    requests = [
        {
            "op": "match",
            "spec": specifier,
            "candidate": {"os": c.os, "architecture": c.architecture, "variant": c.variant},
        }
        for c in CANDIDATES
    ]
    expected = [answer["match"] for answer in ask(requests)]
    matcher = OrderedMatcher([parse_platform(specifier)])
    assert [matcher.match(c) for c in CANDIDATES] == expected
    assert any(expected)


def test_default_strict_matches_only_the_host() -> None:
    host = host_platform()
    matcher = default_strict()
    assert matcher.match(host)
    assert matcher.match(Platform(host.os.upper(), host.architecture))
    other = "arm64" if host.architecture != "arm64" else "amd64"
    assert not matcher.match(Platform(host.os, other))
    if host.architecture == "amd64":
        assert not matcher.match(Platform("linux", "386"))  # strict: no sub-platforms


def test_ordered_matcher_ranks_by_position() -> None:
    matcher = OrderedMatcher(parse_platforms(["linux/arm64", "linux/amd64"]))
    assert matcher.rank(Platform("linux", "arm64", "v8")) == 0
    assert matcher.rank(Platform("linux", "amd64")) == 1
    assert matcher.rank(Platform("linux", "s390x")) == 2
    assert not matcher.match(Platform("linux", "s390x"))


def test_all_platforms_matches_everything() -> None:
    assert all(ALL_PLATFORMS.match(candidate) for candidate in CANDIDATES)


def _descriptor(number: int, platform: Platform | None) -> Descriptor:
    return Descriptor(
        media_type="application/vnd.oci.image.manifest.v1+json",
        digest="sha256:" + f"{number:x}" * 64,
        size=100 + number,
        platform=platform,
    )


def test_select_manifests_keeps_index_order_and_unplatformed_entries() -> None:
    entries = (
        _descriptor(1, Platform("linux", "arm64", "v8")),
        _descriptor(2, Platform("linux", "amd64")),
        _descriptor(3, None),
        _descriptor(4, Platform("unknown", "unknown")),
        _descriptor(5, Platform("linux", "aarch64")),
    )
    index = Index(media_type="application/vnd.oci.image.index.v1+json", manifests=entries)
    arm = OrderedMatcher([parse_platform("linux/arm64")])
    assert [d.size for d in select_manifests(index, arm)] == [101, 103, 105]
    both = OrderedMatcher(parse_platforms(["linux/amd64", "linux/arm64"]))
    assert [d.size for d in select_manifests(index, both)] == [101, 102, 103, 105]
    assert [d.size for d in select_manifests(index, ALL_PLATFORMS)] == [101, 102, 103, 104, 105]


def test_platform_json_round_trip_keeps_unknown_fields() -> None:
    obj = {
        "architecture": "amd64",
        "os": "windows",
        "os.version": "10.0.17763.1",
        "os.features": ["win32k"],
        "variant": "",
        "features": ["sse4"],
    }
    platform = Platform.from_json(obj)
    assert platform.os_version == "10.0.17763.1"
    assert platform.os_features == ("win32k",)
    assert platform.to_json() == {
        "architecture": "amd64",
        "os": "windows",
        "os.version": "10.0.17763.1",
        "os.features": ["win32k"],
        "features": ["sse4"],
    }
    assert str(platform) == "windows/amd64"
    assert str(normalize(Platform("linux", "aarch64", "8"))) == "linux/arm64"
