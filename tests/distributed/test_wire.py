"""What travels between esgz run --broker and the workers; the new settings."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from esgz.distributed.regcache import entry_tag
from esgz.distributed.wire import (
    config_for_job,
    event_from_json,
    event_to_wire,
    image_result_from_data,
    image_result_to_data,
    job_config_data,
)
from esgz.errors import ConfigError
from esgz.pipeline.cache import ConversionKey
from esgz.pipeline.config import config_from_data, parse_config_text
from esgz.pipeline.events import ImageDone, ImageProfiled, ImageResolved, LayerUploaded
from esgz.pipeline.results import ImageResult, LayerSummary, ManifestResult

DIGEST = "sha256:" + "ab" * 32


def test_events_round_trip() -> None:
    for event in (
        ImageResolved(image="a", target="b", platforms=("linux/amd64",), layers=2, total_size=9),
        LayerUploaded(image="a", layer=DIGEST, size=3, outcome="mounted"),
        ImageProfiled(
            image="a",
            platform="linux/arm64",
            exit_status=0,
            stopped=None,
            accessed=3,
            prioritized=(0, 1),
            seconds=1.5,
            execution="emulated",
            emulator="qemu",
            shared_from=((1, "linux/amd64"),),
        ),
        ImageDone(
            image="a",
            target="b",
            digest=DIGEST,
            layers_converted=1,
            layers_reused=0,
            layers_cached=1,
        ),
    ):
        assert event_from_json(event_to_wire(event)) == event
    assert event_from_json('{"type": "NoSuchEvent", "fields": {}}') is None
    assert event_from_json("not json") is None


def test_image_result_round_trip() -> None:
    result = ImageResult(
        source="s",
        target="t",
        digest=DIGEST,
        media_type="m",
        manifests=(
            ManifestResult(
                platform="linux/amd64",
                digest=DIGEST,
                media_type="m",
                layers=(LayerSummary(DIGEST, DIGEST, 5, "cached", None),),
                execution="emulated",
                emulator="/usr/libexec/qemu-binfmt/aarch64-binfmt-P",
            ),
        ),
    )
    assert image_result_from_data(image_result_to_data(result)) == result


def test_job_config_keeps_what_the_image_sets_and_the_defaults() -> None:
    config = parse_config_text(
        "defaults: {oci: true, compression_level: 5}\n"
        "executor: {broker: 'redis://127.0.0.1:6379/0'}\n"
        "images:\n"
        "  - {source: a.example/x:1, target: a.example/x:2}\n"
        "  - {source: a.example/y:1, target: a.example/y:2, compression_level: 1}\n"
    )
    data = job_config_data(config)
    assert "executor" not in data
    one = config_for_job(data, 1, "/var/cache/w").resolved_images()[0]
    assert (one.source, one.oci, one.compression_level) == ("a.example/y:1", True, 1)
    zero = config_for_job(data, 0, None).resolved_images()[0]
    assert (zero.source, zero.compression_level) == ("a.example/x:1", 5)
    assert config_for_job(data, 1, "/var/cache/w").cache.dir is not None


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"executor": {"broker": "amqp://x"}}, "is not a Redis URL"),
        ({"cache": {"registry": "reg.example/cache:tag"}}, "is not a registry repository"),
        ({"cache": {"registry": "local:///tmp/x"}}, "is not a registry repository"),
        ({"executor": {"visibility_timeout": 1}}, "greater than or equal to 10"),
    ],
)
def test_bad_settings_are_config_errors(section: dict[str, object], message: str) -> None:
    data = {"images": [{"source": "a.example/x:1", "target": "a.example/x:2"}], **section}
    with pytest.raises(ConfigError, match=message):
        config_from_data(data)


def test_entry_tags_are_valid_and_distinct() -> None:
    key = ConversionKey(DIGEST, (), "estargz", 9, 0)
    other = ConversionKey(DIGEST, ("etc/passwd",), "estargz", 9, 0)
    assert entry_tag(key) != entry_tag(other)
    assert len(entry_tag(key)) <= 128


async def _invoke(*args: str) -> tuple[int, str]:
    from asyncclick.testing import CliRunner

    from esgz.cli.main import cli

    result = await CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stderr


def test_bad_broker_and_cache_registry_flags_are_usage_errors(tmp_path: Path) -> None:
    config = tmp_path / "p.yaml"
    config.write_text("images: [{source: a.example/x:1, target: a.example/x:2}]\n")
    for args in (
        ("worker", "--broker", "amqp://rabbit:5672"),
        ("run", str(config), "--broker", "amqp://rabbit:5672"),
        ("run", str(config), "--cache-registry", "reg.example/c:tag"),
        ("convert", "--cache-registry", "reg.example/c@sha256:" + "0" * 64, "a/b:1", "a/c:1"),
    ):
        code, stderr = anyio.run(_invoke, *args)
        assert code == 2, (args, stderr)
        (line,) = stderr.strip().splitlines()
        assert line.startswith("esgz: error: --"), line
