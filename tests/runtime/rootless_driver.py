"""Run :func:`esgz.runtime.profile.profile_workload` as the unprivileged test user.

``python rootless_driver.py REQUEST_JSON``: REQUEST has ``layers`` ([digest, path,
diff_id] bottom first), ``config`` (the image config), ``workload`` (WorkloadOptions
keys) and ``work_dir``; or ``recover`` (a work dir to clean). Prints ``pid <n>`` first,
then one JSON line: the result's ``mode``, ``exit_status``, ``records`` ([layer, path] in
access order) and ``timings``, or ``error``. Started by tests/runtime/test_rootless.py.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import anyio

from esgz.errors import EsgzError
from esgz.runtime.profile import profile_workload
from esgz.runtime.recover import recover_work_dir
from esgz.runtime.unpack import LayerFile
from esgz.runtime.workload import WorkloadOptions


async def main(request: dict[str, object]) -> dict[str, object]:
    if "recover" in request:
        return {"removed": await recover_work_dir(Path(str(request["recover"])))}
    layers = [LayerFile(d, Path(p), i) for d, p, i in request["layers"]]  # type: ignore[attr-defined]
    try:
        result = await profile_workload(
            layers,
            request["config"],  # type: ignore[arg-type]
            WorkloadOptions.model_validate(request["workload"]),
            work_dir=Path(str(request["work_dir"])),
            on_output=lambda stream, line: print(f"output {stream} {line}", flush=True),
        )
    except EsgzError as err:
        return {"error": str(err), "type": type(err).__name__}
    return {
        "mode": result.mode,
        "exit_status": result.exit_status,
        "stopped_on_signal": result.stopped_on_signal,
        "records": [[e.layer_index, e.path] for e in result.records()],
        "timings": result.timings,
    }


if __name__ == "__main__":
    # SIGTERM cancels the run like Ctrl-C, as the CLI does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(f"pid {os.getpid()}", flush=True)
    print(json.dumps(anyio.run(main, json.loads(sys.argv[1]))), flush=True)
