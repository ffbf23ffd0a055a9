"""The rootless profiler's helper, run inside its user namespace (see :mod:`esgz.runtime.userns`).

Started as ``python -m esgz.runtime.usernshelper`` by :func:`esgz.runtime.userns.run_helper`
under ``unshare``: it is root of a fresh user namespace and the init of a fresh pid
namespace. It reads one JSON request line on stdin, runs
:func:`esgz.runtime.profile.profile_in_userns` and writes JSON lines on stdout:
``{"output": [stream, line]}`` for each line of the workload, then ``{"result": {...}}``
or ``{"error": {"type": ..., "message": ...}}``. Logs go to stderr. A later
``{"signal": true}`` line on stdin ends a ``wait_on_signal`` run as a signal would.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from typing import Any

import anyio

from esgz.errors import EsgzError

__all__ = ["main"]

_write_lock = threading.Lock()


def _send(message: dict[str, Any]) -> None:
    data = (json.dumps(message) + "\n").encode()
    with _write_lock:
        os.write(1, data)


def _watch_stdin() -> None:
    """Turn a ``signal`` line from the parent into SIGTERM to this process (thread)."""
    for line in sys.stdin:
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(message, dict) and message.get("signal"):
            os.kill(os.getpid(), signal.SIGTERM)


async def _main(request: dict[str, Any]) -> int:
    from esgz.runtime.profile import profile_in_userns

    try:
        result = await profile_in_userns(
            request, lambda stream, line: _send({"output": [stream, line]})
        )
    except EsgzError as err:
        _send({"error": {"type": type(err).__name__, "message": err.message}})
        return 1
    _send({"result": result.to_json()})
    return 0


def main() -> int:
    """Read the request, run the profile, report; the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    line = sys.stdin.readline()
    if not line:
        return 2
    request = json.loads(line)
    threading.Thread(target=_watch_stdin, daemon=True).start()
    return anyio.run(_main, request)


if __name__ == "__main__":
    sys.exit(main())
