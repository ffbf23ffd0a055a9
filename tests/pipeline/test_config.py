"""The pipeline config model: YAML loading, defaults/overrides, errors with file:line:key."""

from __future__ import annotations

from pathlib import Path

import pytest

from esgz.errors import ConfigError
from esgz.estargz.options import ConvertOptions
from esgz.pipeline.config import config_from_data, load_config_file, parse_config_text
from esgz.spelling import IMAGE_KEYWORDS, KEYWORDS, YAML, cli_vocabulary, render

GOOD = """\
defaults:
  oci: true
  reuse: true
  workload:
    period: 5
    dns_nameservers: 1.1.1.1,9.9.9.9
    env: [A=1]
cache:
  dir: /var/cache/esgz-test
  max_size: 2GiB
concurrency:
  fetch: 2
  convert: 3
registries:
  "localhost:5000": {plain_http: true}
images:
  - source: docker.io/library/busybox:1.36
    target: http://localhost:5000/busybox:esgz
  - source: local:///srv/layouts/app:v1
    target: local:///srv/out/app:v1
    format: zstdchunked
    reuse: false
    platforms: [linux/arm64]
    workload:
      entrypoint: '["/bin/sh", "-c"]'
      args: [echo hi]
"""


def test_good_config_applies_defaults_and_overrides() -> None:
    config = parse_config_text(GOOD)
    first, second = config.resolved_images()
    assert (first.format, first.oci, first.reuse, first.compression_level) == (
        "estargz",
        True,
        True,
        9,
    )
    assert (second.format, second.reuse, second.compression_level) == ("zstdchunked", False, 3)
    assert second.platforms == ("linux/arm64",)
    assert first.workload.dns_nameservers == ["1.1.1.1", "9.9.9.9"]
    # an image's workload keys override the defaults' keys one by one
    assert second.workload.period == 5
    assert second.workload.env == ["A=1"]
    assert second.workload.entrypoint == ["/bin/sh", "-c"]
    assert second.workload.args == ["echo hi"]
    assert first.workload.entrypoint is None
    assert config.cache.max_size == 2 << 30
    assert config.concurrency.fetch == 2
    assert config.registry_options("localhost:5000").plain_http
    assert not config.registry_options("example.com").plain_http


def test_default_dns_and_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    config = config_from_data({"images": [{"source": "a", "target": "b"}]})
    (image,) = config.resolved_images()
    assert image.workload.dns_nameservers == ["8.8.8.8"]
    assert config.cache_dir() == tmp_path / "esgz"
    assert image.needs_workload


def error_of(text: str, source: str = "pipeline.yaml") -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config_text(text, source)
    return str(caught.value)


def test_missing_field_names_file_line_and_key() -> None:
    text = "images:\n  - source: a\n    target: b\n  - source: c\n"
    assert error_of(text) == "pipeline.yaml:4: images[1].target: field required"


def test_unknown_keys_are_rejected_at_their_line() -> None:
    text = "defaults:\n  oci: true\n  compresion_level: 3\nimages:\n  - {source: a, target: b}\n"
    assert error_of(text, "p.yml") == "p.yml:3: defaults.compresion_level: unknown key"
    text = "images:\n  - source: a\n    target: b\n    workload:\n      dns_nameserver: [x]\n"
    assert "5: images[0].workload.dns_nameserver: unknown key" in error_of(text)


def test_type_errors_and_all_problems_listed() -> None:
    text = "concurrency:\n  fetch: 0\nimages:\n  - source: a\n    target: b\n    format: gzip\n"
    message = error_of(text)
    assert "pipeline.yaml:2: concurrency.fetch:" in message
    assert "pipeline.yaml:6: images[0].format:" in message
    assert message.count("; ") == 1


def test_semantic_errors_point_at_the_setting() -> None:
    text = "defaults:\n  format: zstdchunked\nimages:\n  - {source: a, target: b}\n"
    assert error_of(text) == (
        "pipeline.yaml:2: defaults.format: the zstd:chunked format requires oci: true"
    )
    text = "images:\n  - source: a\n    target: b\n    compression_level: 12\n"
    assert error_of(text) == (
        "pipeline.yaml:4: images[0].compression_level: 12 is out of range for estargz (-2..9)"
    )
    text = "images:\n  - source: a\n    target: b\n    compression_level: 23\n"
    assert error_of(text) == (
        "pipeline.yaml:4: images[0].compression_level: input should be less than or equal to 22"
    )


def test_zstd_levels_follow_the_format_engine() -> None:
    for level in (-7, -3, 0, 22):
        text = (
            "defaults: {oci: true, format: zstdchunked}\n"
            f"images:\n  - source: a\n    target: b\n    compression_level: {level}\n"
        )
        (image,) = parse_config_text(text).resolved_images()
        assert ConvertOptions(format=image.format, compression_level=image.compression_level)


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_numbers_are_rejected(value: str) -> None:
    text = f"images:\n  - source: a\n    target: b\n    workload:\n      period: {value}\n"
    assert error_of(text) == (
        "pipeline.yaml:5: images[0].workload.period: input should be a finite number"
    )


def test_python_data_errors_name_python_fields() -> None:
    def error(data: dict[str, object]) -> str:
        with pytest.raises(ConfigError) as caught:
            config_from_data(data, source="options")
        return str(caught.value)

    image = {"source": "a", "target": "b"}
    message = error({"images": [{**image, "format": "zstdchunked"}]})
    assert message == "options: images[0].format: the zstd:chunked format requires oci=True"
    message = error({"images": [{**image, "workload": {"terminal": True}}]})
    assert message == "options: images[0].workload.terminal: requires interactive=True"
    message = error({"images": [{**image, "no_optimize": True, "record_out": "r"}]})
    assert message == (
        "options: images[0].record_out: needs the workload to run;"
        " it cannot be used with no_optimize=True"
    )
    message = error({"images": [{**image, "target": "http://localhost:5000/x:1"}]})
    assert message.startswith("options: images[0].target: plain_http=True is needed")
    data = {"images": [{**image, "workload": {"period": float("nan")}}]}
    with pytest.raises(ConfigError) as caught:
        config_from_data(data, source="options", vocabulary=IMAGE_KEYWORDS)
    assert str(caught.value) == "options: workload.period: input should be a finite number"
    for message in (
        error({"images": [{**image, "workload": {"period": float("nan")}}]}),
        error({"images": [{**image, "compression_level": 30}]}),
    ):
        assert "--" not in message


def test_http_reference_needs_plain_http() -> None:
    text = "images:\n  - source: a\n    target: http://localhost:5000/x:1\n"
    assert error_of(text) == (
        'pipeline.yaml:3: images[0].target: plain_http: true is needed to connect to "localhost:'
        '5000/x:1" using HTTP'
    )
    allowed = text.replace("images:", "defaults: {plain_http: true}\nimages:")
    assert parse_config_text(allowed).resolved_images()[0].target_ref


def test_bad_reference_and_platform() -> None:
    text = "images:\n  - source: 'UPPER/Case:!'\n    target: b\n    platforms: ['linux/*']\n"
    message = error_of(text)
    assert "pipeline.yaml:4: images[0].platforms:" in message
    text = "images:\n  - source: 'a b'\n    target: b\n"
    assert error_of(text).startswith("pipeline.yaml:2: images[0].source: invalid image reference")


def test_workload_rules() -> None:
    text = "images:\n  - source: a\n    target: b\n    workload: {gpus: all}\n"
    assert "images[0].workload.gpus: GPU passthrough is not supported by esgz" in error_of(text)
    text = "images:\n  - source: a\n    target: b\n    workload: {terminal: true}\n"
    assert error_of(text) == (
        "pipeline.yaml:4: images[0].workload.terminal: requires interactive: true"
    )
    # the rule holds for the merged workload: defaults give interactive, the image terminal
    text = (
        "defaults:\n  workload: {interactive: true}\n"
        "images:\n  - source: a\n    target: b\n    workload: {terminal: true}\n"
    )
    assert parse_config_text(text).resolved_images()[0].workload.terminal
    text = "images:\n  - source: a\n    target: b\n    workload: {entrypoint: '[1'}\n"
    assert "images[0].workload.entrypoint: cannot parse '[1'" in error_of(text)
    text = "images:\n  - source: a\n    target: b\n    workload:\n      mount: [type=bind]\n"
    assert "pipeline.yaml:5: images[0].workload.mount: 'type=bind': destination" in error_of(text)
    text = "images:\n  - source: a\n    target: b\n    workload: {add_hosts: 'h:notip'}\n"
    assert "is not an IP address" in error_of(text)
    text = "images:\n  - source: a\n    target: b\n    workload: {add_hosts: 'nohost'}\n"
    assert "cannot parse 'nohost' as extra host; must be \"host:IP\"" in error_of(text)
    text = "images:\n  - source: a\n    target: b\n    no_optimize: true\n    record_out: r\n"
    assert (
        "images[0].record_out: needs the workload to run; it cannot be used with no_optimize: true"
        in (error_of(text))
    )


def test_yaml_syntax_duplicates_and_shape() -> None:
    assert error_of("images: [\n  {source: a\n").startswith("pipeline.yaml:3: invalid YAML")
    assert error_of("images: []\nimages: []\n") == "pipeline.yaml:2: duplicate key images"
    assert error_of("- a\n- b\n") == "pipeline.yaml:1: a pipeline config must be a mapping"
    assert error_of("") == "pipeline.yaml: the pipeline config is empty"
    assert error_of("images: []\n").startswith("pipeline.yaml:1: images:")


def test_anchors_and_merge_keys_work() -> None:
    text = (
        "x-base: &base\n  oci: true\n  reuse: true\n"
        "images:\n  - <<: *base\n    source: a\n    target: b\n"
    )
    # x-base is an unknown top-level key: anchors belong inside known structure
    assert error_of(text) == "pipeline.yaml:1: x-base: unknown key"
    text = (
        "defaults: &d {oci: true}\n"
        "images:\n  - <<: *d\n    source: a\n    target: b\n    format: zstdchunked\n"
    )
    (image,) = parse_config_text(text).resolved_images()
    assert image.format == "zstdchunked"
    assert image.oci


@pytest.mark.anyio
async def test_load_config_file(tmp_path: Path) -> None:
    path = tmp_path / "pipe.yaml"
    path.write_text(GOOD)
    config = await load_config_file(path)
    assert len(config.images) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("images:\n  - source: a\n")
    with pytest.raises(ConfigError, match=rf"^{bad}:2: images\[0\].target: field required$"):
        await load_config_file(bad)
    with pytest.raises(ConfigError, match="cannot read pipeline config"):
        await load_config_file(tmp_path / "missing.yaml")


def test_rule_messages_in_each_vocabulary() -> None:
    template = "cannot be used with {no_optimize=true} or {record_in} {{as written}}"
    assert render(template, YAML) == (
        "cannot be used with no_optimize: true or record_in {as written}"
    )
    assert render(template, KEYWORDS) == (
        "cannot be used with no_optimize=True or record_in {as written}"
    )
    flags = cli_vocabulary({"record_in": "--record-in"}, {("format", "zstdchunked"): "--zstd"})
    assert (
        render(template, flags) == "cannot be used with --no-optimize or --record-in {as written}"
    )
    assert render("{format=zstdchunked} and {level=3}", flags) == "--zstd and --level 3"
    assert flags.label(("images", 0, "record_in")) == "--record-in"
