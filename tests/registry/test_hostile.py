"""Hostile or broken servers: endless bodies, odd JSON, redirect loops, huge headers, long waits.

Every answer here comes over real HTTP from the fault proxy (``respond`` and ``endless``
faults, on loopback, each bounded in time and bytes), in front of the real registry where
a request is let through. What is checked: esgz stops reading at its limit (the server's
count of bytes sent and the client's traced memory both stay small), and the error is one
short line.
"""

from __future__ import annotations

import json
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from esgz.errors import NotFoundError, RegistryError, VerificationError
from esgz.oci.mediatypes import OCI_MANIFEST
from esgz.registry import RetryPolicy
from tests.fixtures.faultproxy import Fault, FaultProxy
from tests.fixtures.registry import RegistryServer
from tests.registry.helpers import client_for, push_sample, ref_for, unique_repo
from tests.registry.sample_images import SampleImage

pytestmark = pytest.mark.anyio

#: A hostile server gives up by itself after this long or this many bytes.
ENDLESS: dict[str, Any] = {"seconds": 30.0, "max_bytes": 256 << 20}
#: What the client may have read past its limit (socket buffers) before it hung up.
SLACK = 48 << 20


@dataclass
class Memory:
    """Peak traced allocation while a block ran."""

    peak: int = 0


@contextmanager
def traced_peak() -> Iterator[Memory]:
    """Trace Python allocations for the block; ``peak`` is set when it ends."""
    memory = Memory()
    tracemalloc.start()
    try:
        yield memory
    finally:
        memory.peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


def _listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def one_line(error: BaseException, limit: int = 400) -> str:
    """``str(error)``, checked to be one line of reasonable length."""
    text = str(error)
    assert "\n" not in text
    assert len(text) <= limit, text
    return text


def bearer_challenge(faults: FaultProxy, path: str = r"/manifests/", times: int = 1) -> Fault:
    """A ``401`` from the registry sending clients to the proxy's ``/token``."""
    realm = f"http://{faults.host}/token"
    header = f'Bearer realm="{realm}",service="hostile"'
    return faults.add(
        Fault("respond", path, status=401, headers={"WWW-Authenticate": header}, times=times)
    )


# -- endless bodies ----------------------------------------------------------------------


async def test_endless_manifest_is_cut_at_4_mib(
    plain_registry: RegistryServer, faults: FaultProxy
) -> None:
    fault = faults.add(
        Fault(
            "endless", r"/manifests/", status=200, headers={"Content-Type": OCI_MANIFEST}, **ENDLESS
        )
    )
    async with client_for(plain_registry) as client:
        with traced_peak() as memory, pytest.raises(RegistryError) as caught:
            await client.fetch_manifest(ref_for(faults.host, unique_repo("endless")))
    assert one_line(caught.value).endswith("is larger than 4 MiB")
    assert "fetch manifest" in str(caught.value)
    assert fault.sent < (4 << 20) + SLACK
    assert memory.peak < 24 << 20
    assert len(faults.log) == 1  # not retried


async def test_endless_error_body_is_cut_and_the_status_reported(
    plain_registry: RegistryServer, faults: FaultProxy
) -> None:
    fault = faults.add(Fault("endless", r"/manifests/", status=404, **ENDLESS))
    async with client_for(plain_registry) as client:
        with traced_peak() as memory, pytest.raises(NotFoundError) as caught:
            await client.fetch_manifest(ref_for(faults.host, unique_repo("endless")))
    assert "not found" in one_line(caught.value)
    assert fault.sent < SLACK
    assert memory.peak < 16 << 20


async def test_endless_config_blob_is_cut(
    plain_registry: RegistryServer, faults: FaultProxy
) -> None:
    fault = faults.add(Fault("endless", r"/blobs/", method="GET", status=200, **ENDLESS))
    async with client_for(plain_registry) as client:
        with traced_peak() as memory, pytest.raises(RegistryError) as caught:
            await client.pull_blob_bytes(
                ref_for(faults.host, unique_repo("endless")), "sha256:" + "1" * 64, max_size=1 << 20
            )
    assert one_line(caught.value).endswith("larger than 1 MiB")
    assert fault.sent < (1 << 20) + SLACK
    assert memory.peak < 16 << 20


async def test_endless_blob_stream_stops_at_the_expected_size(
    plain_registry: RegistryServer, faults: FaultProxy, tmp_path: Path
) -> None:
    fault = faults.add(Fault("endless", r"/blobs/", method="GET", status=200, **ENDLESS))
    async with client_for(plain_registry) as client:
        with pytest.raises(VerificationError) as caught:
            await client.pull_blob(
                ref_for(faults.host, unique_repo("endless")),
                "sha256:" + "2" * 64,
                3 << 20,
                tmp_path / "blob",
            )
    assert "larger than the expected" in one_line(caught.value)
    assert fault.sent < (3 << 20) + SLACK
    assert _listing(tmp_path) == []


async def test_endless_answer_to_an_upload_is_cut_at_1_mib(
    plain_registry: RegistryServer, faults: FaultProxy, tmp_path: Path
) -> None:
    """Answers esgz needs only the headers of (an upload session's ``202``) are capped too."""
    fault = faults.add(
        Fault(
            "endless",
            r"/blobs/uploads/$",
            method="POST",
            status=202,
            headers={"Location": "/v2/x/blobs/uploads/1"},
            **ENDLESS,
        )
    )
    blob = tmp_path / "blob"
    blob.write_bytes(b"hello")
    digest = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    async with client_for(plain_registry) as client:
        with traced_peak() as memory, pytest.raises(RegistryError) as caught:
            await client.push_blob(ref_for(faults.host, unique_repo("upload")), digest, 5, blob)
    assert one_line(caught.value).endswith("larger than 1 MiB")
    assert fault.sent < (1 << 20) + SLACK
    assert memory.peak < 16 << 20


async def test_endless_token_response_is_cut_at_1_mib(
    plain_registry: RegistryServer, faults: FaultProxy
) -> None:
    bearer_challenge(faults)
    token = faults.add(Fault("endless", r"^/token", status=200, **ENDLESS))
    async with client_for(plain_registry) as client:
        with traced_peak() as memory, pytest.raises(RegistryError) as caught:
            await client.resolve(ref_for(faults.host, unique_repo("endless")))
    message = one_line(caught.value)
    assert f"answer to GET http://{faults.host}/token is larger than 1 MiB" in message
    assert token.sent < (1 << 20) + SLACK
    assert memory.peak < 16 << 20


async def test_endless_challenge_body_does_not_stop_the_token_flow(
    plain_registry: RegistryServer,
    faults: FaultProxy,
    plain_multi_repo: str,
    multi_platform_image: SampleImage,
) -> None:
    """A ``401`` whose body never ends: its header is all esgz needs from it."""
    realm = f"http://{faults.host}/token"
    challenge = faults.add(
        Fault(
            "endless",
            r"/manifests/",
            status=401,
            headers={"WWW-Authenticate": f'Bearer realm="{realm}",service="hostile"'},
            **ENDLESS,
        )
    )
    faults.add(Fault("respond", r"^/token", status=200, body=b'{"token": "T"}'))
    async with client_for(plain_registry) as client:
        info = await client.resolve(ref_for(faults.host, plain_multi_repo))
    assert info.digest == multi_platform_image.top.digest
    assert challenge.sent < SLACK


async def test_trickling_answer_gets_the_timeout_in_all(
    plain_registry: RegistryServer, faults: FaultProxy
) -> None:
    """A byte every 50 ms passes every per-read timeout; the whole answer still has one."""
    fault = faults.add(
        Fault("endless", r"/manifests/", status=200, trickle=0.05, times=2, **ENDLESS)
    )
    policy = RetryPolicy(max_attempts=2, initial_delay=0.01)
    async with client_for(plain_registry, retry=policy, timeout=1.0) as client:
        started = time.monotonic()
        with pytest.raises(RegistryError, match="no complete answer within 2s") as caught:
            await client.fetch_manifest(ref_for(faults.host, unique_repo("trickle")))
    assert time.monotonic() - started < 10
    one_line(caught.value)
    assert [e.fault for e in faults.log] == ["endless", "endless"]
    assert fault.sent < 200


def _gzip_of_zeros(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    parts = [compressor.compress(block) for _ in range(size >> 20)]
    return b"".join([*parts, compressor.flush()])


async def test_compressed_answers_are_never_inflated(
    plain_registry: RegistryServer, faults: FaultProxy
) -> None:
    """200 MiB of zeros in a 200 KiB gzip body, served against ``Accept-Encoding: identity``."""
    bomb = _gzip_of_zeros(200 << 20)
    assert len(bomb) < 1 << 20
    headers = {"Content-Type": OCI_MANIFEST, "Content-Encoding": "gzip"}
    faults.add(Fault("respond", r"/manifests/", status=200, headers=headers, body=bomb))
    async with client_for(plain_registry) as client:
        with traced_peak() as memory, pytest.raises(RegistryError) as caught:
            await client.fetch_manifest(ref_for(faults.host, unique_repo("bomb")))
    assert "not a readable JSON object" in one_line(caught.value)
    assert memory.peak < 24 << 20


# -- untrusted JSON ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"token": "T", "expires_in": 1e999}',
        b'{"token": "T", "expires_in": -5}',
        b'{"token": "T", "expires_in": 1e300}',
        b'{"token": "T", "expires_in": "300"}',
        b'{"token": "T", "expires_in": [1, 2]}',
        b'{"token": "T", "expires_in": {"seconds": 300}}',
        b'{"token": "T", "expires_in": true}',
        b'{"token": "T", "expires_in": ' + b"9" * 5000 + b"}",
        b'{"access_token": "T", "expires_in": null}',
    ],
    ids=["overflow", "negative", "huge", "string", "list", "object", "bool", "digits", "null"],
)
async def test_token_with_odd_lifetime_is_used(
    plain_registry: RegistryServer,
    faults: FaultProxy,
    plain_multi_repo: str,
    multi_platform_image: SampleImage,
    body: bytes,
) -> None:
    bearer_challenge(faults)
    faults.add(Fault("respond", r"^/token", status=200, body=body))
    async with client_for(plain_registry) as client:
        info = await client.resolve(ref_for(faults.host, plain_multi_repo))
    assert info.digest == multi_platform_image.top.digest


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"token": "T", "expires_in": NaN}', "not a JSON object"),
        (b'{"token": "T", "expires_in": Infinity}', "not a JSON object"),
        (b"[" * 200_000, "not a JSON object"),
        (b'["token", "T"]', "not a JSON object"),
        (b"<html>busy</html>", "not a JSON object"),
        (b'{"token": "T", "x": "\xff\xfe"}', "not a JSON object"),
        (b'{"token": 12345}', "carries no token"),
        (b'{"token": ""}', "carries no token"),
        (b'{"token": {"value": "T"}}', "carries no token"),
        (b'{"token": "line\\nbreak"}', "malformed token"),
        (b'{"token": "with space"}', "malformed token"),
    ],
    ids=[
        "nan",
        "infinity",
        "deep",
        "list",
        "html",
        "not-utf8",
        "number",
        "empty",
        "object",
        "newline",
        "space",
    ],
)
async def test_unusable_token_response_is_one_line(
    plain_registry: RegistryServer, faults: FaultProxy, body: bytes, message: str
) -> None:
    bearer_challenge(faults)
    faults.add(Fault("respond", r"^/token", status=200, body=body))
    async with client_for(plain_registry) as client:
        with pytest.raises(RegistryError, match=message) as caught:
            await client.resolve(ref_for(faults.host, unique_repo("token")))
    assert one_line(caught.value).startswith(f"registry {faults.host}: ")


async def test_realm_that_is_not_http_is_refused(
    plain_registry: RegistryServer, faults: FaultProxy
) -> None:
    faults.add(
        Fault(
            "respond",
            r"/manifests/",
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="file:///etc/passwd",service="x"'},
        )
    )
    async with client_for(plain_registry) as client:
        with pytest.raises(RegistryError, match="is not an http") as caught:
            await client.resolve(ref_for(faults.host, unique_repo("realm")))
    one_line(caught.value)


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (
            json.dumps({"errors": [{"code": "BAD\nCODE", "message": "m" * 5000}]}).encode(),
            "400 BAD CODE: mmm",
        ),
        (b"[" * 60_000, "400 Bad Request"),
        (b'{"errors": [{"code": 7, "message": ["x"]}]}', "400 Bad Request"),
        (b'{"errors": "nope"}', "400 Bad Request"),
    ],
    ids=["long-multiline", "deep", "wrong-types", "not-a-list"],
)
async def test_error_bodies_become_one_short_line(
    plain_registry: RegistryServer, faults: FaultProxy, body: bytes, detail: str
) -> None:
    faults.add(Fault("respond", r"/manifests/", status=400, body=body))
    async with client_for(plain_registry) as client:
        with pytest.raises(RegistryError) as caught:
            await client.fetch_manifest(ref_for(faults.host, unique_repo("errors")))
    assert detail in one_line(caught.value)


@pytest.mark.parametrize(
    "body",
    [b'{"a":' * 200_000, b'{"schemaVersion": NaN}', b"[]", b"\xff\xfe", b""],
    ids=["deep", "nan", "list", "not-utf8", "empty"],
)
async def test_manifest_that_is_not_a_json_object_is_refused(
    plain_registry: RegistryServer, faults: FaultProxy, body: bytes
) -> None:
    faults.add(
        Fault(
            "respond", r"/manifests/", status=200, headers={"Content-Type": OCI_MANIFEST}, body=body
        )
    )
    async with client_for(plain_registry) as client:
        with pytest.raises(RegistryError, match="not a readable JSON object") as caught:
            await client.fetch_manifest(ref_for(faults.host, unique_repo("deep")))
    one_line(caught.value)


# -- redirects, headers, waits -----------------------------------------------------------


async def test_redirect_loop_is_one_line(
    plain_registry: RegistryServer, faults: FaultProxy, tmp_path: Path
) -> None:
    repo = unique_repo("loop")
    digest = "sha256:" + "3" * 64
    path = f"/v2/{repo}/blobs/{digest}"
    faults.add(Fault("respond", path, status=307, headers={"Location": path}, times=1000))
    async with client_for(plain_registry) as client:
        with pytest.raises(RegistryError, match="too many redirects") as caught:
            await client.pull_blob(ref_for(faults.host, repo), digest, 10, tmp_path / "b")
    one_line(caught.value)
    assert 5 <= len(faults.log) <= 12  # followed a bounded number of times, never retried


async def test_huge_header_is_refused_in_one_line(
    plain_registry: RegistryServer, faults: FaultProxy
) -> None:
    faults.add(
        Fault(
            "respond", r"/manifests/", status=200, headers={"X-Filler": "a" * (1 << 20)}, times=10
        )
    )
    policy = RetryPolicy(max_attempts=2, initial_delay=0.01)
    async with client_for(plain_registry, retry=policy) as client:
        with traced_peak() as memory, pytest.raises(RegistryError) as caught:
            await client.resolve(ref_for(faults.host, unique_repo("header")))
    assert "aaaa" not in one_line(caught.value)
    assert memory.peak < 16 << 20


@pytest.mark.parametrize(
    "retry_after",
    ["999999999", "9" * 40, "Fri, 31 Dec 9999 23:59:59 GMT", "-1", "1e999", "NaN", "soon"],
)
async def test_retry_after_abuse_is_capped(
    plain_registry: RegistryServer,
    faults: FaultProxy,
    plain_multi_repo: str,
    multi_platform_image: SampleImage,
    retry_after: str,
) -> None:
    faults.add(Fault("status", r"/manifests/", status=503, retry_after=retry_after))
    policy = RetryPolicy(max_attempts=3, initial_delay=0.05, max_retry_after=0.3)
    async with client_for(plain_registry, retry=policy) as client:
        started = time.monotonic()
        info = await client.resolve(ref_for(faults.host, plain_multi_repo))
        waited = time.monotonic() - started
    assert info.digest == multi_platform_image.top.digest
    assert waited < 5
    assert [e.status for e in faults.log] == [503, 200]


async def test_retry_after_beyond_the_time_budget_ends_the_retries(
    plain_registry: RegistryServer, faults: FaultProxy
) -> None:
    faults.add(Fault("status", r"/manifests/", status=429, retry_after="3600", times=10))
    policy = RetryPolicy(max_attempts=5, max_retry_after=600, max_total=30)
    async with client_for(plain_registry, retry=policy) as client:
        started = time.monotonic()
        with pytest.raises(RegistryError, match="429") as caught:
            await client.resolve(ref_for(faults.host, unique_repo("budget")))
    assert time.monotonic() - started < 5
    assert "gave up after 1 attempts" in one_line(caught.value)


@pytest.mark.parametrize("location", ["ftp://elsewhere/upload", "http://[::bad/upload"])
async def test_unusable_upload_location_is_one_line(
    plain_registry: RegistryServer, faults: FaultProxy, tmp_path: Path, location: str
) -> None:
    faults.add(
        Fault(
            "respond",
            r"/blobs/uploads/$",
            method="POST",
            status=202,
            headers={"Location": location},
            times=10,
        )
    )
    blob = tmp_path / "blob"
    blob.write_bytes(b"hello")
    digest = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    async with client_for(plain_registry) as client:
        with pytest.raises(RegistryError, match="unusable Location header") as caught:
            await client.push_blob(ref_for(faults.host, unique_repo("loc")), digest, 5, blob)
    one_line(caught.value)


# -- one PUT by tag ----------------------------------------------------------------------


async def _push_blobs_of(
    plain_registry: RegistryServer, repo: str, image: SampleImage
) -> tuple[bytes, str, list[object]]:
    platform = image.platforms[0]
    async with client_for(plain_registry) as client:
        ref = ref_for(plain_registry.host, repo)
        for blob in (platform.config, *platform.layers):
            await client.push_blob(ref, blob.digest, blob.size, blob.path)
    return (
        platform.manifest_bytes,
        platform.manifest.media_type,
        [platform.config, *platform.layers],
    )


async def test_push_manifest_tagged_is_one_put(
    plain_registry: RegistryServer, faults: FaultProxy, oci_image: SampleImage
) -> None:
    repo = unique_repo("tagged")
    content, media_type, references = await _push_blobs_of(plain_registry, repo, oci_image)
    async with client_for(plain_registry) as client:
        info = await client.push_manifest_tagged(
            ref_for(faults.host, repo, tag="v1"),
            content,
            media_type,
            references=references,
        )
    assert info.digest == oci_image.platforms[0].manifest.digest
    assert (info.media_type, info.size) == (media_type, len(content))
    puts = [e.path for e in faults.log if e.method == "PUT"]
    assert puts == [f"/v2/{repo}/manifests/v1"]
    assert plain_registry.skopeo_inspect_raw(f"{repo}:v1") == content
    async with client_for(plain_registry) as client:
        direct = ref_for(plain_registry.host, repo, tag=None, digest=info.digest)
        assert (await client.fetch_manifest(direct)).content == content


async def test_push_manifest_tagged_checks_the_digest_without_the_header(
    plain_registry: RegistryServer, faults: FaultProxy, oci_image: SampleImage
) -> None:
    repo = unique_repo("tagged-nohdr")
    content, media_type, references = await _push_blobs_of(plain_registry, repo, oci_image)
    faults.add(
        Fault("headers", r"/manifests/v1$", method="PUT", headers={"Docker-Content-Digest": None})
    )
    async with client_for(plain_registry) as client:
        info = await client.push_manifest_tagged(
            ref_for(faults.host, repo, tag="v1"),
            content,
            media_type,
            references=references,
        )
    assert info.digest == oci_image.platforms[0].manifest.digest
    assert [(e.method, e.path) for e in faults.log if "/manifests/" in e.path] == [
        ("PUT", f"/v2/{repo}/manifests/v1"),
        ("HEAD", f"/v2/{repo}/manifests/{info.digest}"),
    ]


async def test_push_manifest_tagged_refuses_a_lying_digest(
    plain_registry: RegistryServer, faults: FaultProxy, oci_image: SampleImage
) -> None:
    repo = unique_repo("tagged-lie")
    content, media_type, references = await _push_blobs_of(plain_registry, repo, oci_image)
    faults.add(
        Fault(
            "headers",
            r"/manifests/v1$",
            method="PUT",
            headers={"Docker-Content-Digest": "sha256:" + "4" * 64},
        )
    )
    async with client_for(plain_registry) as client:
        with pytest.raises(VerificationError, match="registry stored manifest as") as caught:
            await client.push_manifest_tagged(
                ref_for(faults.host, repo, tag="v1"),
                content,
                media_type,
                references=references,
            )
        one_line(caught.value)
        with pytest.raises(ValueError, match="no tag"):
            await client.push_manifest_tagged(
                ref_for(faults.host, repo, tag=None), content, media_type, references=[]
            )


async def test_push_sample_still_pushes_each_manifest_once(
    plain_registry: RegistryServer, faults: FaultProxy, oci_image: SampleImage
) -> None:
    ref = ref_for(faults.host, unique_repo("once"))
    async with client_for(plain_registry) as client:
        await push_sample(client, ref, oci_image)
    assert len([e for e in faults.log if e.method == "PUT" and "/manifests/" in e.path]) == 1


@dataclass(frozen=True)
class _Descriptor:
    digest: str
    size: int


async def test_checks_before_a_manifest_push_are_bounded(
    plain_registry: RegistryServer, faults: FaultProxy
) -> None:
    """An index listing 30 manifests: at most 3 ``HEAD``\\ s at once, then one clear refusal."""
    faults.add(Fault("delay", r"/manifests/sha256:", method="HEAD", seconds=0.1, times=100))
    references = [_Descriptor(f"sha256:{n:064x}", 100) for n in range(30)]
    index = json.dumps({"schemaVersion": 2, "manifests": []}).encode()
    async with client_for(plain_registry, max_concurrent_transfers=3) as client:
        with pytest.raises(NotFoundError, match=r"\(and 29 more\)") as caught:
            await client.push_manifest(
                ref_for(faults.host, unique_repo("index")),
                index,
                "application/vnd.oci.image.index.v1+json",
                references=references,
            )
    one_line(caught.value)
    assert len([e for e in faults.log if e.method == "HEAD"]) == 30
    assert faults.peak_active <= 3
    assert not [e for e in faults.log if e.method == "PUT"]
