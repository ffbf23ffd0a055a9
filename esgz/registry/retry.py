"""Retry policy: exponential backoff with jitter, caps on attempts and total time.

The client retries connection errors and timeouts, HTTP 429 (honouring ``Retry-After``)
and the server errors 500, 502, 503 and 504 under this policy, through one helper
(:meth:`esgz.registry.http.RegistryHTTP.retrying`) that every operation uses.
A ``Retry-After`` is capped at :attr:`RetryPolicy.max_retry_after` and counts against
:attr:`RetryPolicy.max_total` like any other wait, so a registry asking for a wait of
years gets a short one, and one asking for a wait beyond the budget ends the retries.
:attr:`RetryPolicy.time_scale` multiplies every wait (``0`` turns sleeping off, which tests
use).
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass

from esgz.registry.untrusted import header_int

__all__ = ["RETRYABLE_STATUS", "RetryPolicy", "RetryableStatus", "parse_retry_after"]

#: HTTP statuses worth another attempt.
RETRYABLE_STATUS: frozenset[int] = frozenset({429, 500, 502, 503, 504})


class RetryableStatus(Exception):
    """A registry answer that may succeed when tried again (429 or a 5xx)."""

    def __init__(self, status_code: int, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how long to wait before trying a registry request again."""

    max_attempts: int = 5
    """Attempts in total, the first included."""
    initial_delay: float = 0.5
    """Wait before the second attempt, in seconds; doubled each time."""
    max_delay: float = 20.0
    """Cap on a single backoff wait."""
    max_total: float = 120.0
    """No new attempt starts once this many seconds have passed since the first."""
    jitter: float = 0.5
    """Each backoff wait is multiplied by a random factor in ``[1 - jitter, 1]``."""
    max_retry_after: float = 60.0
    """Cap on a ``Retry-After`` wait asked for by the registry."""
    time_scale: float = 1.0
    """Multiplies every wait (``0``: never sleep)."""

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after) * self.time_scale
        delay = min(self.initial_delay * 2 ** (attempt - 1), self.max_delay)
        delay *= 1 - self.jitter * random.random()
        return float(delay * self.time_scale)

    def next_delay(self, attempt: int, started: float, retry_after: float | None) -> float | None:
        """The wait after failed attempt ``attempt``; ``None`` once the policy is spent.

        Spent: ``max_attempts`` made, or the wait would end more than ``max_total``
        seconds after ``started`` (a :func:`time.monotonic` reading).
        """
        delay = self.backoff(attempt, retry_after)
        if attempt >= self.max_attempts or time.monotonic() - started + delay > self.max_total:
            return None
        return delay


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); ``None`` if odd.

    Not capped here (:meth:`RetryPolicy.backoff` does that); never negative, never
    infinite, never an exception, whatever the header says.
    """
    if not value or len(value) > 64:
        return None
    seconds = header_int(value)
    if seconds is not None:
        return float(seconds)
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
        delay = when.timestamp() - time.time()
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    return max(0.0, delay)
