"""Shared helpers for the registry tests: clients for the test registries, pushing samples."""

from __future__ import annotations

import secrets
from typing import Any

import anyio
import pytest

from esgz.oci.reference import RegistryReference
from esgz.registry import (
    Credentials,
    RegistryClient,
    RegistryOptions,
    RetryPolicy,
    StaticCredentials,
)
from tests.fixtures.registry import RegistryServer
from tests.registry.sample_images import SampleImage

#: Retries that do not sleep long, so fault tests stay fast.
FAST_RETRY = RetryPolicy(max_attempts=4, initial_delay=0.05, max_delay=0.2, max_total=20)


def clear_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset the lower-case proxy variables and ``ALL_PROXY``, which would take precedence
    over (or add to) the upper-case ``HTTP(S)_PROXY`` / ``NO_PROXY`` a test then sets."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def unique_repo(prefix: str) -> str:
    """A repository name no other test uses."""
    return f"esgz-test/{prefix}-{secrets.token_hex(4)}"


def ref_for(
    host: str,
    repository: str,
    *,
    tag: str | None = "latest",
    plain_http: bool = True,
    digest: str | None = None,
) -> RegistryReference:
    """A reference into a test registry."""
    return RegistryReference(host, repository, tag, digest, plain_http)


def server_ref(server: RegistryServer, repository: str, **kwargs: Any) -> RegistryReference:
    """A reference into ``server``."""
    return ref_for(server.host, repository, plain_http=server.plain_http, **kwargs)


def credentials_for(server: RegistryServer, *, password: str | None = None) -> StaticCredentials:
    """``server``'s user (with ``password`` instead of the right one, if given); none if open."""
    credentials: dict[str, Credentials] = {}
    if server.username is not None:
        credentials[server.host] = Credentials(server.username, password or server.password)
    return StaticCredentials(credentials)


def client_for(
    server: RegistryServer,
    *,
    password: str | None = None,
    anonymous: bool = False,
    **kwargs: Any,
) -> RegistryClient:
    """A client configured for ``server``: its CA, its credentials (unless anonymous)."""
    options = {}
    if server.ca_file is not None:
        options[server.host] = RegistryOptions(ca_file=server.ca_file)
    credentials = StaticCredentials({}) if anonymous else credentials_for(server, password=password)
    kwargs.setdefault("retry", FAST_RETRY)
    return RegistryClient(credentials=credentials, options=options, **kwargs)


async def push_sample(client: RegistryClient, ref: RegistryReference, image: SampleImage) -> str:
    """Push every blob, every platform manifest and the top-level document; its digest."""
    documents = {image.top.digest, *(p.manifest.digest for p in image.platforms)}
    async with anyio.create_task_group() as group:
        for blob in image.blobs.values():
            if blob.digest not in documents:
                group.start_soon(_push_blob, client, ref, blob)
    for platform in image.platforms:
        digest = await client.push_manifest(
            ref.with_digest(platform.manifest.digest) if image.is_index else ref,
            platform.manifest_bytes,
            platform.manifest.media_type,
            references=[platform.config, *platform.layers],
        )
        if not image.is_index:
            return digest
    return await client.push_manifest(
        ref,
        image.top_bytes,
        image.top.media_type,
        references=[p.manifest for p in image.platforms],
    )


async def _push_blob(client: RegistryClient, ref: RegistryReference, blob: Any) -> None:
    await client.push_blob(ref, blob.digest, blob.size, blob.path)
