"""How registry answers and connection failures become one-line :class:`RegistryError`\\ s.

A status worth another attempt (429, 500, 502, 503, 504) becomes a
:class:`~esgz.registry.retry.RetryableStatus` for the retry helper; the others become
``AuthError`` (401, 403), ``NotFoundError`` (404) or ``RegistryError``. Whatever the
registry put in its error body is shown cut to one short printable line.
"""

from __future__ import annotations

import ssl

import httpx

from esgz.errors import AuthError, NotFoundError, RegistryError
from esgz.oci.reference import RegistryReference
from esgz.registry.retry import RETRYABLE_STATUS, RetryableStatus, parse_retry_after
from esgz.registry.untrusted import json_object, one_line

__all__ = [
    "describe",
    "gave_up",
    "is_retryable_transport_error",
    "is_tls_failure",
    "request_failed",
    "status_error",
    "transport_error",
]


def error_detail(response: httpx.Response) -> str:
    """``CODE: message`` from a registry error body, or the HTTP reason (one short line)."""
    try:
        content = response.content
    except httpx.ResponseNotRead:
        content = b""
    document = json_object(content) if content else None
    errors = document.get("errors") if document is not None else None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        code = errors[0].get("code")
        message = errors[0].get("message")
        parts = [one_line(p, 100) for p in (code, message) if isinstance(p, str) and p.strip()]
        if parts:
            return ": ".join(parts)
    return one_line(response.reason_phrase or "error", 100)


def status_error(
    ref: RegistryReference, what: str, response: httpx.Response, *, digest: str | None = None
) -> Exception:
    """The error for a registry answer with an unexpected status (its body read)."""
    status = response.status_code
    detail = error_detail(response)
    if status in RETRYABLE_STATUS:
        return RetryableStatus(
            status, f"{status} {detail}", parse_retry_after(response.headers.get("Retry-After"))
        )
    if status in (401, 403):
        return AuthError(
            f"{what}: access denied ({status} {detail})",
            status_code=status,
            registry=ref.registry,
        )
    if status == 404:
        return NotFoundError(
            f"{what}: not found ({detail})",
            status_code=status,
            registry=ref.registry,
            layer=digest,
        )
    return RegistryError(
        f"{what} failed: {status} {detail}", status_code=status, registry=ref.registry
    )


def is_tls_failure(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) is a certificate verification failure."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(error)


def is_retryable_transport_error(error: httpx.TransportError) -> bool:
    """Connection trouble worth another attempt (not TLS, not a request esgz cannot send)."""
    return not (
        isinstance(error, httpx.UnsupportedProtocol | httpx.LocalProtocolError)
        or is_tls_failure(error)
    )


def describe(error: BaseException) -> str:
    """The first line of ``error``'s message (or its type), short and printable."""
    text = str(error).strip().splitlines()
    return one_line(text[0] if text else type(error).__name__)


def gave_up(
    ref: RegistryReference, what: str, error: RetryableStatus | httpx.TransportError, note: str
) -> RegistryError:
    """The error for a retryable failure that is not retried again (``note`` says why)."""
    if isinstance(error, RetryableStatus):
        return RegistryError(
            f"{what} failed: {error.message}{note}",
            status_code=error.status_code,
            registry=ref.registry,
        )
    return transport_error(ref, what, error)


def transport_error(ref: RegistryReference, what: str, error: BaseException) -> RegistryError:
    """The error for a connection that failed (TLS, refused, dropped, malformed)."""
    if is_tls_failure(error):
        return RegistryError(
            f"TLS verification failed for {ref.endpoint}: {describe(error)}"
            " (configure the registry's CA, or mark it insecure)",
            registry=ref.registry,
        )
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
        return RegistryError(
            f"cannot connect to {ref.endpoint}: {describe(error)}", registry=ref.registry
        )
    if isinstance(error, httpx.LocalProtocolError):
        # Its message may quote a header esgz was about to send (a credential).
        return RegistryError(f"{what}: the request could not be sent", registry=ref.registry)
    return RegistryError(f"{what}: connection failed: {describe(error)}", registry=ref.registry)


def request_failed(
    ref: RegistryReference, what: str, error: httpx.RequestError | httpx.InvalidURL
) -> RegistryError:
    """The error for a request httpx gave up on: a redirect loop, an undecodable body, a bad URL."""
    if isinstance(error, httpx.TooManyRedirects):
        return RegistryError(f"{what}: too many redirects", registry=ref.registry)
    if isinstance(error, httpx.TransportError):
        return transport_error(ref, what, error)
    return RegistryError(f"{what}: {describe(error)}", registry=ref.registry)
