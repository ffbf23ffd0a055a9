"""The OCI runtime spec, user resolution and generated /etc files."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from esgz.errors import WorkloadError
from esgz.runtime.spec import (
    ResolvedUser,
    build_spec,
    hosts_file,
    merge_env,
    process_args,
    resolv_conf,
    resolve_user,
    stop_signal,
)
from esgz.runtime.workload import WorkloadOptions

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
app:x:1000:1000::/home/app:/bin/sh
nobody:x:65534:65534::/:/bin/false
"""
GROUP = """root:x:0:
daemon:x:1:
app:x:1000:
staff:x:50:app,daemon
audio:x:29:app
nogroup:x:65534:
"""


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    """A rootfs whose /etc/passwd is an absolute symlink (resolved inside the rootfs)."""
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "usr/share/base").mkdir(parents=True)
    (root / "usr/share/base/passwd").write_text(PASSWD)
    (root / "etc/passwd").symlink_to("/usr/share/base/passwd")
    (root / "etc/group").write_text(GROUP)
    return root


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, ResolvedUser(0, 0, ())),
        ("app", ResolvedUser(1000, 1000, (1000, 50, 29))),
        ("1000", ResolvedUser(1000, 1000, (1000, 50, 29))),
        ("app:staff", ResolvedUser(1000, 50, (50, 29))),
        ("1000:29", ResolvedUser(1000, 29, (29, 50))),
        ("4242", ResolvedUser(4242, 0, (0,))),  # unknown uid: gid 0, as containerd
        ("4242:4243", ResolvedUser(4242, 4243, (4243,))),
        ("nobody", ResolvedUser(65534, 65534, (65534,))),
    ],
)
def test_resolve_user(rootfs: Path, spec: str | None, expected: ResolvedUser) -> None:
    assert resolve_user(rootfs, spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ghost", "no user 'ghost'"),
        ("app:ghosts", "no group 'ghosts'"),
        ("a:b:c", "expected user"),
        (":1", "expected user"),
    ],
)
def test_unknown_user_or_group(rootfs: Path, spec: str, message: str) -> None:
    with pytest.raises(WorkloadError, match=message):
        resolve_user(rootfs, spec)


def test_symlink_cannot_leave_the_rootfs(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (tmp_path / "passwd").write_text("evil:x:7:7::/:/bin/sh\n")
    (root / "etc/passwd").symlink_to("../../passwd")  # resolves to <root>/passwd
    with pytest.raises(WorkloadError, match="no user 'evil'"):
        resolve_user(root, "evil")


def test_merge_env_adds_or_replaces() -> None:
    assert merge_env(["PATH=/bin", "A=1"], ["A=2", "B=3", "PATH=/x"]) == [
        "PATH=/x",
        "A=2",
        "B=3",
    ]


def test_process_args() -> None:
    image = {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"]}
    assert process_args(image, WorkloadOptions()) == ["/bin/sh", "-c", "echo hi"]
    assert process_args(image, WorkloadOptions(args=["true"])) == ["/bin/sh", "-c", "true"]
    # --entrypoint replaces the entrypoint; the image Cmd is still appended (FEATURES §1).
    assert process_args(image, WorkloadOptions(entrypoint=["/bin/busybox"])) == [
        "/bin/busybox",
        "echo hi",
    ]
    with pytest.raises(WorkloadError, match="no command"):
        process_args({}, WorkloadOptions())


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, signal.SIGKILL),
        ("SIGTERM", signal.SIGTERM),
        ("TERM", signal.SIGTERM),
        ("15", signal.SIGTERM),
        ("sigquit", signal.SIGQUIT),
    ],
)
def test_stop_signal(value: str | None, expected: signal.Signals) -> None:
    assert stop_signal({"StopSignal": value} if value else {}) == expected


@pytest.mark.parametrize("value", ["SIGNOPE", "999"])
def test_bad_stop_signal(value: str) -> None:
    with pytest.raises(WorkloadError, match=f"StopSignal '{value}' is not a signal"):
        stop_signal({"StopSignal": value})


def test_generated_files() -> None:
    options = WorkloadOptions(add_hosts="a:1.2.3.4", dns_search_domains="x,y")
    assert hosts_file(options.add_hosts).endswith("ff02::2\tip6-allrouters\n1.2.3.4\ta\n")
    assert resolv_conf(options.dns_nameservers, options.dns_search_domains, []) == (
        "nameserver 8.8.8.8\nsearch x y\n"
    )


def _spec(workload: WorkloadOptions, netns: str | None = None) -> dict[str, object]:
    return build_spec(
        rootfs=Path("/r"),
        image_config={"Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"], "WorkingDir": "/w"},
        workload=workload,
        user=ResolvedUser(7, 8, (8, 9)),
        hosts_path=Path("/t/hosts"),
        resolv_conf_path=Path("/t/resolv.conf"),
        env_file_entries=["B=2"],
        netns_path=netns,
    )


def test_spec_defaults_like_containerd() -> None:
    spec = _spec(WorkloadOptions(env=["A=2"], mounts=["type=bind,src=/s,dst=/d"]))
    process = spec["process"]
    linux = spec["linux"]
    assert isinstance(process, dict)
    assert isinstance(linux, dict)
    assert process["args"] == ["sh"]
    assert process["env"] == ["PATH=/bin", "A=2", "B=2"]
    assert process["cwd"] == "/w"
    assert process["user"] == {"uid": 7, "gid": 8, "additionalGids": [8, 9]}
    assert process["noNewPrivileges"] is True
    assert process["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
    assert "CAP_SYS_ADMIN" not in process["capabilities"]["bounding"]
    assert "CAP_NET_RAW" in process["capabilities"]["effective"]
    assert [n["type"] for n in linux["namespaces"]] == ["pid", "ipc", "uts", "mount", "network"]
    assert "/proc/kcore" in linux["maskedPaths"]
    assert "/proc/sys" in linux["readonlyPaths"]
    destinations = [m["destination"] for m in spec["mounts"]]  # type: ignore[attr-defined]
    assert destinations == [
        "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/run",
        "/d", "/etc/resolv.conf", "/etc/hosts",
    ]  # fmt: skip
    etc_mounts = spec["mounts"][-2:]  # type: ignore[index]
    assert all(m["options"] == ["rbind", "ro"] for m in etc_mounts)


def test_spec_network_modes() -> None:
    joined = _spec(WorkloadOptions(), netns="/run/netns/x")
    assert {"type": "network", "path": "/run/netns/x"} in joined["linux"]["namespaces"]  # type: ignore[index]
    host = _spec(WorkloadOptions(net_host=True))
    assert "network" not in [n["type"] for n in host["linux"]["namespaces"]]  # type: ignore[index]
    sources = [(m["destination"], m["source"]) for m in host["mounts"]]  # type: ignore[attr-defined]
    # The host files are mounted after the generated ones, so they win.
    assert sources[-2:] == [("/etc/resolv.conf", "/etc/resolv.conf"), ("/etc/hosts", "/etc/hosts")]
