"""Test-suite wide configuration: backends, the blocking-call guard, the skip policy."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

pytest_plugins: list[str] = []


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param("trio", id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every ``@pytest.mark.anyio`` test under both asyncio and trio."""
    return str(request.param)


@pytest.fixture(autouse=True)
def _no_blocking_calls_in_event_loop(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test when esgz code makes a blocking call inside the asyncio event loop.

    blockbuster only sees asyncio loops, so under trio this guard is a no-op; the same
    code paths run under asyncio too, so a blocking call is caught there.
    """
    if "anyio_backend" not in request.fixturenames:
        yield
        return
    if request.getfixturevalue("anyio_backend") != "asyncio":
        yield
        return
    from blockbuster import blockbuster_ctx

    with blockbuster_ctx(scanned_modules=["esgz"]):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """With ``ESGZ_FORBID_SKIPS=1`` (CI), a skipped test is reported as a failure."""
    outcome = yield
    report = outcome.get_result()
    if (
        os.environ.get("ESGZ_FORBID_SKIPS") == "1"
        and report.skipped
        and not hasattr(report, "wasxfail")
    ):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, but ESGZ_FORBID_SKIPS=1 forbids skips: {reason}"
