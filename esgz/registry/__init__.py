"""Async registry client: authentication, pull and push over HTTP(S).

Usable on its own (no pipeline inside); every call addresses a repository through an
:class:`~esgz.oci.reference.RegistryReference` (its tag or digest where a manifest is
meant)::

    options = {"myreg:5000": RegistryOptions(plain_http=True)}
    async with RegistryClient(options=options, on_progress=show) as client:
        info = await client.resolve(ref)                        # tag → digest, type, size
        manifest = await client.fetch_manifest(ref.with_digest(info.digest))
        config = await client.pull_blob_bytes(ref, config_digest)  # small, verified
        await client.pull_blob(ref, digest, size, path)         # streamed, verified, resumed
        await client.pull_blob_into(ref, digest, size, store)   # into an oci.BlobStore
        await client.push_blob(target, digest, size, path, mount_from=ref)
        await client.push_manifest(target, content, media_type, references=descriptors)
        info = await client.push_manifest_tagged(               # one PUT by tag, digest
            target, content, media_type, references=descriptors # checked
        )

What it does on the wire:

* auth: anonymous, ``Basic`` and ``Bearer`` challenges; tokens cached per scope and
  replaced when refused; credentials from :class:`DockerConfigCredentials` (Docker's
  ``config.json``, ``credsStore`` / ``credHelpers`` programs; the default) or
  :class:`StaticCredentials`;
* TLS verified against the system store (``SSL_CERT_FILE`` / ``SSL_CERT_DIR``),
  environment proxies honoured; per registry a CA file, ``insecure`` or ``plain_http``
  (:class:`RegistryOptions`);
* pull: manifests with the Docker + OCI ``Accept`` list and digest checks; blobs streamed
  to a temp file, hashed on the fly, renamed only when digest and size match, resumed with
  ``Range`` after a dropped connection, redirects followed;
* push: ``HEAD`` first, cross-repository mount, monolithic ``PUT`` or chunked ``PATCH``
  (sizes configurable), a manifest only once every blob (or child manifest) it references
  is confirmed in the repository;
* retries with exponential backoff and jitter on connection errors, 5xx and 429
  (``Retry-After``, capped), capped in attempts and time (:class:`RetryPolicy`), all
  through one retry helper;
* limits: every body esgz keeps in memory (manifests, configs, tokens, error bodies,
  credential-helper output) is capped while it arrives, and every field of registry,
  token and helper JSON is checked (:mod:`~esgz.registry.limits`,
  :mod:`~esgz.registry.untrusted`);
* blob transfers bounded by ``max_concurrent_transfers`` over one ``httpx.AsyncClient``;
  ``on_progress(digest, transferred, total)`` after every chunk;
* failures raise :class:`~esgz.errors.RegistryError` (``AuthError``, ``NotFoundError``)
  or :class:`~esgz.errors.VerificationError` with one-line messages naming the registry.

Modules: :mod:`~esgz.registry.client` (:class:`RegistryClient`, a facade over
:mod:`~esgz.registry.manifests`, :mod:`~esgz.registry.blobs` and
:mod:`~esgz.registry.uploads`, which share :mod:`~esgz.registry.http`),
:mod:`~esgz.registry.model` (the values taken and returned), :mod:`~esgz.registry.auth`
(challenges and the token flow), :mod:`~esgz.registry.credentials`,
:mod:`~esgz.registry.options`, :mod:`~esgz.registry.retry`, :mod:`~esgz.registry.failures`
(errors), :mod:`~esgz.registry.limits`, :mod:`~esgz.registry.untrusted`,
:mod:`~esgz.registry.transfer` (verifying blob writer, re-sendable upload bodies).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from esgz.registry.auth import Challenge, RegistryAuth, parse_www_authenticate
    from esgz.registry.client import RegistryClient
    from esgz.registry.credentials import (
        CredentialProvider,
        Credentials,
        DockerConfigCredentials,
        StaticCredentials,
    )
    from esgz.registry.model import (
        BlobRef,
        FetchedManifest,
        ManifestInfo,
        ProgressCallback,
        PushOutcome,
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

# Each name is imported from its module on first use (PEP 562), so that the value types
# in esgz.registry.model (PushOutcome, ProgressCallback, ...) can be imported without
# loading httpx and the client.
_HOMES = {
    "BlobRef": "model",
    "Challenge": "auth",
    "CredentialProvider": "credentials",
    "Credentials": "credentials",
    "DockerConfigCredentials": "credentials",
    "FetchedManifest": "model",
    "ManifestInfo": "model",
    "ProgressCallback": "model",
    "PushOutcome": "model",
    "RegistryAuth": "auth",
    "RegistryClient": "client",
    "RegistryOptions": "options",
    "RetryPolicy": "retry",
    "StaticCredentials": "credentials",
    "parse_www_authenticate": "auth",
}


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first access."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
