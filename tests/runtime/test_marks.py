"""Which fanotify mark sees exactly the container's rootfs accesses (a measurement).

One container, three monitors at once:

* ``FAN_MARK_MOUNT`` of the overlay mount point on the host — the container runs in its
  own mount namespace on a bind mount of it, a different mount: sees none of its reads;
* ``FAN_MARK_MOUNT`` of ``/proc/<init>/root`` — the container's own rootfs mount: sees
  exactly the rootfs accesses, not a bind mount of a rootfs directory, not the host;
* ``FAN_MARK_FILESYSTEM`` of the overlay — the superblock through every mount: also the
  bind mount of a rootfs directory (with a path relative to that mount, so misleading)
  and the host's own reads of the merged dir.
"""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from esgz.runtime.fanotify import FanotifyMonitor
from esgz.runtime.rootfs import overlay_rootfs
from esgz.runtime.runc import OciRuntime, new_container_id, read_lines
from esgz.runtime.spec import ResolvedUser, build_spec
from esgz.runtime.unpack import unpack_layer
from esgz.runtime.workload import WorkloadOptions
from tests.fixtures.images import SampleImage
from tests.runtime.conftest import layer_sources, require_sandbox

pytestmark = [pytest.mark.anyio, pytest.mark.root]


async def test_what_each_mark_sees(
    busybox_image: SampleImage, work_dir: Path, layer_cache: Path
) -> None:
    require_sandbox()
    layers = [await unpack_layer(s, layer_cache) for s in layer_sources(busybox_image)]
    async with overlay_rootfs([layer.root for layer in layers], work_dir) as rootfs:
        etc = work_dir / "etc"
        bundle = work_dir / "bundle"
        workload = WorkloadOptions(
            args=["cat /etc/group /mnt/data/small.txt >/dev/null"],
            mounts=[f"type=bind,src={rootfs}/data,dst=/mnt/data,options=rbind:ro"],
        )
        spec = build_spec(
            rootfs=rootfs,
            image_config=busybox_image.config()["config"],
            workload=workload,
            user=ResolvedUser(),
            hosts_path=etc / "hosts",
            resolv_conf_path=etc / "resolv.conf",
        )

        def write_bundle() -> None:
            etc.mkdir()
            (etc / "hosts").write_text("")
            (etc / "resolv.conf").write_text("")
            bundle.mkdir()
            (bundle / "config.json").write_text(json.dumps(spec))

        await anyio.to_thread.run_sync(write_bundle)
        runtime = OciRuntime(work_dir / "state")
        host_mount = FanotifyMonitor(host_prefix=rootfs)
        container_mount = FanotifyMonitor(host_prefix=rootfs)
        filesystem = FanotifyMonitor(host_prefix=rootfs)
        for monitor in (host_mount, container_mount, filesystem):
            monitor.open()
        try:
            async with runtime.container(new_container_id(), bundle) as container:
                # Armed after ``create``: runc's own setup reads (the /etc/hosts and
                # /etc/resolv.conf mount points, /etc/passwd and /etc/group for the user)
                # are over; before it, a filesystem mark sees those too.
                host_mount.mark_mount(rootfs)
                filesystem.mark_filesystem(rootfs)
                container_mount.mark_mount(f"/proc/{container.pid}/root")
                await runtime.start(container.id)
                async with anyio.create_task_group() as group:
                    group.start_soon(read_lines, container.stdout, print)
                    group.start_soon(read_lines, container.stderr, print)
                    assert await container.wait() == 0
                # The host reads a rootfs file itself.
                await anyio.Path(rootfs / "etc" / "passwd").read_text()
            for monitor in (host_mount, container_mount, filesystem):
                await monitor.stop()
        finally:
            for monitor in (host_mount, container_mount, filesystem):
                monitor.close()
    assert host_mount.paths == ["/etc/passwd"]  # the host's own read, none of the container's
    assert container_mount.paths == ["/bin/busybox", "/etc/group"]
    # Through the bind mount, the path is relative to that mount's root: misleading.
    assert filesystem.paths == ["/bin/busybox", "/etc/group", "/small.txt", "/etc/passwd"]
