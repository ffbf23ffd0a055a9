"""profile_workload with real runc, overlayfs and fanotify on the sample images."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import anyio
import pytest

from esgz.errors import FormatError, WorkloadError
from esgz.runtime.profile import ProfileResult, profile_workload
from esgz.runtime.record import RecordEntry
from esgz.runtime.workload import WorkloadOptions
from tests.fixtures.images import SMALL_TEXT, SampleImage
from tests.runtime.conftest import layer_sources, make_layer, require_sandbox, tar_member

pytestmark = [pytest.mark.anyio, pytest.mark.root]


def listing(path: Path) -> list[str]:
    """What a directory holds, sorted."""
    return sorted(os.listdir(path))


async def run(
    image: SampleImage,
    work_dir: Path,
    layer_cache: Path,
    lines: list[str] | None = None,
    **options: object,
) -> ProfileResult:
    require_sandbox()
    output = lines if lines is not None else []
    return await profile_workload(
        layer_sources(image),
        image.config(),
        WorkloadOptions.model_validate(options),
        work_dir=work_dir,
        layer_cache=layer_cache,
        on_output=lambda _stream, line: output.append(line),
    )


async def test_default_workload_of_the_image(
    busybox_image: SampleImage, work_dir: Path, layer_cache: Path
) -> None:
    lines: list[str] = []
    result = await run(busybox_image, work_dir, layer_cache, lines)
    # Cmd: cat /data/small.txt && ls / (directories are not reported).
    assert result.exit_status == 0
    assert lines == [SMALL_TEXT.decode().strip()]
    assert result.accessed_paths == ["bin/busybox", "data/small.txt"]
    assert result.prioritized == [["bin/busybox"], ["data/small.txt"]]
    assert not result.period_expired
    assert result.records("sha256:" + "1" * 64) == [
        RecordEntry("bin/busybox", "sha256:" + "1" * 64, 0),
        RecordEntry("data/small.txt", "sha256:" + "1" * 64, 1),
    ]


async def test_reads_are_recorded_in_order_and_mapped_to_layers(
    busybox_image: SampleImage, work_dir: Path, layer_cache: Path, tmp_path: Path
) -> None:
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    (host_dir / "secret.txt").write_text("from the host\n")
    script = (
        "cat /etc/group /data/small.txt /mnt/host/secret.txt /opt/replaced/new.txt >/dev/null;"
        " cat /data/hardlink.txt /etc/group >/dev/null;"
        " echo made >/tmp/created; cat /tmp/created"
    )
    lines: list[str] = []
    result = await run(
        busybox_image,
        work_dir,
        layer_cache,
        lines,
        args=[script],
        mounts=[f"type=bind,src={host_dir},dst=/mnt/host,options=rbind:ro"],
    )
    assert lines == ["made"]
    # The bind-mounted file is not part of the rootfs: not recorded. The file created at
    # run time is accessed but served by no layer.
    assert result.accessed_paths == [
        "bin/busybox",
        "etc/group",
        "data/small.txt",
        "opt/replaced/new.txt",
        "data/hardlink.txt",
        "tmp/created",
    ]
    assert result.prioritized == [
        ["bin/busybox", "etc/group"],
        ["data/small.txt", "opt/replaced/new.txt", "data/hardlink.txt"],
    ]


async def test_filesystem_mark_sees_the_same_accesses(
    busybox_image: SampleImage, work_dir: Path, layer_cache: Path
) -> None:
    require_sandbox()
    result = await profile_workload(
        layer_sources(busybox_image),
        busybox_image.config(),
        WorkloadOptions(args=["cat /etc/passwd /data/small.txt >/dev/null"]),
        work_dir=work_dir,
        layer_cache=layer_cache,
        mark="filesystem",
    )
    assert result.prioritized == [["bin/busybox", "etc/passwd"], ["data/small.txt"]]


@pytest.mark.parametrize("user", ["nobody", "65534", "nobody:nogroup", "65534:65534"])
async def test_user_nobody(
    busybox_image: SampleImage, work_dir: Path, layer_cache: Path, user: str
) -> None:
    lines: list[str] = []
    await run(busybox_image, work_dir, layer_cache, lines, args=["id -u; id -g"], user=user)
    assert lines == ["65534", "65534"]


async def test_unknown_user_fails_before_the_workload_starts(
    busybox_image: SampleImage, work_dir: Path, layer_cache: Path
) -> None:
    with pytest.raises(WorkloadError, match="no user 'nosuchuser'"):
        await run(busybox_image, work_dir, layer_cache, args=["touch /tmp/x"], user="nosuchuser")
    assert listing(work_dir) == []


async def test_missing_mount_source_fails_before_anything(
    busybox_image: SampleImage, work_dir: Path, layer_cache: Path, tmp_path: Path
) -> None:
    with pytest.raises(WorkloadError, match="does not exist"):
        await run(
            busybox_image,
            work_dir,
            layer_cache,
            mounts=[f"type=bind,src={tmp_path / 'missing'},dst=/x,options=rbind:ro"],
        )
    assert listing(work_dir) == []


async def test_never_ending_workload_is_cut_at_the_period(
    busybox_image: SampleImage, work_dir: Path, layer_cache: Path
) -> None:
    started = time.monotonic()
    result = await run(busybox_image, work_dir, layer_cache, args=["sleep 1000"], period=2)
    elapsed = time.monotonic() - started
    assert result.period_expired
    assert result.exit_status == 128 + 9  # the default stop signal is SIGKILL
    assert 2 <= elapsed < 6
    assert result.prioritized[0] == ["bin/busybox"]


async def test_stop_signal_of_the_image_then_grace(
    busybox_image: SampleImage, work_dir: Path, layer_cache: Path
) -> None:
    require_sandbox()
    config = busybox_image.config()
    config["config"]["StopSignal"] = "SIGTERM"
    lines: list[str] = []
    result = await profile_workload(
        layer_sources(busybox_image),
        config,
        WorkloadOptions(
            args=["trap 'echo got-term; exit 0' TERM; echo up; while true; do sleep 0.1; done"],
            period=1,
        ),
        work_dir=work_dir,
        layer_cache=layer_cache,
        on_output=lambda _stream, line: lines.append(line),
    )
    assert result.period_expired
    assert lines == ["up", "got-term"]
    assert result.exit_status == 0


async def test_wait_on_line_stops_early(
    busybox_image: SampleImage, work_dir: Path, layer_cache: Path
) -> None:
    started = time.monotonic()
    result = await run(
        busybox_image,
        work_dir,
        layer_cache,
        args=["echo starting; echo ready now; sleep 1000"],
        wait_on_line="ready",
        period=30,
    )
    assert time.monotonic() - started < 10
    assert result.stopped_on_line
    assert not result.period_expired


async def test_default_network_has_only_loopback(
    busybox_image: SampleImage, work_dir: Path, layer_cache: Path
) -> None:
    lines: list[str] = []
    await run(busybox_image, work_dir, layer_cache, lines, args=["cat /proc/net/dev"])
    interfaces = [line.split(":")[0].strip() for line in lines[2:]]
    assert interfaces == ["lo"]


async def test_generated_hosts_and_resolv_conf(
    busybox_image: SampleImage, work_dir: Path, layer_cache: Path
) -> None:
    lines: list[str] = []
    result = await run(
        busybox_image,
        work_dir,
        layer_cache,
        lines,
        args=[
            "cat /etc/hosts; echo ---; cat /etc/resolv.conf; echo ---;"
            " (echo x >>/etc/hosts) 2>/dev/null && echo writable || echo read-only"
        ],
        add_hosts="myhost:10.1.2.3,v6host:fd00::1",
        dns_nameservers="1.1.1.1,9.9.9.9",
        dns_search_domains="example.com,corp.example",
        dns_options="ndots:2,edns0",
    )
    # FEATURES.md §3.2: Docker's defaults, tab-separated, then the extra hosts.
    assert lines == [
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "ff00::0\tip6-mcastprefix",
        "ff02::1\tip6-allnodes",
        "ff02::2\tip6-allrouters",
        "10.1.2.3\tmyhost",
        "fd00::1\tv6host",
        "---",
        "nameserver 1.1.1.1",
        "nameserver 9.9.9.9",
        "search example.com corp.example",
        "options ndots:2 edns0",
        "---",
        "read-only",
    ]
    assert "etc/hosts" not in result.accessed_paths


async def test_default_resolv_conf(
    busybox_image: SampleImage, work_dir: Path, layer_cache: Path
) -> None:
    lines: list[str] = []
    await run(busybox_image, work_dir, layer_cache, lines, args=["cat /etc/resolv.conf"])
    assert lines == ["nameserver 8.8.8.8"]


async def test_env_cwd_and_env_file(
    busybox_image: SampleImage, work_dir: Path, layer_cache: Path, tmp_path: Path
) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("# comment\nFROM_FILE=file\nNEW=from-file\n")
    lines: list[str] = []
    await run(
        busybox_image,
        work_dir,
        layer_cache,
        lines,
        args=['pwd; echo "$GREETING $NEW $FROM_FILE"; env | grep -c "^GREETING="'],
        env=["GREETING=bye", "NEW=from-flag"],
        env_file=env_file,
    )
    # WorkingDir /data from the image; GREETING replaced (not duplicated); the env file
    # is applied after --env.
    assert lines == ["/data", "bye from-file file", "1"]
    lines.clear()
    await run(busybox_image, work_dir, layer_cache, lines, args=["pwd"], cwd="/tmp")
    assert lines == ["/tmp"]


async def test_failing_workload_is_an_error_with_code_and_output(
    busybox_image: SampleImage, work_dir: Path, layer_cache: Path
) -> None:
    script = "echo first line; echo to stderr >&2; exit 7"
    with pytest.raises(WorkloadError) as caught:
        await run(busybox_image, work_dir, layer_cache, args=[script])
    assert "code 7" in str(caught.value)
    assert "to stderr" in str(caught.value)
    result = await run(
        busybox_image, work_dir, layer_cache, args=[script], accept_failed_workload=True
    )
    assert result.exit_status == 7
    assert sorted(result.output_tail) == ["first line", "to stderr"]  # two pipes: any order
    assert result.prioritized[0] == ["bin/busybox"]


async def test_workload_that_cannot_start(
    busybox_image: SampleImage, work_dir: Path, layer_cache: Path
) -> None:
    with pytest.raises(WorkloadError, match=r"cannot start.*no-such-binary"):
        await run(busybox_image, work_dir, layer_cache, entrypoint=["/no-such-binary"])
    result = await run(
        busybox_image,
        work_dir,
        layer_cache,
        entrypoint=["/no-such-binary"],
        accept_failed_workload=True,
    )
    assert result.exit_status is None
    assert result.accessed_paths == []


async def test_python_import_json(
    python_image: SampleImage, work_dir: Path, layer_cache: Path
) -> None:
    lines: list[str] = []
    result = await run(python_image, work_dir, layer_cache, lines)
    assert result.exit_status == 0, lines
    base, python = result.prioritized
    assert python[0] == "usr/bin/python3.11"
    json_package = [p for p in python if p.startswith("usr/lib/python3.11/json/")]
    assert json_package[0] == "usr/lib/python3.11/json/__init__.py"
    assert "usr/lib/python3.11/json/decoder.py" in json_package
    assert any(p.startswith("usr/lib/x86_64-linux-gnu/libc.so") for p in base) or any(
        "libc.so" in p for p in base
    )
    # Every recorded path is a real entry of the layer it is assigned to.
    files = [set(layer.files) for layer in python_image.layers]
    for index, paths in enumerate(result.prioritized):
        assert set(paths) <= files[index]


async def test_hostile_layer_is_refused_before_anything(
    busybox_image: SampleImage, work_dir: Path, tmp_path: Path
) -> None:
    require_sandbox()
    hostile = make_layer(tmp_path / "hostile", [(tar_member("a/../../escape"), b"x")])
    with pytest.raises(FormatError, match="hostile"):
        await profile_workload(
            [*layer_sources(busybox_image), hostile],
            busybox_image.config(),
            WorkloadOptions(),
            work_dir=work_dir,
        )
    assert listing(work_dir) == ["layers"]
    # Other layers may or may not have finished unpacking; no half-written one is left.
    cached = set(listing(work_dir / "layers"))
    assert cached <= {s.cache_key for s in layer_sources(busybox_image)}


async def test_net_host_uses_the_host_network_and_files(
    busybox_image: SampleImage, work_dir: Path, layer_cache: Path
) -> None:
    lines: list[str] = []
    await run(
        busybox_image,
        work_dir,
        layer_cache,
        lines,
        args=["cat /proc/net/dev | tail -n +3 | cut -d: -f1; echo ---; cat /etc/hosts"],
        net_host=True,
        add_hosts="ignored:10.9.9.9",
    )
    separator = lines.index("---")
    host_interfaces = [
        line.split(":")[0].strip()
        for line in Path("/proc/net/dev").read_text().splitlines()[2:]  # noqa: ASYNC240
    ]
    assert sorted(line.strip() for line in lines[:separator]) == sorted(host_interfaces)
    # The host's /etc/hosts is mounted over the generated one.
    host_hosts = Path("/etc/hosts").read_text().splitlines()  # noqa: ASYNC240
    assert lines[separator + 1 :] == [line.rstrip("\r") for line in host_hosts]


async def test_concurrent_runs_share_the_cache_but_not_their_profiles(
    busybox_image: SampleImage, work_dir: Path
) -> None:
    require_sandbox()
    results: dict[str, ProfileResult] = {}

    async def one(name: str, script: str) -> None:
        results[name] = await profile_workload(
            layer_sources(busybox_image),
            busybox_image.config(),
            WorkloadOptions(args=[script]),
            work_dir=work_dir,  # same work dir and (empty) layer cache for both
        )

    async with anyio.create_task_group() as group:
        group.start_soon(one, "data", "sleep 0.3; cat /data/small.txt >/dev/null")
        group.start_soon(one, "etc", "sleep 0.3; cat /etc/group >/dev/null")
    assert results["data"].prioritized == [["bin/busybox"], ["data/small.txt"]]
    assert results["etc"].prioritized == [["bin/busybox", "etc/group"], []]
    assert listing(work_dir) == ["layers", "runc-state"]


async def test_stop_ends_even_when_the_runtime_lost_its_state(
    busybox_image: SampleImage, work_dir: Path, layer_cache: Path
) -> None:
    """Its state dir gone, runc cannot kill the container: the init is killed directly."""
    require_sandbox()
    started = anyio.Event()
    result: list[ProfileResult] = []

    async def profile() -> None:
        result.append(
            await profile_workload(
                layer_sources(busybox_image),
                busybox_image.config(),
                WorkloadOptions(args=["echo started && sleep 1000"], period=3),
                work_dir=work_dir,
                layer_cache=layer_cache,
                on_output=lambda _stream, line: started.set() if line == "started" else None,
            )
        )

    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            group.start_soon(profile)
            await started.wait()
            state = work_dir / "runc-state"
            await anyio.to_thread.run_sync(lambda: shutil.rmtree(state))
    (outcome,) = result
    assert outcome.period_expired
    assert outcome.exit_status == 128 + 9
