"""Registry credentials: static ones, and Docker's ``config.json`` with credential helpers.

:class:`DockerConfigCredentials` reads ``$DOCKER_CONFIG/config.json`` (default
``~/.docker/config.json``) the way the docker CLI does:

* ``credHelpers[<registry>]`` names a helper for one registry, ``credsStore`` one for all;
  a helper is the program ``docker-credential-<name>``, run as ``… get`` with the server
  URL on stdin, answering ``{"ServerURL", "Username", "Secret"}`` (``Username`` of
  ``<token>`` means ``Secret`` is an identity token). A helper that knows nothing about
  the registry falls back to ``auths``;
* ``auths[<registry>]`` holds ``auth`` (base64 ``user:password``), or ``username`` and
  ``password``, and optionally ``identitytoken``. Keys may carry a scheme and a path
  (``https://host/v1/``); Docker Hub is stored as ``https://index.docker.io/v1/``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import anyio

from esgz.errors import AuthError

__all__ = [
    "CredentialProvider",
    "Credentials",
    "DockerConfigCredentials",
    "StaticCredentials",
    "docker_config_dir",
]

log = logging.getLogger(__name__)

#: Docker Hub's key in ``config.json`` and the server URL given to credential helpers.
DOCKER_HUB_SERVER = "https://index.docker.io/v1/"
_DOCKER_HUB_ALIASES = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)
_TOKEN_USERNAME = "<token>"


@dataclass(frozen=True, slots=True)
class Credentials:
    """What to authenticate with: a user and password, or an identity (refresh) token."""

    username: str | None = None
    password: str | None = None
    identity_token: str | None = None

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, secret=***)"


class CredentialProvider(Protocol):
    """Finds the credentials for a registry (``host[:port]``), or ``None``."""

    async def get(self, registry: str) -> Credentials | None:
        """The credentials for ``registry``, or ``None`` to go anonymous."""
        ...


class StaticCredentials:
    """Credentials given up front, keyed by registry ``host[:port]``."""

    def __init__(self, credentials: Mapping[str, Credentials]) -> None:
        self._credentials = dict(credentials)

    async def get(self, registry: str) -> Credentials | None:
        """The credentials for ``registry``, or ``None``."""
        return self._credentials.get(registry)


def docker_config_dir() -> Path:
    """``$DOCKER_CONFIG``, or ``~/.docker``."""
    configured = os.environ.get("DOCKER_CONFIG")
    return Path(configured) if configured else Path.home() / ".docker"


def _normalize_key(key: str) -> str:
    """``https://host:port/v1/`` → ``host:port``; Docker Hub aliases → ``docker.io``."""
    host = key.split("://", 1)[-1].split("/", 1)[0]
    return "docker.io" if host in _DOCKER_HUB_ALIASES else host


def _normalize_registry(registry: str) -> str:
    return "docker.io" if registry in _DOCKER_HUB_ALIASES else registry


class DockerConfigCredentials:
    """Credentials from Docker's ``config.json`` and its credential helpers."""

    def __init__(self, config_dir: Path | None = None) -> None:
        self._config_dir = config_dir
        self._config: dict[str, Any] | None = None
        self._lock = anyio.Lock()

    @property
    def config_file(self) -> Path:
        """The ``config.json`` read (it need not exist)."""
        return (self._config_dir or docker_config_dir()) / "config.json"

    async def _load(self) -> dict[str, Any]:
        async with self._lock:
            if self._config is None:
                path = anyio.Path(self.config_file)
                try:
                    data = await path.read_bytes()
                except FileNotFoundError:
                    self._config = {}
                except OSError as err:
                    raise AuthError(f"cannot read {self.config_file}: {err.strerror}") from None
                else:
                    try:
                        loaded = json.loads(data)
                    except (UnicodeDecodeError, json.JSONDecodeError) as err:
                        raise AuthError(f"{self.config_file} is not valid JSON: {err}") from None
                    self._config = loaded if isinstance(loaded, dict) else {}
            return self._config

    async def get(self, registry: str) -> Credentials | None:
        """Credentials for ``registry`` from a helper or ``auths``; ``None`` if none."""
        config = await self._load()
        wanted = _normalize_registry(registry)
        helper = self._helper_for(config, wanted)
        if helper:
            server = DOCKER_HUB_SERVER if wanted == "docker.io" else registry
            found = await run_credential_helper(helper, server, registry=registry)
            if found is not None:
                return found
        return self._from_auths(config, wanted, registry)

    @staticmethod
    def _helper_for(config: Mapping[str, Any], wanted: str) -> str | None:
        helpers = config.get("credHelpers")
        if isinstance(helpers, dict):
            for key, name in helpers.items():
                if _normalize_key(str(key)) == wanted and isinstance(name, str) and name:
                    return name
        store = config.get("credsStore")
        return store if isinstance(store, str) and store else None

    def _from_auths(
        self, config: Mapping[str, Any], wanted: str, registry: str
    ) -> Credentials | None:
        auths = config.get("auths")
        if not isinstance(auths, dict):
            return None
        for key, entry in auths.items():
            if _normalize_key(str(key)) != wanted or not isinstance(entry, dict):
                continue
            username = entry.get("username") or None
            password = entry.get("password") or None
            encoded = entry.get("auth")
            if isinstance(encoded, str) and encoded:
                try:
                    decoded = base64.b64decode(encoded, validate=True).decode()
                except (binascii.Error, UnicodeDecodeError):
                    raise AuthError(
                        f"invalid base64 'auth' for {key} in {self.config_file}",
                        registry=registry,
                    ) from None
                if ":" not in decoded:
                    raise AuthError(
                        f"'auth' for {key} in {self.config_file} is not user:password",
                        registry=registry,
                    )
                username, password = decoded.split(":", 1)
            identity = entry.get("identitytoken") or None
            if username is None and identity is None:
                continue
            return Credentials(username, password, identity)
        return None


async def run_credential_helper(helper: str, server: str, *, registry: str) -> Credentials | None:
    """Ask ``docker-credential-<helper> get`` for ``server``; ``None`` if it has nothing."""
    program = f"docker-credential-{helper}"
    try:
        result = await anyio.run_process([program, "get"], input=server.encode(), check=False)
    except FileNotFoundError:
        raise AuthError(
            f"credential helper {program} is configured but not installed", registry=registry
        ) from None
    output = result.stdout.decode(errors="replace").strip()
    if result.returncode != 0:
        if "credentials not found" in (output + result.stderr.decode(errors="replace")).lower():
            return None
        message = (output or result.stderr.decode(errors="replace").strip()).splitlines()
        raise AuthError(
            f"credential helper {program} failed: {message[0] if message else result.returncode}",
            registry=registry,
        )
    try:
        answer = json.loads(output)
        username, secret = str(answer["Username"]), str(answer["Secret"])
    except (json.JSONDecodeError, KeyError, TypeError):
        raise AuthError(
            f"credential helper {program} gave an unreadable answer", registry=registry
        ) from None
    if username == _TOKEN_USERNAME:
        return Credentials(identity_token=secret)
    return Credentials(username, secret)
