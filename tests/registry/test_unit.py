"""Unit tests of parsing, scopes, backoff and odd registry answers (httpx.MockTransport).

Everything here is also exercised against the real registry in the other modules; these
cover answers the real registry never gives (relative Locations, lying digests, broken
token endpoints).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import httpx
import pytest

from esgz.errors import AuthError, RegistryError, VerificationError
from esgz.registry import (
    Credentials,
    RegistryClient,
    RetryPolicy,
    StaticCredentials,
    parse_www_authenticate,
)
from esgz.registry.auth import RegistryAuth, parse_token_response, request_scopes
from esgz.registry.options import registry_for_host
from esgz.registry.retry import parse_retry_after
from esgz.registry.untrusted import finite_number, header_int, json_object, one_line, parse_json
from tests.registry.helpers import ref_for

NO_WAIT = RetryPolicy(max_attempts=3, time_scale=0)
HOST = "reg.test"


def test_parse_distribution_bearer_challenge() -> None:
    header = (
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:a/b:pull,push repository:c:pull"'
    )
    (challenge,) = parse_www_authenticate(header)
    assert challenge.scheme == "bearer"
    assert challenge.realm == "https://auth.example/token"
    assert challenge.service == "registry.example"
    assert challenge.scopes == ["repository:a/b:pull,push", "repository:c:pull"]


def test_parse_several_challenges_escapes_and_bare_values() -> None:
    header = 'Basic realm="say \\"hi\\", please", BEARER realm=https://t.example/x,service=svc'
    basic, bearer = parse_www_authenticate(header)
    assert (basic.scheme, basic.realm) == ("basic", 'say "hi", please')
    assert (bearer.scheme, bearer.realm, bearer.service) == ("bearer", "https://t.example/x", "svc")
    assert parse_www_authenticate("") == []


def test_request_scopes() -> None:
    def scopes(method: str, url: str) -> list[str]:
        return request_scopes(httpx.Request(method, url))

    assert scopes("GET", "https://r/v2/") == []
    assert scopes("HEAD", "https://r/v2/a/b/manifests/latest") == ["repository:a/b:pull"]
    assert scopes("GET", "https://r/v2/a/blobs/sha256:00") == ["repository:a:pull"]
    assert scopes("PUT", "https://r/v2/a/b/c/blobs/uploads/x-y?_state=1") == [
        "repository:a/b/c:pull,push"
    ]
    assert scopes("POST", "https://r/v2/dst/blobs/uploads/?mount=sha256:00&from=src/x") == [
        "repository:dst:pull,push",
        "repository:src/x:pull",
    ]


def test_retry_policy() -> None:
    policy = RetryPolicy(initial_delay=1, max_delay=5, jitter=0.5)
    for attempt, ceiling in ((1, 1), (2, 2), (3, 4), (4, 5), (9, 5)):
        delay = policy.backoff(attempt)
        assert ceiling * 0.5 <= delay <= ceiling
    assert policy.backoff(1, retry_after=3) == 3
    assert RetryPolicy(max_retry_after=2).backoff(1, retry_after=30) == 2
    assert RetryPolicy(time_scale=0).backoff(5, retry_after=30) == 0
    assert parse_retry_after("7") == 7
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0
    assert parse_retry_after("soon") is None


def test_retry_policy_is_spent_by_attempts_or_total_time() -> None:
    policy = RetryPolicy(max_attempts=3, initial_delay=1, jitter=0, max_total=10)
    now = time.monotonic()
    assert policy.next_delay(1, now, None) == 1
    assert policy.next_delay(2, now, None) == 2
    assert policy.next_delay(3, now, None) is None
    assert policy.next_delay(1, now, retry_after=9) == 9
    assert policy.next_delay(1, now, retry_after=11) is None
    assert policy.next_delay(1, now - 9.5, None) is None


Handler = Callable[[httpx.Request], httpx.Response]


def _client(handler: Handler, **kwargs: object) -> RegistryClient:
    credentials = StaticCredentials({HOST: Credentials("u", "pw")})
    return RegistryClient(
        credentials=credentials,
        retry=NO_WAIT,
        transport=httpx.MockTransport(handler),
        **kwargs,  # type: ignore[arg-type]
    )


def _challenge(scope: str = "") -> httpx.Response:
    header = f'Bearer realm="https://auth.test/token",service="svc",scope="{scope}"'
    return httpx.Response(401, headers={"WWW-Authenticate": header})


pytestmark = pytest.mark.anyio


async def test_concurrent_requests_share_one_token() -> None:
    token_requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            token_requests.append(request)
            return httpx.Response(200, json={"access_token": "T1"})
        if request.headers.get("Authorization") != "Bearer T1":
            return _challenge()
        return httpx.Response(200, headers={"Content-Length": "3"})

    async with _client(handler) as client:
        ref = ref_for(HOST, "a/b")
        await client.blob_size(ref, "sha256:" + "0" * 64)
        async with anyio.create_task_group() as group:
            for n in range(10):
                group.start_soon(client.blob_size, ref, f"sha256:{n:064d}")
    assert len(token_requests) == 1
    assert token_requests[0].url.params.get_list("scope") == ["repository:a/b:pull"]
    assert token_requests[0].headers["Authorization"].startswith("Basic ")


async def test_token_always_refused_gives_up() -> None:
    fetched = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal fetched
        if request.url.host == "auth.test":
            fetched += 1
            return httpx.Response(200, json={"token": f"T{fetched}", "expires_in": 300})
        return _challenge()

    async with _client(handler) as client:
        with pytest.raises(AuthError, match="authentication failed for user u"):
            await client.resolve(ref_for(HOST, "a"))
    assert fetched == 2


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (
            503,
            {},
            r"token request to https://auth.test/token failed \(503\) \(gave up after 3 attempts",
        ),
        (400, {}, r"token request to https://auth.test/token failed \(400\)"),
        (200, {"nothing": "here"}, "token response carries no token"),
        (403, {}, r"authentication failed for user u \(403\)"),
    ],
)
async def test_broken_token_endpoint(status: int, body: dict[str, str], message: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            return httpx.Response(status, json=body)
        return _challenge()

    async with _client(handler) as client:
        with pytest.raises(RegistryError, match=message) as caught:
            await client.resolve(ref_for(HOST, "a"))
    assert "\n" not in str(caught.value)


async def test_lying_digest_header_is_caught() -> None:
    body = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            content=body,
            headers={
                "Content-Type": "application/vnd.oci.image.manifest.v1+json",
                "Docker-Content-Digest": "sha256:" + "1" * 64,
            },
        )

    async with _client(handler) as client:
        with pytest.raises(VerificationError, match="manifest digest mismatch"):
            await client.fetch_manifest(ref_for(HOST, "a"))


async def test_relative_locations_and_chunk_ranges(tmp_path: Path) -> None:
    """A registry answering relative ``Location``s and short ``Range``s (it kept less)."""
    data = bytes(range(256)) * 40  # 10240 bytes
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    source = tmp_path / "blob"
    source.write_bytes(data)
    stored = bytearray()
    patches: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "HEAD":
            return httpx.Response(404)
        if request.method == "POST":
            return httpx.Response(202, headers={"Location": "/v2/a/blobs/uploads/u1?s=0"})
        if request.method == "PATCH":
            start = int(request.headers["Content-Range"].split("-")[0])
            assert start == len(stored), (start, len(stored))
            chunk = request.read()
            patches.append(request.headers["Content-Range"])
            # Keep only part of the first chunk, as a registry may.
            stored.extend(chunk[:1000] if len(patches) == 1 else chunk)
            return httpx.Response(
                202,
                headers={
                    "Location": f"u1?s={len(stored)}",
                    "Range": f"0-{len(stored) - 1}",
                },
            )
        if request.method == "PUT":
            assert path == "/v2/a/blobs/uploads/u1"
            assert request.url.params["digest"] == digest
            ok = hashlib.sha256(stored).hexdigest() == digest.split(":")[1]
            return httpx.Response(201 if ok else 400, headers={"Docker-Content-Digest": digest})
        return httpx.Response(500)

    async with _client(handler, monolithic_threshold=0, chunk_size=4096) as client:
        outcome = await client.push_blob(ref_for(HOST, "a"), digest, len(data), source)
    assert outcome == "uploaded"
    assert bytes(stored) == data
    assert patches[:2] == ["0-4095", "1000-5095"]


async def test_manifest_put_with_unconfirmed_blob_is_refused() -> None:
    puts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            return httpx.Response(404)
        puts.append(request.url.path)
        return httpx.Response(201)

    class Desc:
        digest = "sha256:" + "2" * 64
        size = 5

    content = json.dumps({"schemaVersion": 2}).encode()
    async with _client(handler) as client:
        with pytest.raises(RegistryError, match="not pushing manifest"):
            await client.push_manifest(
                ref_for(HOST, "a"),
                content,
                "application/vnd.oci.image.manifest.v1+json",
                references=[Desc()],
            )
    assert puts == []


async def test_docker_hub_names() -> None:
    """``ubuntu`` is fetched from registry-1.docker.io with the credentials of docker.io."""
    from esgz.oci.reference import parse_registry_reference

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if "Authorization" not in request.headers:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="hub"'})
        return httpx.Response(
            200,
            headers={
                "Content-Type": "application/vnd.oci.image.index.v1+json",
                "Docker-Content-Digest": "sha256:" + "3" * 64,
                "Content-Length": "10",
            },
        )

    ref = parse_registry_reference("ubuntu:22.04")
    credentials = StaticCredentials({"docker.io": Credentials("hub", "pw")})
    async with RegistryClient(
        credentials=credentials, retry=NO_WAIT, transport=httpx.MockTransport(handler)
    ) as client:
        info = await client.resolve(ref)
    assert info.digest == "sha256:" + "3" * 64
    assert [str(r.url) for r in seen] == [
        "https://registry-1.docker.io/v2/library/ubuntu/manifests/22.04"
    ] * 2
    assert seen[1].headers["Authorization"] == "Basic aHViOnB3"


async def test_cached_token_refused_later_is_replaced() -> None:
    """A token that worked (cached) and is later refused — expired — is fetched anew."""
    issued: list[str] = []
    valid = {"T1"}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            issued.append(f"T{len(issued) + 1}")
            return httpx.Response(200, json={"token": issued[-1], "expires_in": 3600})
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in valid:
            return _challenge("repository:a:pull")
        return httpx.Response(200, headers={"Content-Length": "3"})

    async with _client(handler) as client:
        ref = ref_for(HOST, "a")
        await client.blob_size(ref, "sha256:" + "4" * 64)
        await client.blob_size(ref, "sha256:" + "5" * 64)
        assert issued == ["T1"]
        valid.clear()
        valid.add("T2")  # T1 expires at the registry
        assert await client.blob_size(ref, "sha256:" + "6" * 64) == 3
    assert issued == ["T1", "T2"]


@pytest.mark.parametrize(
    ("body", "lifetime"),
    [
        (b'{"token": "T", "expires_in": 300}', 300),
        (b'{"token": "T", "expires_in": 1e999}', 60),
        (b'{"token": "T", "expires_in": -5}', 60),
        (b'{"token": "T", "expires_in": 1e300}', 24 * 3600),
        (b'{"token": "T", "expires_in": "300"}', 60),
        (b'{"token": "T", "expires_in": true}', 60),
        (b'{"token": "T", "expires_in": ' + b"9" * 5000 + b"}", 60),
        (b'{"token": "T"}', 60),
    ],
)
def test_token_lifetime_is_clamped(body: bytes, lifetime: float) -> None:
    assert parse_token_response(body, registry="r") == ("T", lifetime)


def test_untrusted_values() -> None:
    assert parse_json(b"[" * 100_000) is None
    assert parse_json("NaN") is None
    assert parse_json(b'{"a": 1e999}') == {"a": float("inf")}
    assert json_object(b"[]") is None
    assert header_int("²") is None
    assert header_int(" 42 ") == 42
    assert header_int("9" * 20) is None
    assert header_int("-1") is None
    assert finite_number(float("nan"), minimum=0, maximum=1) is None
    assert finite_number(5, minimum=0, maximum=1) == 1
    assert one_line("a\nb\x00c\u2028d", 100) == "a b c d"
    assert one_line("x" * 50, 10) == "x" * 9 + "…"
    for odd in ("-1", "1e999", "NaN", "²", "9" * 40, "Mon, 01 Jan 99999 00:00:00 GMT", "x" * 100):
        assert parse_retry_after(odd) is None, odd
    assert RetryPolicy(max_retry_after=2).backoff(1, parse_retry_after("999999999")) == 2


def test_registry_names_follow_from_the_host() -> None:
    assert registry_for_host("registry-1.docker.io") == "docker.io"
    assert registry_for_host("127.0.0.1:5000") == "127.0.0.1:5000"
    auth = RegistryAuth(None, {"mirror.example": "docker.io"})
    assert auth.registry_name("registry-1.docker.io") == "docker.io"
    assert auth.registry_name("mirror.example") == "docker.io"
    assert auth.registry_name("other.example") == "other.example"


async def test_credentials_never_go_to_a_plain_http_realm_of_an_https_registry() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        header = 'Bearer realm="http://auth.test/token",service="svc"'
        return httpx.Response(401, headers={"WWW-Authenticate": header})

    async with _client(handler) as client:
        with pytest.raises(AuthError, match=r"plain-HTTP token realm auth\.test") as caught:
            await client.resolve(ref_for(HOST, "a", plain_http=False))
    assert "\n" not in str(caught.value)
    assert all(url.startswith("https://reg.test/") for url in seen)
