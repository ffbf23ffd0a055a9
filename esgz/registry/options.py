"""Per-registry connection options: custom CA, insecure TLS, plain HTTP.

TLS is verified by default against the system trust store (``ssl.create_default_context``,
which honours ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``); a registry may add its own CA file,
skip verification (``insecure``) or speak plain HTTP. Building an SSL context reads files,
so :func:`build_ssl_context_sync` is blocking: call it from a worker thread.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from esgz.oci.reference import DOCKER_HUB_ENDPOINT, DOCKER_HUB_REGISTRY

__all__ = ["RegistryOptions", "build_ssl_context_sync", "options_for", "registry_for_host"]


@dataclass(frozen=True, slots=True)
class RegistryOptions:
    """How to connect to one registry (``host[:port]``)."""

    ca_file: Path | None = None
    """Extra PEM CA bundle trusted for this registry, on top of the system store."""
    insecure: bool = False
    """Use TLS but do not verify the registry's certificate."""
    plain_http: bool = False
    """Speak plain HTTP (no TLS) to this registry."""


def options_for(registry: str, options: Mapping[str, RegistryOptions]) -> RegistryOptions:
    """The options configured for ``registry``, or the defaults."""
    return options.get(registry, RegistryOptions())


def registry_for_host(host: str) -> str:
    """The registry name for the ``host[:port]`` connected to (``docker.io`` for Docker Hub).

    The inverse of :attr:`~esgz.oci.reference.RegistryReference.endpoint`: the name used in
    messages and to look credentials up.
    """
    return DOCKER_HUB_REGISTRY if host == DOCKER_HUB_ENDPOINT else host


def build_ssl_context_sync(options: RegistryOptions) -> ssl.SSLContext:
    """An SSL context for ``options`` (blocking: loads certificate files)."""
    context = ssl.create_default_context()
    if options.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif options.ca_file is not None:
        context.load_verify_locations(cafile=str(options.ca_file))
    return context
