"""Authentication and TLS against the real registry: htpasswd over TLS, bearer tokens."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import httpx
import pytest

from esgz.errors import AuthError, RegistryError
from esgz.registry import (
    Credentials,
    DockerConfigCredentials,
    RegistryClient,
    RegistryOptions,
    StaticCredentials,
)
from tests.fixtures.registry import RegistryServer
from tests.registry.helpers import (
    FAST_RETRY,
    clear_proxy_environment,
    client_for,
    credentials_for,
    push_sample,
    server_ref,
    unique_repo,
)
from tests.registry.sample_images import SampleImage

pytestmark = pytest.mark.anyio


# -- TLS + htpasswd basic auth -------------------------------------------------------------


async def test_basic_auth_over_tls_push_then_skopeo_pull(
    tls_registry: RegistryServer, multi_platform_image: SampleImage, tmp_path: Path
) -> None:
    repo = unique_repo("tls")
    ref = server_ref(tls_registry, repo)
    assert not ref.plain_http
    async with client_for(tls_registry) as client:
        digest = await push_sample(client, ref, multi_platform_image)
        info = await client.resolve(ref)
        assert info.digest == digest
    tls_registry.skopeo_pull_layout(repo, tmp_path / "copy")
    copied = json.loads((tmp_path / "copy" / "index.json").read_text())
    assert copied["manifests"][0]["digest"] == digest


async def test_pull_from_tls_registry_pushed_by_skopeo(
    tls_oci_repo: str, tls_registry: RegistryServer, oci_image: SampleImage, tmp_path: Path
) -> None:
    repo = tls_oci_repo
    ref = server_ref(tls_registry, repo)
    async with client_for(tls_registry) as client:
        manifest = await client.fetch_manifest(ref)
        layer = json.loads(manifest.content)["layers"][0]
        dest = await client.pull_blob(ref, layer["digest"], layer["size"], tmp_path / "l")
    assert dest.read_bytes() == oci_image.blobs[layer["digest"]].path.read_bytes()


#: The registries with authentication: basic over TLS, and bearer tokens.
AUTH_REGISTRIES = pytest.mark.parametrize("server_fixture", ["tls_registry", "token_registry"])


@AUTH_REGISTRIES
async def test_wrong_password_is_one_line_auth_error(
    server_fixture: str, request: pytest.FixtureRequest
) -> None:
    server: RegistryServer = request.getfixturevalue(server_fixture)
    ref = server_ref(server, unique_repo("wrong"))
    async with client_for(server, password="not-the-password") as client:
        with pytest.raises(AuthError) as caught:
            await client.resolve(ref)
    assert str(caught.value) == (
        f"registry {server.host}: authentication failed for user {server.username} (401)"
    )
    assert caught.value.status_code == 401


@AUTH_REGISTRIES
async def test_missing_credentials_is_auth_error(
    server_fixture: str, request: pytest.FixtureRequest
) -> None:
    server: RegistryServer = request.getfixturevalue(server_fixture)
    ref = server_ref(server, unique_repo("anon"))
    async with client_for(server, anonymous=True) as client:
        with pytest.raises(AuthError, match=r"authentication required .*no credentials"):
            await client.resolve(ref)


async def test_untrusted_certificate_is_refused(tls_registry: RegistryServer) -> None:
    """Without the CA the system store does not trust the registry: a one-line error."""
    ref = server_ref(tls_registry, unique_repo("untrusted"))
    credentials = StaticCredentials({tls_registry.host: Credentials("alice", "x")})
    async with RegistryClient(credentials=credentials, retry=FAST_RETRY) as client:
        with pytest.raises(RegistryError, match="TLS verification failed") as caught:
            await client.resolve(ref)
    assert "\n" not in str(caught.value)


async def test_insecure_option_skips_verification(
    tls_oci_repo: str, tls_registry: RegistryServer, oci_image: SampleImage
) -> None:
    repo = tls_oci_repo
    credentials = credentials_for(tls_registry)
    options = {tls_registry.host: RegistryOptions(insecure=True)}
    async with RegistryClient(credentials=credentials, options=options) as client:
        info = await client.resolve(server_ref(tls_registry, repo))
    assert info.digest == oci_image.top.digest


async def test_ssl_cert_file_environment_is_honoured(
    tls_oci_repo: str,
    tls_registry: RegistryServer,
    oci_image: SampleImage,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = tls_oci_repo
    assert tls_registry.ca_file is not None
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_registry.ca_file))
    credentials = credentials_for(tls_registry)
    async with RegistryClient(credentials=credentials) as client:
        info = await client.resolve(server_ref(tls_registry, repo))
    assert info.digest == oci_image.top.digest


async def test_docker_config_credentials_against_tls_registry(
    tls_oci_repo: str,
    tls_registry: RegistryServer,
    oci_image: SampleImage,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``auths`` with base64 ``auth`` under ``https://host`` found through DOCKER_CONFIG."""
    import base64

    repo = tls_oci_repo
    secret = base64.b64encode(f"{tls_registry.username}:{tls_registry.password}".encode())
    config = {"auths": {f"https://{tls_registry.host}": {"auth": secret.decode()}}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    options = {tls_registry.host: RegistryOptions(ca_file=tls_registry.ca_file)}
    async with RegistryClient(options=options) as client:
        info = await client.resolve(server_ref(tls_registry, repo))
    assert info.digest == oci_image.top.digest


# -- bearer tokens -------------------------------------------------------------------------


async def test_token_auth_push_pull_and_skopeo(
    token_registry: RegistryServer, multi_platform_image: SampleImage, tmp_path: Path
) -> None:
    issuer = token_registry.token_issuer
    assert issuer is not None
    repo = unique_repo("token")
    ref = server_ref(token_registry, repo)
    async with client_for(token_registry) as client:
        digest = await push_sample(client, ref, multi_platform_image)
        # One token per scope (push: pull,push; pull), not one per request.
        requests = [r for r in issuer.requests if any(repo in s for s in r.scopes)]
        assert 1 <= len(requests) <= 2
        assert client.auth.token_fetches == len(requests)
        assert {r.user for r in requests} == {token_registry.username}
        for layer in multi_platform_image.platforms[0].layers:
            await client.pull_blob(ref, layer.digest, layer.size, tmp_path / layer.digest)
        assert client.auth.token_fetches <= 2
    token_registry.skopeo_pull_layout(repo, tmp_path / "copy")
    copied = json.loads((tmp_path / "copy" / "index.json").read_text())
    assert copied["manifests"][0]["digest"] == digest


async def test_token_auth_pull_of_skopeo_push(
    token_oci_repo: str, token_registry: RegistryServer, oci_image: SampleImage
) -> None:
    repo = token_oci_repo
    async with client_for(token_registry) as client:
        manifest = await client.fetch_manifest(server_ref(token_registry, repo))
    assert manifest.content == oci_image.top_bytes


async def test_refused_token_is_refreshed(
    token_registry: RegistryServer, oci_image: SampleImage
) -> None:
    """A token granting too little makes the registry answer 401; a new token is fetched."""
    issuer = token_registry.token_issuer
    assert issuer is not None
    ref = server_ref(token_registry, unique_repo("stingy"))
    layer = oci_image.platforms[0].layers[0]
    issuer.stingy_tokens = 1
    async with client_for(token_registry) as client:
        assert await client.push_blob(ref, layer.digest, layer.size, layer.path) == "uploaded"
    assert issuer.stingy_tokens == 0
    granted = [r.granted for r in issuer.requests if any(ref.repository in s for s in r.scopes)]
    assert ["pull"] in [[a for g in grant for a in g["actions"]] for grant in granted]  # type: ignore[attr-defined]


def _password_grant(url: str, service: str, server: RegistryServer) -> dict[str, str]:
    """An OAuth2 password grant with ``access_type=offline``: the answer has a refresh token."""
    form = {
        "grant_type": "password",
        "username": server.username or "",
        "password": server.password or "",
        "service": service,
        "client_id": "test",
        "access_type": "offline",
    }
    answer: dict[str, str] = httpx.post(url, data=form).json()
    return answer


async def test_identity_token_from_docker_config(
    token_oci_repo: str, token_registry: RegistryServer, oci_image: SampleImage, tmp_path: Path
) -> None:
    """An ``identitytoken`` is exchanged with an OAuth2 refresh-token POST."""
    issuer = token_registry.token_issuer
    assert issuer is not None
    repo = token_oci_repo
    answer = await anyio.to_thread.run_sync(
        _password_grant, issuer.url, issuer.service, token_registry
    )
    config = {"auths": {token_registry.host: {"identitytoken": answer["refresh_token"]}}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    before = len(issuer.requests)
    async with RegistryClient(credentials=DockerConfigCredentials(tmp_path)) as client:
        manifest = await client.fetch_manifest(server_ref(token_registry, repo))
    assert manifest.content == oci_image.top_bytes
    methods = {r.method for r in issuer.requests[before:]}
    assert methods == {"POST"}


async def test_cross_repository_mount_with_tokens(
    token_registry: RegistryServer, oci_image: SampleImage
) -> None:
    source = server_ref(token_registry, unique_repo("tok-src"))
    target = server_ref(token_registry, unique_repo("tok-dst"))
    layer = oci_image.platforms[0].layers[1]
    async with client_for(token_registry) as client:
        await client.push_blob(source, layer.digest, layer.size, layer.path)
    async with client_for(token_registry) as client:
        outcome = await client.push_blob(
            target, layer.digest, layer.size, layer.path, mount_from=source
        )
    assert outcome == "mounted"
    issuer = token_registry.token_issuer
    assert issuer is not None
    mount_scopes = [
        r.scopes for r in issuer.requests if any(target.repository in s for s in r.scopes)
    ]
    assert any(f"repository:{source.repository}:pull" in scopes for scopes in mount_scopes)


async def test_https_proxy_environment_with_custom_ca(
    tls_oci_repo: str,
    tls_registry: RegistryServer,
    oci_image: SampleImage,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A registry with its own CA still goes through ``HTTPS_PROXY`` (a CONNECT tunnel)."""
    from tests.fixtures.faultproxy import run_fault_proxy

    repo = tls_oci_repo
    clear_proxy_environment(monkeypatch)
    with run_fault_proxy(tls_registry.host) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", f"http://{proxy.host}")
        monkeypatch.setenv("NO_PROXY", "")
        async with client_for(tls_registry) as client:
            info = await client.resolve(server_ref(tls_registry, repo))
        assert info.digest == oci_image.top.digest
        assert [(e.method, e.path) for e in proxy.log] == [("CONNECT", tls_registry.host)]
