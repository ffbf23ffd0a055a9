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
import contextlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.abc

from esgz.errors import AuthError
from esgz.registry.untrusted import json_object, one_line, parse_json

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
#: Seconds a credential helper may take to answer.
HELPER_TIMEOUT = 60.0
#: Bytes a credential helper may write on stdout (and on stderr).
MAX_HELPER_OUTPUT = 1 << 20
#: ``config.json`` files larger than this are refused.
MAX_CONFIG_SIZE = 16 << 20


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


def _read_capped_sync(path: Path, limit: int) -> bytes | None:
    """The bytes of ``path``, or ``None`` if it holds more than ``limit``."""
    with path.open("rb") as stream:
        data = stream.read(limit + 1)
    return None if len(data) > limit else data


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
                try:
                    data = await anyio.to_thread.run_sync(
                        _read_capped_sync, self.config_file, MAX_CONFIG_SIZE
                    )
                except FileNotFoundError:
                    self._config = {}
                except OSError as err:
                    raise AuthError(f"cannot read {self.config_file}: {err.strerror}") from None
                else:
                    if data is None:
                        raise AuthError(f"{self.config_file} is larger than 16 MiB")
                    loaded = parse_json(data)
                    if loaded is None:
                        raise AuthError(f"{self.config_file} is not valid JSON")
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
            username = _text(entry.get("username"))
            password = _text(entry.get("password"))
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
            identity = _text(entry.get("identitytoken"))
            if username is None and identity is None:
                continue
            return Credentials(username, password, identity)
        return None


def _text(value: object) -> str | None:
    """A non-empty string from ``config.json``, or ``None`` (other types are ignored)."""
    return value if isinstance(value, str) and value else None


async def run_credential_helper(
    helper: str,
    server: str,
    *,
    registry: str,
    time_limit: float = HELPER_TIMEOUT,
    max_output: int = MAX_HELPER_OUTPUT,
) -> Credentials | None:
    """Ask ``docker-credential-<helper> get`` for ``server``; ``None`` if it has nothing.

    The helper may write at most ``max_output`` bytes on each of stdout and stderr and take
    at most ``time_limit`` seconds; past either it is killed and an :class:`AuthError` raised.
    Its answer must be a JSON object whose ``Username`` and ``Secret`` are strings.
    """
    program = f"docker-credential-{helper}"
    try:
        with anyio.fail_after(time_limit):
            returncode, stdout, stderr = await _run_bounded(
                [program, "get"], server.encode(), max_output
            )
    except FileNotFoundError:
        raise AuthError(
            f"credential helper {program} is configured but not installed", registry=registry
        ) from None
    except TimeoutError:
        raise AuthError(
            f"credential helper {program} did not answer within {time_limit:g}s", registry=registry
        ) from None
    except _OutputTooLarge:
        raise AuthError(
            f"credential helper {program} wrote more than {max_output} bytes", registry=registry
        ) from None
    output = stdout.decode(errors="replace").strip()
    errors = stderr.decode(errors="replace").strip()
    if returncode != 0:
        if "credentials not found" in (output + errors).lower():
            return None
        message = (output or errors).splitlines()
        reason = one_line(message[0], 160) if message else f"exit status {returncode}"
        raise AuthError(f"credential helper {program} failed: {reason}", registry=registry)
    answer = json_object(stdout)
    username = answer.get("Username") if answer is not None else None
    secret = answer.get("Secret") if answer is not None else None
    if not isinstance(username, str) or not isinstance(secret, str):
        raise AuthError(f"credential helper {program} gave an unreadable answer", registry=registry)
    if username == _TOKEN_USERNAME:
        return Credentials(identity_token=secret)
    return Credentials(username, secret)


class _OutputTooLarge(Exception):
    """A helper wrote more than it may."""


async def _run_bounded(
    command: list[str], stdin: bytes, max_output: int
) -> tuple[int, bytes, bytes]:
    """Run ``command`` with ``stdin``; its exit status, stdout and stderr, each capped.

    More than ``max_output`` bytes on either stream kills the process and raises
    :class:`_OutputTooLarge`. Cancellation (a timeout) kills it too.
    """
    async with await anyio.open_process(command) as process:
        try:
            assert process.stdin is not None
            assert process.stdout is not None
            assert process.stderr is not None
            outputs: list[bytes] = [b"", b""]

            async def collect(index: int, stream: anyio.abc.ByteReceiveStream) -> None:
                buffer = bytearray()
                async for chunk in stream:
                    buffer += chunk
                    if len(buffer) > max_output:
                        raise _OutputTooLarge
                outputs[index] = bytes(buffer)

            async def feed() -> None:
                assert process.stdin is not None
                with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                    await process.stdin.send(stdin)
                await process.stdin.aclose()

            try:
                async with anyio.create_task_group() as group:
                    group.start_soon(feed)
                    group.start_soon(collect, 0, process.stdout)
                    group.start_soon(collect, 1, process.stderr)
            except BaseExceptionGroup as failed:
                raise failed.exceptions[0] from None
            returncode = await process.wait()
        except BaseException:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    process.kill()
                await process.wait()
            raise
    return returncode, outputs[0], outputs[1]
