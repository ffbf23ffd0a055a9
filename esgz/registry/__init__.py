"""Async registry client: authentication, pull and push over HTTP(S).

Usable on its own (no pipeline inside)::

    async with RegistryClient(options={"myreg:5000": RegistryOptions(plain_http=True)}) as c:
        info = await c.resolve(ref)                       # tag → digest, media type, size
        manifest = await c.fetch_manifest(ref.with_digest(info.digest))
        await c.pull_blob(ref, digest, size, Path("blob"))  # streamed, verified, resumable
        await c.push_blob(target, digest, size, Path("blob"), mount_from=ref)
        await c.push_manifest(target, content, media_type, references=descriptors)

Modules: :mod:`~esgz.registry.client` (:class:`RegistryClient`), :mod:`~esgz.registry.auth`
(challenges and the bearer-token flow), :mod:`~esgz.registry.credentials` (static
credentials, Docker's ``config.json`` and credential helpers), :mod:`~esgz.registry.options`
(per-registry TLS / plain HTTP), :mod:`~esgz.registry.retry` (backoff policy),
:mod:`~esgz.registry.transfer` (verifying blob writer, re-sendable upload bodies).
"""

from __future__ import annotations

from esgz.registry.auth import Challenge, RegistryAuth, parse_www_authenticate
from esgz.registry.client import (
    BlobRef,
    FetchedManifest,
    ManifestInfo,
    ProgressCallback,
    PushOutcome,
    RegistryClient,
)
from esgz.registry.credentials import (
    CredentialProvider,
    Credentials,
    DockerConfigCredentials,
    StaticCredentials,
)
from esgz.registry.options import RegistryOptions
from esgz.registry.retry import RetryPolicy

__all__ = [
    "BlobRef",
    "Challenge",
    "CredentialProvider",
    "Credentials",
    "DockerConfigCredentials",
    "FetchedManifest",
    "ManifestInfo",
    "ProgressCallback",
    "PushOutcome",
    "RegistryAuth",
    "RegistryClient",
    "RegistryOptions",
    "RetryPolicy",
    "StaticCredentials",
    "parse_www_authenticate",
]
