"""The OCI runtime driver on its own: state dir, delete of what is gone, error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from esgz.errors import SandboxError
from esgz.runtime.runc import OciRuntime, new_container_id, runtime_message
from tests.runtime.conftest import require_sandbox

pytestmark = pytest.mark.anyio


def test_runtime_message() -> None:
    line = 'time="2026-01-01T00:00:00Z" level=error msg="exec: \\"/x\\": not found"'
    assert runtime_message(line) == 'exec: "/x": not found'
    assert runtime_message("plain text\n") == "plain text"


def test_container_ids_are_unique() -> None:
    ids = {new_container_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("esgz-") for i in ids)


async def test_private_state_dir(tmp_path: Path) -> None:
    require_sandbox()
    runtime = OciRuntime(tmp_path / "state")
    assert await runtime.list_containers() == []
    await runtime.delete("esgz-does-not-exist")  # gone already: fine
    with pytest.raises(SandboxError, match="runc start failed"):
        await runtime.start("esgz-does-not-exist")


async def test_missing_binary(tmp_path: Path) -> None:
    runtime = OciRuntime(tmp_path / "state", binary="no-such-oci-runtime")
    with pytest.raises(SandboxError, match="not found"):
        await runtime.list_containers()


async def test_bad_bundle_is_a_sandbox_error(tmp_path: Path) -> None:
    require_sandbox()
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text("{}")
    runtime = OciRuntime(tmp_path / "state")
    with pytest.raises(SandboxError, match="runc create failed"):
        async with runtime.container("esgz-badbundle", bundle):
            pass
    assert await runtime.list_containers() == []
