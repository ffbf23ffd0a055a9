"""Signal handlers: SIGTERM cancels a scope; nested receivers give the handlers back."""

from __future__ import annotations

import os
import signal

import anyio
import pytest

from esgz.signals import cancel_on_signals, preserving_signal_handlers


@pytest.mark.anyio
async def test_sigterm_cancels_the_scope_once() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    with anyio.CancelScope() as scope, cancel_on_signals(scope) as termination:
        os.kill(os.getpid(), signal.SIGTERM)
        await anyio.sleep(5)
    assert scope.cancelled_caught
    assert termination.name == "SIGTERM"
    assert termination.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is previous


@pytest.mark.anyio
async def test_handlers_survive_a_nested_signal_receiver() -> None:
    with anyio.CancelScope() as scope, cancel_on_signals(scope) as termination:
        ours = signal.getsignal(signal.SIGTERM)
        with (
            preserving_signal_handlers(signal.SIGTERM),
            anyio.open_signal_receiver(signal.SIGTERM),
        ):
            pass  # closing it would reset SIGTERM to its default action
        assert signal.getsignal(signal.SIGTERM) is ours
        os.kill(os.getpid(), signal.SIGTERM)
        await anyio.sleep(5)
    assert termination.signum == signal.SIGTERM
