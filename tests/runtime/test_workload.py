"""Workload options and the parsers of the flags' string forms."""

from __future__ import annotations

from pathlib import Path

import pytest

from esgz.errors import WorkloadError
from esgz.runtime.workload import (
    DEFAULT_CNI_PLUGIN_DIRS,
    HostEntry,
    MountSpec,
    WorkloadOptions,
    parse_add_hosts,
    parse_env_file,
    parse_json_array,
    parse_mount,
)


def test_defaults() -> None:
    options = WorkloadOptions()
    assert options.period == 10
    assert options.dns_nameservers == ["8.8.8.8"]
    assert options.cni_plugin_conf_dir == Path("/etc/cni/net.d")
    assert options.cni_plugin_dir == list(DEFAULT_CNI_PLUGIN_DIRS)
    assert Path("/usr/lib/cni") in options.cni_plugin_dir
    assert not options.accept_failed_workload
    assert WorkloadOptions(period=0).effective_period == 10


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"period": float("nan")}, "period: input should be a finite number"),
        ({"period": "inf"}, "period: input should be a finite number"),
        ({"period": -1}, "period: input should be greater than or equal to 0"),
        ({"stop_grace_period": float("-inf")}, "stop_grace_period: input should be a finite"),
        ({"cwd": "relative"}, "cwd: 'relative' must be an absolute path"),
        ({"gpus": "all"}, "gpus: GPU passthrough is not supported by esgz"),
        ({"bogus": 1}, "bogus: unknown setting"),
    ],
)
def test_bad_values_name_the_python_field(options: dict[str, object], message: str) -> None:
    with pytest.raises(WorkloadError) as caught:
        WorkloadOptions.model_validate(options)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)
    assert "--" not in str(caught.value)


def test_runtime_spellings_are_the_same_fields() -> None:
    options = WorkloadOptions.model_validate(
        {"stdin": True, "mounts": ["type=bind,src=/a,dst=/b"], "terminal": True}
    )
    assert options.interactive
    assert options.stdin
    assert options.mount == options.mounts == [MountSpec(source="/a", destination="/b")]


def test_string_forms() -> None:
    options = WorkloadOptions.model_validate(
        {
            "entrypoint": '[ "/bin/bash", "-c" ]',
            "args": '["go version"]',
            "mounts": ["type=bind,source=/tmp/hello.go,destination=/hello.go,options=bind:ro"],
            "add_hosts": "db:10.0.0.2,v6:fd00::2",
            "dns_search_domains": "a.example, b.example",
            "cni_plugin_dir": "/a:/b",
        }
    )
    assert options.entrypoint == ["/bin/bash", "-c"]
    assert options.args == ["go version"]
    assert options.mounts == [MountSpec(source="/tmp/hello.go", destination="/hello.go",
                                        options=("bind", "ro"))]  # fmt: skip
    assert options.add_hosts == [
        HostEntry(host="db", ip="10.0.0.2"),
        HostEntry(host="v6", ip="fd00::2"),
    ]
    assert options.dns_search_domains == ["a.example", "b.example"]
    assert options.cni_plugin_dir == [Path("/a"), Path("/b")]


def test_mount_keys() -> None:
    mount = parse_mount("type=tmpfs,src=tmpfs,dst=/scratch,options=nosuid:nodev")
    assert mount == MountSpec(
        type="tmpfs", source="tmpfs", destination="/scratch", options=("nosuid", "nodev")
    )
    assert mount.to_oci() == {
        "destination": "/scratch",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["nosuid", "nodev"],
    }
    # As with ctr, an option holding "=" cannot be expressed (the field has two "=").
    with pytest.raises(WorkloadError, match="key=value"):
        parse_mount("type=tmpfs,src=tmpfs,dst=/scratch,options=size=1m")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("type=bind,src=/a,dst=/b,ro", "must be key=value"),
        ("type=bind,src=/a,target=/b", "unknown key 'target'"),
        ("type=bind,src=/a", "destination"),
        ("type=bind,src=/a,dst=relative", "absolute"),
        ("type=bind,src=/a=b,dst=/b", "must be key=value"),
    ],
)
def test_bad_mount_specs(spec: str, message: str) -> None:
    with pytest.raises(WorkloadError, match=message) as caught:
        parse_mount(spec)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("text", ["[bad", '"just a string"', "[1, 2]", '{"a": 1}'])
def test_bad_json_arrays(text: str) -> None:
    with pytest.raises(WorkloadError, match=r"^entrypoint: ") as caught:
        WorkloadOptions(entrypoint=text)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)
    assert "--entrypoint" not in str(caught.value)


def test_json_array() -> None:
    assert parse_json_array('["a", "b c"]') == ["a", "b c"]
    with pytest.raises(WorkloadError, match="nested too deeply"):
        parse_json_array("[" * 100_000)


@pytest.mark.parametrize("text", ["nohost", "host:", ":1.2.3.4", "host:not-an-ip"])
def test_bad_hosts(text: str) -> None:
    with pytest.raises(WorkloadError, match="host"):
        parse_add_hosts(text)


def test_hosts_split_at_first_colon() -> None:
    assert parse_add_hosts("h:::1") == [HostEntry(host="h", ip="::1")]


def test_env_validation_and_env_file() -> None:
    with pytest.raises(WorkloadError, match=r"^env: 'NOVALUE' must be KEY=VALUE$"):
        WorkloadOptions(env=["NOVALUE"])
    assert parse_env_file("A=1\n\n# c\n B=2 \n") == ["A=1", "B=2"]
    with pytest.raises(WorkloadError, match="line 2"):
        parse_env_file("A=1\nbroken\n")


def test_terminal_needs_stdin_and_no_wait_on_signal() -> None:
    assert WorkloadOptions(terminal=True, interactive=True).terminal
    with pytest.raises(WorkloadError, match=r"^terminal: requires interactive=True$"):
        WorkloadOptions(terminal=True)
    with pytest.raises(WorkloadError, match=r"^wait_on_signal: cannot be used with terminal=True"):
        WorkloadOptions(terminal=True, interactive=True, wait_on_signal=True)
    assert WorkloadOptions(terminal=True, interactive=True).rule_violations() == []
    assert WorkloadOptions(wait_on_signal=True).rule_violations() == []
