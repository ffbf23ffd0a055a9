"""Registry authentication as an httpx auth flow: anonymous, basic, and bearer tokens.

The flow follows the Distribution token scheme: a request is sent (with a cached token
or basic credentials when the registry is known to want them); a ``401`` carries a
``WWW-Authenticate`` challenge; for ``Basic`` the request is repeated with credentials,
for ``Bearer`` a token is fetched from the challenge's ``realm`` for its ``service`` and
the request's scopes (``repository:<name>:pull[,push]``), cached per scope until it
expires, and the request repeated. A cached token that meets a ``401`` is replaced. Once
a registry has asked for a token, later requests fetch theirs before being sent, one
fetch per scope at a time. Token requests use HTTP basic credentials (``GET``), or an
identity token (``POST``, OAuth2 ``refresh_token`` grant). The realm must be an http(s)
URL, and one reached over plain HTTP gets no credentials from a registry reached over
HTTPS. A token answer is capped at 1 MiB and checked field by field
(:func:`parse_token_response`).
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import AsyncGenerator, Generator, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

import anyio
import httpx

from esgz.errors import AuthError, RegistryError
from esgz.registry.credentials import CredentialProvider, Credentials
from esgz.registry.limits import MAX_TOKEN_RESPONSE, set_body_limit
from esgz.registry.options import registry_for_host
from esgz.registry.retry import RETRYABLE_STATUS, RetryableStatus, parse_retry_after
from esgz.registry.untrusted import finite_number, json_object, one_line

__all__ = [
    "Challenge",
    "RegistryAuth",
    "parse_token_response",
    "parse_www_authenticate",
    "request_scopes",
]

#: Client id sent with OAuth2 token requests.
CLIENT_ID = "esgz"
_MIN_TOKEN_LIFETIME = 60
_MAX_TOKEN_LIFETIME = 24 * 3600
_EXPIRY_MARGIN = 10
_MAX_TOKEN_FETCHES = 2
#: What a bearer token may contain: visible ASCII, nothing a header could choke on.
_TOKEN_RE = re.compile(r"[\x21-\x7e]{1,65536}")

_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?')
_SCHEME_RE = re.compile(r"\s*([A-Za-z][A-Za-z0-9_-]*)(?:\s+|$)")
_PATH_RE = re.compile(r"^/v2/(.+)/(?:blobs/uploads(?:/.*)?|blobs/[^/]+|manifests/[^/]+|tags/list)$")


@dataclass(frozen=True, slots=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: a scheme (lowercase) and its parameters."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str | None:
        """Where to ask for a token (bearer) or the realm name (basic)."""
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        """The ``service`` a token is requested for."""
        return self.params.get("service")

    @property
    def scopes(self) -> list[str]:
        """The scopes the registry asks for (space-separated in the header)."""
        return self.params.get("scope", "").split()


def parse_www_authenticate(value: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` header value into its challenges.

    Handles quoted values with escapes, unquoted values, and several challenges in one
    header (``Basic realm="x", Bearer realm="y",service="z"``).
    """
    challenges: list[Challenge] = []
    position = 0
    while position < len(value):
        scheme_match = _SCHEME_RE.match(value, position)
        if scheme_match is None:
            position += 1
            continue
        scheme = scheme_match.group(1).lower()
        position = scheme_match.end()
        params: dict[str, str] = {}
        while position < len(value):
            param_match = _PARAM_RE.match(value, position)
            if param_match is None:
                break
            name, quoted, bare = param_match.groups()
            if quoted is None and bare == "" and not param_match.group(0).rstrip().endswith("="):
                break
            text = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
            params[name.lower()] = text
            position = param_match.end()
        challenges.append(Challenge(scheme, params))
        while position < len(value) and value[position] in ", ":
            position += 1
    return challenges


def request_scopes(request: httpx.Request) -> list[str]:
    """The token scopes a registry API request needs (empty for ``/v2/``)."""
    match = _PATH_RE.match(unquote(request.url.path))
    if match is None:
        return []
    repository = match.group(1)
    actions = "pull" if request.method in ("GET", "HEAD") else "pull,push"
    scopes = [f"repository:{repository}:{actions}"]
    source = request.url.params.get("from")
    if request.url.params.get("mount") and source and source != repository:
        scopes.append(f"repository:{source}:pull")
    return scopes


@dataclass
class _CachedToken:
    token: str
    expires_at: float

    def fresh(self) -> bool:
        return time.monotonic() < self.expires_at


@dataclass
class _HostState:
    """What one registry host wants: its scheme, its last bearer challenge, tokens."""

    credentials: Credentials | None = None
    credentials_loaded: bool = False
    use_basic: bool = False
    bearer: Challenge | None = None
    tokens: dict[str, _CachedToken] = field(default_factory=dict)
    scope_locks: dict[str, anyio.Lock] = field(default_factory=dict)
    lock: anyio.Lock = field(default_factory=anyio.Lock)

    def scope_lock(self, scope_key: str) -> anyio.Lock:
        """The lock serialising token fetches for one scope."""
        lock = self.scope_locks.get(scope_key)
        if lock is None:
            lock = self.scope_locks[scope_key] = anyio.Lock()
        return lock


def _basic_header(credentials: Credentials) -> str:
    raw = f"{credentials.username or ''}:{credentials.password or ''}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def _who(credentials: Credentials | None) -> str:
    if credentials is None:
        return "anonymous access"
    if credentials.username:
        return f"user {credentials.username}"
    return "identity token"


class RegistryAuth(httpx.Auth):
    """httpx auth for registries: challenges, token fetch and cache, per host.

    The registry name used in messages and credential lookups follows from the
    ``host[:port]`` connected to (:func:`~esgz.registry.options.registry_for_host`:
    ``registry-1.docker.io`` → ``docker.io``); ``registry_names`` may add fixed aliases.
    """

    def __init__(
        self,
        credentials: CredentialProvider | None = None,
        registry_names: Mapping[str, str] | None = None,
    ) -> None:
        self._provider = credentials
        self._names = dict(registry_names or {})
        self._hosts: dict[str, _HostState] = {}
        self.token_fetches = 0
        """How many tokens were fetched (for diagnostics and tests)."""

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """Not supported: registries are used through ``httpx.AsyncClient`` only."""
        raise NotImplementedError("RegistryAuth needs httpx.AsyncClient")

    def registry_name(self, host: str) -> str:
        """The registry name shown in messages for the ``host[:port]`` connected to."""
        return self._names.get(host) or registry_for_host(host)

    async def _state(self, host: str) -> _HostState:
        state = self._hosts.get(host)
        if state is None:
            state = self._hosts.setdefault(host, _HostState())
        if not state.credentials_loaded:
            async with state.lock:
                if not state.credentials_loaded:
                    if self._provider is not None:
                        state.credentials = await self._provider.get(self.registry_name(host))
                    state.credentials_loaded = True
        return state

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Send ``request``, answering basic and bearer challenges (see module docs)."""
        host = request.url.netloc.decode("ascii")
        registry = self.registry_name(host)
        state = await self._state(host)
        scopes = request_scopes(request)
        scope_key = " ".join(sorted(scopes))
        sent_token: str | None = None
        sent_basic = False

        if state.use_basic and state.credentials is not None:
            request.headers["Authorization"] = _basic_header(state.credentials)
            sent_basic = True
        elif state.bearer is not None:
            cached = state.tokens.get(scope_key)
            if cached is None or not cached.fresh():
                # One fetch per scope at a time; the others wait and reuse its token.
                async with state.scope_lock(scope_key):
                    if self._needs_token(state, scope_key, None):
                        token_response = yield self._token_request(
                            state, state.bearer, scopes, registry, request
                        )
                        await self._accept_token(state, registry, scope_key, token_response)
                cached = state.tokens.get(scope_key)
            if cached is not None:
                sent_token = cached.token
                request.headers["Authorization"] = f"Bearer {sent_token}"

        response = yield request
        fetches = 0
        while response.status_code == 401:
            challenges = parse_www_authenticate(response.headers.get("WWW-Authenticate", ""))
            bearer = next((c for c in challenges if c.scheme == "bearer"), None)
            basic = next((c for c in challenges if c.scheme == "basic"), None)
            if bearer is not None and bearer.realm:
                if fetches >= _MAX_TOKEN_FETCHES:
                    break
                fetches += 1
                state.bearer = bearer
                if sent_token is not None:
                    current = state.tokens.get(scope_key)
                    if current is not None and current.token == sent_token:
                        del state.tokens[scope_key]
                wanted = list(dict.fromkeys([*scopes, *bearer.scopes]))
                async with state.scope_lock(scope_key):
                    if self._needs_token(state, scope_key, sent_token, force=fetches > 1):
                        token_response = yield self._token_request(
                            state, bearer, wanted, registry, request
                        )
                        await self._accept_token(state, registry, scope_key, token_response)
                cached = state.tokens.get(scope_key)
                if cached is None:
                    break
                sent_token = cached.token
                request.headers["Authorization"] = f"Bearer {sent_token}"
            elif basic is not None:
                if sent_basic or state.credentials is None or not state.credentials.username:
                    break
                sent_basic = True
                state.use_basic = True
                request.headers["Authorization"] = _basic_header(state.credentials)
            else:
                break
            response = yield request
        if response.status_code == 401:
            raise self._refused(registry, state, response.status_code)

    def _refused(self, registry: str, state: _HostState, status: int) -> AuthError:
        if state.credentials is None:
            return AuthError(
                f"authentication required ({status}) and no credentials found",
                status_code=status,
                registry=registry,
            )
        return AuthError(
            f"authentication failed for {_who(state.credentials)} ({status})",
            status_code=status,
            registry=registry,
        )

    @staticmethod
    def _needs_token(
        state: _HostState, scope_key: str, stale: str | None, *, force: bool = False
    ) -> bool:
        """Whether to fetch a token: none cached, expired, or the one the registry refused."""
        if force:
            return True
        cached = state.tokens.get(scope_key)
        return cached is None or not cached.fresh() or cached.token == stale

    def _token_request(
        self,
        state: _HostState,
        challenge: Challenge,
        scopes: list[str],
        registry: str,
        origin: httpx.Request,
    ) -> httpx.Request:
        """The request that asks ``challenge``'s realm for a token covering ``scopes``.

        Credentials are not sent to a plain-HTTP realm named by a registry reached over
        HTTPS (anonymous token requests are).
        """
        realm = challenge.realm or ""
        try:
            realm_url = httpx.URL(realm)
        except httpx.InvalidURL:
            realm_url = None
        if realm_url is None or realm_url.scheme not in ("http", "https") or not realm_url.host:
            raise RegistryError(
                f"bearer challenge realm {one_line(realm, 100)!r} is not an http(s) URL",
                registry=registry,
            )
        credentials = state.credentials
        if (
            credentials is not None
            and (credentials.identity_token or credentials.username)
            and origin.url.scheme == "https"
            and realm_url.scheme != "https"
        ):
            raise AuthError(
                f"not sending credentials to plain-HTTP token realm {realm_url.host}",
                registry=registry,
            )
        if credentials is not None and credentials.identity_token:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": credentials.identity_token,
                "client_id": CLIENT_ID,
                "scope": " ".join(scopes),
            }
            if challenge.service:
                form["service"] = challenge.service
            request = httpx.Request(
                "POST", realm, data=form, headers={"Accept-Encoding": "identity"}
            )
            return set_body_limit(request, MAX_TOKEN_RESPONSE)
        params: list[tuple[str, str | int | float | bool | None]] = []
        if challenge.service:
            params.append(("service", challenge.service))
        params.extend(("scope", scope) for scope in scopes)
        headers = {"Accept-Encoding": "identity"}
        if credentials is not None and credentials.username:
            headers["Authorization"] = _basic_header(credentials)
        return set_body_limit(
            httpx.Request("GET", realm, params=params, headers=headers), MAX_TOKEN_RESPONSE
        )

    async def _accept_token(
        self, state: _HostState, registry: str, scope_key: str, response: httpx.Response
    ) -> None:
        self.token_fetches += 1
        body = await response.aread()  # capped at MAX_TOKEN_RESPONSE while it arrives
        if response.status_code in (401, 403):
            raise self._refused(registry, state, response.status_code)
        if response.status_code != 200:
            message = (
                f"token request to {response.request.url.copy_with(query=None)} failed"
                f" ({response.status_code})"
            )
            if response.status_code in RETRYABLE_STATUS:
                # The client's retry policy repeats the whole request, token fetch included.
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                raise RetryableStatus(response.status_code, message, retry_after)
            raise RegistryError(message, status_code=response.status_code, registry=registry)
        token, lifetime = parse_token_response(body, registry=registry)
        state.tokens[scope_key] = _CachedToken(token, time.monotonic() + lifetime - _EXPIRY_MARGIN)


def parse_token_response(body: bytes, *, registry: str) -> tuple[str, float]:
    """The token and its lifetime in seconds from a token endpoint's JSON answer.

    ``token`` (or OAuth2's ``access_token``) must be a string a header can carry;
    ``expires_in`` counts if it is a finite number, and is held within
    [60 s, 24 h] (missing or unusable: 60 s).
    """
    answer = json_object(body)
    if answer is None:
        raise RegistryError("token response is not a JSON object", registry=registry)
    token = answer.get("token") or answer.get("access_token")
    if not isinstance(token, str) or not token:
        raise RegistryError("token response carries no token", registry=registry)
    if not _TOKEN_RE.fullmatch(token):
        raise RegistryError("token response carries a malformed token", registry=registry)
    lifetime = finite_number(
        answer.get("expires_in"), minimum=_MIN_TOKEN_LIFETIME, maximum=_MAX_TOKEN_LIFETIME
    )
    return token, lifetime if lifetime is not None else _MIN_TOKEN_LIFETIME
