"""The esgz command line: help, flag validation (exit 2), expected errors (exit 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from asyncclick.testing import CliRunner, Result

from esgz.cli.main import cli
from tests.fixtures.images import SampleImage

pytestmark = pytest.mark.anyio

COMMANDS = ["optimize", "convert", "run", "inspect", "verify"]

# Every flag of the seed document and of ctr-remote 0.12's `image optimize`.
OPTIMIZE_FLAGS = [
    "--plain-http",
    "--reuse",
    "--platform",
    "--all-platforms",
    "--all-platform",
    "--no-optimize",
    "--record-out",
    "--oci",
    "--estargz-compression-level",
    "--estargz-chunk-size",
    "--zstdchunked",
    "--zstdchunked-compression-level",
    "--period",
    "-t",
    "--terminal",
    "-i",
    "--user",
    "--cwd",
    "--entrypoint",
    "--args",
    "--env",
    "--env-file",
    "--mount",
    "--dns-nameservers",
    "--dns-search-domains",
    "--dns-options",
    "--add-hosts",
    "--cni",
    "--cni-plugin-conf-dir",
    "--cni-plugin-config-dir",
    "--cni-plugin-dir",
    "--net-host",
    "--wait-on-signal",
    "--wait-on-line",
    "--prefetch-list",
    "--gpus",
    "--accept-failed-workload",
    "--cache-dir",
    "--log-format",
    "--quiet",
]


async def invoke(*args: str) -> Result:
    # LANGUAGE=C: click's gettext lookups would otherwise stat locale files inside the
    # event loop, which the blocking-call guard reports (harmless outside the tests).
    return await CliRunner().invoke(cli, list(args), catch_exceptions=False, env={"LANGUAGE": "C"})


def one_line_error(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("esgz: error: "), lines[0]
    assert "Traceback" not in result.output
    return lines[0].removeprefix("esgz: error: ")


async def test_top_level_help_lists_every_command() -> None:
    result = await invoke("--help")
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
async def test_every_command_has_help(command: str) -> None:
    result = await invoke(command, "--help")
    assert result.exit_code == 0
    assert result.stdout.startswith(f"Usage: esgz {command} [OPTIONS]")


async def test_optimize_help_documents_every_reference_flag() -> None:
    result = await invoke("optimize", "--help")
    words = set(result.stdout.replace(",", " ").split())
    missing = [flag for flag in OPTIMIZE_FLAGS if flag not in words]
    assert missing == []


async def test_version() -> None:
    result = await invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.startswith("esgz, version ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["optimize", "a"], "Missing argument 'DST'"),
        (["optimize", "a", "b", "--bogus"], "No such option '--bogus'"),
        (
            ["optimize", "a", "b", "--no-optimize", "--zstdchunked"],
            "option --zstdchunked must be used in conjunction with --oci",
        ),
        (
            ["convert", "a", "b", "--zstdchunked"],
            "option --zstdchunked must be used in conjunction with --oci",
        ),
        (
            ["optimize", "a", "http://localhost:5000/b:1", "--no-optimize"],
            '"--plain-http" option must be specified to connect to "localhost:5000/b:1" using HTTP',
        ),
        (["optimize", "a", "b", "--gpus", "all"], "--gpus: GPU passthrough is not supported"),
        (
            ["optimize", "a", "b", "--no-optimize", "--prefetch-list", "x"],
            "--no-optimize and --prefetch-list cannot be used together",
        ),
        (
            ["optimize", "a", "b", "--no-optimize", "--record-out", "r.json"],
            "--record-out needs the workload to run; it cannot be used with --no-optimize",
        ),
        (
            ["optimize", "a", "b", "--no-optimize", "--estargz-compression-level", "12"],
            "Invalid value for '--estargz-compression-level'",
        ),
        (
            ["optimize", "a", "b", "--no-optimize", "--platform", "linux/*"],
            "--platform: invalid platform 'linux/*'",
        ),
        (["optimize", "a", "b", "--mount", "type=bind"], "--mount: --mount 'type=bind'"),
        (
            ["optimize", "a", "b", "--entrypoint", "[oops"],
            "--entrypoint: --entrypoint: cannot parse '[oops'",
        ),
        (["optimize", "a", "b", "--add-hosts", "nocolon"], "--add-hosts: cannot parse 'nocolon'"),
        (["optimize", "a", "b", "-t"], "-t/--terminal: terminal (-t) requires interactive (-i)"),
        (["optimize", "UPPER CASE", "b", "--no-optimize"], "SRC: invalid image reference"),
        (["convert", "a", "b", "--estargz", "--zstdchunked", "--oci"], "cannot be used together"),
        (["inspect", "http://localhost:1/x"], '"--plain-http" option must be specified'),
        (["convert", "a", "b", "--log-format", "yaml"], "Invalid value for '--log-format'"),
    ],
)
async def test_usage_errors_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = await invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in one_line_error(result)


async def test_aliases_of_the_seed_spellings_are_accepted(tmp_path: Path) -> None:
    # every flag parses; the run then stops at the missing source image
    result = await invoke(
        "optimize",
        f"local://{tmp_path}/missing",
        "b",
        "--all-platform",
        "--cni-plugin-config-dir",
        str(tmp_path),
        "--env",
        "A=1",
        "--env",
        "B=2",
        "--mount",
        "type=bind,src=/tmp,dst=/host-tmp,options=rbind:ro",
        "--dns-nameservers",
        "1.1.1.1,9.9.9.9",
        "--period",
        "3",
    )
    assert result.exit_code == 1, result.output
    assert "No such option" not in one_line_error(result)


async def test_bad_pipeline_file_exits_1_naming_file_line_and_key(tmp_path: Path) -> None:
    config = tmp_path / "pipeline.yaml"
    config.write_text("images:\n  - source: a\n    target: b\n  - source: c\n")
    result = await invoke("run", str(config))
    assert result.exit_code == 1
    assert one_line_error(result) == f"{config}:4: images[1].target: field required"


async def test_missing_layout_is_a_one_line_error(tmp_path: Path) -> None:
    result = await invoke("inspect", f"local://{tmp_path}/nothing-here")
    assert result.exit_code == 1
    message = one_line_error(result)
    assert "nothing-here" in message


@pytest.mark.parametrize("command", ["convert", "inspect"])
async def test_unusable_cache_dir_is_a_one_line_error(
    command: str, busybox_image: SampleImage, tmp_path: Path
) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    out = tmp_path / "out"
    targets = [f"local://{out}:x"] if command == "convert" else []
    result = await invoke(command, "--cache-dir", str(not_a_dir), busybox_image.reference, *targets)
    assert result.exit_code == 1
    assert one_line_error(result).startswith(f"cannot use cache directory {not_a_dir}: ")
    assert not out.exists()


async def test_inspect_reports_layers_of_a_layout(
    busybox_image: SampleImage,
    tmp_path: Path,
) -> None:
    result = await invoke(
        "inspect", busybox_image.reference, "--json", "--cache-dir", str(tmp_path / "c")
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    (manifest,) = report["manifests"]
    assert [layer["digest"] for layer in manifest["layers"]] == [
        layer.digest for layer in busybox_image.layers
    ]
    assert {layer["format"] for layer in manifest["layers"]} == {"gzip"}


async def test_verify_fails_on_layers_that_are_not_estargz(
    busybox_image: SampleImage,
    tmp_path: Path,
) -> None:
    result = await invoke(
        "verify", busybox_image.reference, "--quiet", "--cache-dir", str(tmp_path / "c")
    )
    assert result.exit_code == 1
    problems = [line for line in result.stderr.splitlines() if line.startswith("esgz: problem")]
    assert len(problems) == len(busybox_image.layers)
    assert "not an eStargz or zstd:chunked layer" in problems[0]
    assert result.stderr.strip().splitlines()[-1].startswith("esgz: error: ")


async def test_unexpected_errors_keep_their_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import esgz.cli.runfile

    async def broken(path: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(esgz.cli.runfile, "load_config_file", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        await invoke("run", str(tmp_path / "p.yaml"))
