from __future__ import annotations

import random
from pathlib import Path

import pytest

from esgz.errors import ImageReferenceError
from esgz.oci.reference import (
    LayoutReference,
    RegistryReference,
    parse_layout_reference,
    parse_reference,
    parse_registry_reference,
)
from tests.oci.gocheck import ask

HEX = "0123456789abcdef" * 4

# Compared with docker/distribution's ParseNormalizedNamed + TagNameOnly (Debian's Go
# sources). Cases where esgz is deliberately stricter or follows the newer grammar are
# tested separately below.
REFERENCES = [
    "ubuntu",
    "ubuntu:22.04",
    "library/ubuntu",
    "docker.io/ubuntu",
    "docker.io/library/ubuntu:latest",
    "index.docker.io/ubuntu",
    "user/app",
    "user/app:v1.2.3",
    "user/sub/app",
    "localhost/x",
    "localhost:5000/x",
    "localhost:5000/x/y:tag",
    "127.0.0.1:5000/a/b:t",
    "registry.example.com/team/app",
    "registry.example.com:443/team/app:1",
    "my-registry.local:5000/a_b/c.d/e-f/g__h:t",
    "ghcr.io/org/img@sha256:" + HEX,
    "ghcr.io/org/img:tag@sha256:" + HEX,
    "ubuntu@sha256:" + HEX,
    "ubuntu:" + "t" * 128,
    "ubuntu:_under.score-dash",
    "a" * 200 + "/b",
    # invalid
    "",
    "Ubuntu",
    "user/App",
    "ubuntu:",
    "ubuntu:" + "t" * 129,
    "ubuntu:-bad",
    "ubuntu:.bad",
    "ubuntu:b@d",
    "ubuntu@sha256:abc",
    "ubuntu@sha256:" + HEX.upper(),
    "ubuntu@md5:" + HEX,
    "ubuntu@",
    "foo//bar",
    "foo/bar/",
    "/foo",
    "foo_/bar",
    "foo/-bar",
    "foo/bar_",
    "foo/bar___baz",
    "foo/bar..baz",
    "-host.com/x",
    "host-.com/x",
    "localhost:port/x",
    "a b",
    "a/b c",
    HEX,
    "a" * 250 + "/bcdef",
]


@pytest.mark.parametrize("text", REFERENCES, ids=lambda text: text[:60] or "<empty>")
def test_registry_reference_matches_distribution(text: str) -> None:
    (expected,) = ask([{"op": "reference", "spec": text}])
    if "error" in expected:
        with pytest.raises(ImageReferenceError):
            parse_registry_reference(text)
        return
    parsed = parse_registry_reference(text)
    assert parsed.registry == expected["domain"]
    assert parsed.repository == expected["path"]
    assert parsed.tag == expected.get("tag")
    assert parsed.digest == expected.get("digest")
    assert not parsed.plain_http


def test_docker_hub_names_and_endpoint() -> None:
    ref = parse_registry_reference("ubuntu")
    assert ref == RegistryReference("docker.io", "library/ubuntu", "latest", None, False)
    assert ref.endpoint == "registry-1.docker.io"
    assert ref.name == "docker.io/library/ubuntu"
    assert str(ref) == "docker.io/library/ubuntu:latest"
    user = parse_registry_reference("user/app")
    assert (user.registry, user.repository, user.endpoint) == (
        "docker.io",
        "user/app",
        "registry-1.docker.io",
    )
    local = parse_registry_reference("localhost:5000/x")
    assert local.endpoint == "localhost:5000"
    assert local.name == "localhost:5000/x"


def test_digest_only_has_no_default_tag_and_object_prefers_digest() -> None:
    ref = parse_registry_reference("example.com/a@sha256:" + HEX)
    assert ref.tag is None
    assert ref.object == "sha256:" + HEX
    both = parse_registry_reference("example.com/a:v1@sha256:" + HEX)
    assert (both.tag, both.digest, both.object) == ("v1", "sha256:" + HEX, "sha256:" + HEX)
    assert parse_registry_reference("example.com/a").object == "latest"


def test_http_prefix_sets_plain_http_and_round_trips() -> None:
    ref = parse_registry_reference("http://registry2:5000/golang:1.15.3-esgz")
    assert ref.plain_http
    assert (ref.registry, ref.repository, ref.tag) == ("registry2:5000", "golang", "1.15.3-esgz")
    assert str(ref) == "http://registry2:5000/golang:1.15.3-esgz"
    assert parse_registry_reference(str(ref)) == ref
    secure = parse_registry_reference("https://registry2:5000/golang")
    assert not secure.plain_http
    assert secure.registry == "registry2:5000"


@pytest.mark.parametrize(
    "text",
    ["ubuntu", "a.io/b/c:d", "http://localhost:5000/x@sha256:" + HEX, "[::1]:5000/x:y"],
)
def test_str_is_canonical_and_reparses(text: str) -> None:
    ref = parse_registry_reference(text)
    assert parse_registry_reference(str(ref)) == ref
    assert parse_reference(str(ref)) == ref


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        (" ubuntu", "whitespace"),
        ("Ubuntu", "lowercase"),
        ("host.io/Team/app", "lowercase"),
        ("ubuntu:-x", "invalid tag"),
        ("ubuntu:" + "t" * 129, "longer than 128"),
        ("ubuntu@sha256:abc", "64 hex"),
        ("ubuntu@sha256:" + HEX.upper(), "lowercase"),
        ("ubuntu@md5:" + HEX, "unsupported algorithm"),
        ("host:99999/x", "out of range"),
        ("host:0/x", "out of range"),
        ("host:12a/x", "port"),
        ("[::1/x", "unclosed"),
        ("ftp://host/x", "scheme"),
        ("http://", "nothing after"),
        ("foo//bar", "empty path component"),
        ("a" * 250 + "/bcdef", "longer than 255"),
        ("a@b@sha256:" + HEX, "'@'"),
        (HEX, "image ID"),
        # Distribution's old parser reads this as a domain-less path; it is a bad host.
        ("ho_st.com/x", "invalid registry host"),
    ],
)
def test_invalid_references_name_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ImageReferenceError) as info:
        parse_reference(text)
    message = str(info.value)
    assert problem in message
    assert "\n" not in message


def test_uppercase_first_component_is_a_registry_host() -> None:
    # The current Distribution grammar: an uppercase first component can only be a host.
    ref = parse_registry_reference("MyRegistry/app")
    assert (ref.registry, ref.repository) == ("MyRegistry", "app")


def test_ipv6_registry() -> None:
    ref = parse_registry_reference("[fe80::1]:5000/app:1")
    assert (ref.registry, ref.endpoint, ref.repository, ref.tag) == (
        "[fe80::1]:5000",
        "[fe80::1]:5000",
        "app",
        "1",
    )


def test_sha512_digest_is_accepted() -> None:
    digest = "sha512:" + "ab" * 64
    assert parse_registry_reference("a.io/b@" + digest).digest == digest


# --- local:// ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("local:///tmp/out", LayoutReference(Path("/tmp/out"), None, None)),
        ("local:///tmp/out/", LayoutReference(Path("/tmp/out"), None, None)),
        ("local:///tmp/out:v1", LayoutReference(Path("/tmp/out"), "v1", None)),
        ("local:///tmp/out:v1.2_x-y", LayoutReference(Path("/tmp/out"), "v1.2_x-y", None)),
        ("local:///a:b/img", LayoutReference(Path("/a:b/img"), None, None)),
        ("local:///a:b/img:t", LayoutReference(Path("/a:b/img"), "t", None)),
        ("local:///a:b/", LayoutReference(Path("/a:b"), None, None)),
        ("local:///x@sha256:" + HEX, LayoutReference(Path("/x"), None, "sha256:" + HEX)),
        ("local:///x:t@sha256:" + HEX, LayoutReference(Path("/x"), "t", "sha256:" + HEX)),
        ("local:///x@y/z", LayoutReference(Path("/x@y/z"), None, None)),
        ("local://relative/dir:t", LayoutReference(Path("relative/dir"), "t", None)),
        ("local://dir", LayoutReference(Path("dir"), None, None)),
    ],
)
def test_layout_references(text: str, expected: LayoutReference) -> None:
    assert parse_reference(text) == expected
    assert parse_layout_reference(text) == expected
    assert parse_reference(str(expected)) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("local://", "missing layout directory"),
        ("local://:tag", "missing layout directory"),
        ("local:///x:", "invalid tag"),
        ("local:///x:-t", "invalid tag"),
        ("local:///x:" + "t" * 129, "invalid tag"),
        ("local:///x@sha256:abc", "64 hex"),
    ],
)
def test_invalid_layout_references(text: str, problem: str) -> None:
    with pytest.raises(ImageReferenceError, match=problem):
        parse_reference(text)


def test_random_references_agree_with_distribution() -> None:
    """Differential check on 3000 seeded random strings built from grammar pieces.

    Known, deliberate differences are excluded: an uppercase first component is a
    registry host (current grammar, which this Debian version predates), and the old
    parser's reading of a bad host such as ``a_b.com/x`` as a domain-less path.
    """
    rng = random.Random(20240101)
    pieces = [*"abz09A._-:/@", "__", "--", "localhost", "docker.io", "5000", "example.com"]
    pieces += ["sha256:" + "ab" * 32, "x" * 10]
    cases = sorted(
        {"".join(rng.choice(pieces) for _ in range(rng.randint(1, 7))) for _ in range(3000)}
    )
    answers = ask([{"op": "reference", "spec": case} for case in cases])
    compared = 0
    for case, answer in zip(cases, answers, strict=True):
        first = case.split("/", 1)[0]
        if "/" in case and first != first.lower():
            continue
        if answer.get("domain") == "":
            continue
        try:
            ref = parse_registry_reference(case)
            ours: tuple[str, str, str | None, str | None] | None = (
                ref.registry,
                ref.repository,
                ref.tag,
                ref.digest,
            )
        except ImageReferenceError:
            ours = None
        theirs = (
            None
            if "error" in answer
            else (answer["domain"], answer["path"], answer.get("tag"), answer.get("digest"))
        )
        assert ours == theirs, case
        compared += 1
    assert compared > 2000
