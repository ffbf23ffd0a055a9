"""The esgz command line: help, flag validation (exit 2), expected errors (exit 1)."""

from __future__ import annotations

import json
from pathlib import Path

import annotated_types
import anyio
import asyncclick as click
import pytest
from asyncclick.testing import CliRunner, Result
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from esgz.cli.convert import convert
from esgz.cli.main import cli
from esgz.cli.optimize import optimize
from esgz.levels import DEFAULT_LEVELS, LEVEL_RANGES
from esgz.pipeline.config import ImageSpec
from esgz.runtime.workload import WorkloadOptions
from esgz.spelling import flag_of
from tests.cli.outputcheck import check_converted, manifests_of
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


# Settings whose flags are spelled by hand (they do not map one to one onto a field).
HAND_SPELLED = {"format", "compression_level", "source", "target", "workload"}
# Options that are not settings of an image.
NOT_SETTINGS = {
    "zstdchunked",
    "estargz",
    "estargz_compression_level",
    "zstdchunked_compression_level",
    "cache_dir",
    "cache_registry",
    "no_cache",
    "log_format",
    "quiet",
}


def _model_fields() -> list[tuple[type[BaseModel], str, FieldInfo]]:
    return [
        (model, name, info)
        for model in (ImageSpec, WorkloadOptions)
        for name, info in model.model_fields.items()
    ]


def _with(model: type[BaseModel], name: str, value: object) -> object:
    """``value`` given to setting ``name`` of ``model``, as the model holds it."""
    if model is ImageSpec:
        return getattr(ImageSpec(source="a", target="b", **{name: value}), name)
    return getattr(WorkloadOptions.model_validate({name: value}), name)


def _bounds(info: FieldInfo) -> tuple[object, object]:
    low = next((m.ge for m in info.metadata if isinstance(m, annotated_types.Ge)), None)
    high = next((m.le for m in info.metadata if isinstance(m, annotated_types.Le)), None)
    return low, high


def test_every_setting_flag_is_its_model_field() -> None:
    """Walk every field of the settings models: its flag (on optimize or convert) has the
    field's names, help, default and range; fields without a flag are the known ones."""
    params = {
        param.name: param
        for command in (optimize, convert)
        for param in command.params
        if isinstance(param, click.Option)
    }
    seen = set()
    for model, name, info in _model_fields():
        flag = flag_of(info.metadata)
        if not flag.cli:
            assert name in HAND_SPELLED or name in ("stop_grace_period", "accept_failed_workload")
            continue
        if name in HAND_SPELLED:
            continue
        param = params[name]
        seen.add(name)
        assert tuple(param.opts) == flag.names(name), name
        assert param.help == info.description, name
        assert param.multiple == flag.multiple, name
        assert param.is_flag == (info.annotation is bool), name
        if param.is_flag:
            assert info.default is False, name
        else:
            # the flag's default, given to the model, is the model's default
            expected = info.get_default(call_default_factory=True)
            if param.multiple or param.default is None:
                assert expected in (None, []), name
            else:
                assert _with(model, name, param.default) == expected, name
        low, high = _bounds(info)
        if isinstance(param.type, click.IntRange | click.FloatRange):
            assert (param.type.min, param.type.max) == (low, high), name
        else:
            assert (low, high) == (None, None), name
    assert set(params) - seen == NOT_SETTINGS


def test_level_flags_follow_the_format_engine() -> None:
    params = {param.name: param for param in convert.params}
    for fmt, (low, high) in LEVEL_RANGES.items():
        param = params[f"{fmt}_compression_level"]
        assert isinstance(param.type, click.IntRange)
        assert (param.type.min, param.type.max) == (low, high)
        assert param.default == DEFAULT_LEVELS[fmt]
    info = ImageSpec.model_fields["compression_level"]
    assert _bounds(info) == (
        min(low for low, _ in LEVEL_RANGES.values()),
        max(high for _, high in LEVEL_RANGES.values()),
    )


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
            "--zstdchunked: the zstd:chunked format requires --oci",
        ),
        (
            ["convert", "a", "b", "--zstdchunked"],
            "--zstdchunked: the zstd:chunked format requires --oci",
        ),
        (
            ["optimize", "a", "http://localhost:5000/b:1", "--no-optimize"],
            'DST: --plain-http is needed to connect to "localhost:5000/b:1" using HTTP',
        ),
        (["optimize", "a", "b", "--gpus", "all"], "--gpus: GPU passthrough is not supported"),
        (
            ["optimize", "a", "b", "--no-optimize", "--prefetch-list", "x"],
            "--prefetch-list: cannot be used with --no-optimize",
        ),
        (
            ["optimize", "a", "b", "--no-optimize", "--record-out", "r.json"],
            "--record-out: needs the workload to run; it cannot be used with --no-optimize",
        ),
        (
            ["convert", "a", "b", "--record-in", "r.json", "--prefetch-list", "x"],
            "--prefetch-list: cannot be used with --record-in",
        ),
        (
            [
                "convert",
                "a",
                "b",
                "--zstdchunked",
                "--oci",
                "--zstdchunked-compression-level",
                "-8",
            ],
            "Invalid value for '--zstdchunked-compression-level'",
        ),
        (["optimize", "a", "b", "--period", "nan"], "--period: input should be a finite number"),
        (["optimize", "a", "b", "--period", "-inf"], "Invalid value for '--period'"),
        (["optimize", "a", "b", "--cwd", "rel"], "--cwd: 'rel' must be an absolute path"),
        (["optimize", "a", "b", "--env", "NOVALUE"], "--env: 'NOVALUE' must be KEY=VALUE"),
        (
            ["optimize", "a", "b", "-t", "-i", "--wait-on-signal"],
            "--wait-on-signal: cannot be used with -t/--terminal",
        ),
        (
            ["optimize", "a", "b", "--no-optimize", "--estargz-compression-level", "12"],
            "Invalid value for '--estargz-compression-level'",
        ),
        (
            ["optimize", "a", "b", "--no-optimize", "--platform", "linux/*"],
            "--platform: invalid platform 'linux/*'",
        ),
        (
            ["optimize", "a", "b", "--mount", "type=bind"],
            "--mount: 'type=bind': destination (dst=) is required",
        ),
        (["optimize", "a", "b", "--entrypoint", "[oops"], "--entrypoint: cannot parse '[oops'"),
        (["optimize", "a", "b", "--add-hosts", "nocolon"], "--add-hosts: cannot parse 'nocolon'"),
        (["optimize", "a", "b", "-t"], "-t/--terminal: requires -i"),
        (["optimize", "UPPER CASE", "b", "--no-optimize"], "SRC: invalid image reference"),
        (["convert", "a", "b", "--estargz", "--zstdchunked", "--oci"], "cannot be used together"),
        (["inspect", "http://localhost:1/x"], '"--plain-http" option must be specified'),
        (["convert", "a", "b", "--log-format", "yaml"], "Invalid value for '--log-format'"),
    ],
)
async def test_usage_errors_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = await invoke(*args)
    assert result.exit_code == 2, result.output
    error = one_line_error(result)
    assert message in error
    flag = error.split(": ", 1)[0]
    assert f"{flag}: {flag}" not in error


@pytest.mark.parametrize(
    "flags",
    [
        ["--zstdchunked", "--zstdchunked-compression-level", "-3"],
        ["--estargz-compression-level", "10"],
        ["--period", "nan"],
        ["-t"],
        ["--entrypoint", "[oops"],
        ["--gpus", "all"],
    ],
)
async def test_usage_errors_come_before_any_fetch(flags: list[str], tmp_path: Path) -> None:
    # without the bad flag this run fails (exit 1) when it looks for the source image
    source, target = f"local://{tmp_path}/missing", f"local://{tmp_path}/out:x"
    cache = ["--cache-dir", str(tmp_path / "cache")]
    result = await invoke("optimize", source, target, *cache, *flags)
    assert result.exit_code == 2, result.output
    one_line_error(result)
    assert [path async for path in anyio.Path(tmp_path).iterdir()] == []
    result = await invoke("optimize", source, target, "--no-optimize", *cache)
    assert result.exit_code == 1, result.output


async def test_negative_zstd_levels_convert(busybox_image: SampleImage, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = await invoke(
        "convert",
        "--zstdchunked",
        "--oci",
        "--zstdchunked-compression-level",
        "-3",
        "--cache-dir",
        str(tmp_path / "cache"),
        busybox_image.reference,
        f"local://{out}:z",
    )
    assert result.exit_code == 0, result.output
    _, (output,) = manifests_of(out, "z")
    assert {layer["mediaType"] for layer in output.manifest["layers"]} == {
        "application/vnd.oci.image.layer.v1.tar+zstd"
    }
    check_converted(out, output, [layer.files for layer in busybox_image.layers])


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
