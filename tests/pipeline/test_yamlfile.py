"""YAML documents that would exhaust the stack or the memory are refused, naming the line."""

from __future__ import annotations

import time

import pytest

from esgz.errors import ConfigError
from esgz.pipeline.config import load_config_file, parse_config_text
from esgz.pipeline.yamlfile import (
    MAX_ALIAS_VALUES,
    MAX_DEPTH,
    MAX_YAML_CHARS,
    YamlProblem,
    load_yaml_with_lines,
)


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config_text(text)
    return str(info.value)


def test_an_alias_inside_the_collection_it_names_is_refused() -> None:
    message = "invalid YAML: alias *a refers to a collection that contains it"
    assert error_of("a: &a [*a]\n") == f"pipeline.yaml:1: {message}"
    assert error_of("x: 1\nm: &a\n  k: {<<: *a}\n") == f"pipeline.yaml:3: {message}"


def test_billion_laughs_is_refused_quickly() -> None:
    # 406 bytes that expand to 9**9 values
    lines = ["a: &a [x,x,x,x,x,x,x,x,x]"]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]")
    text = "\n".join(lines) + "\n"
    assert len(text) < 500
    started = time.monotonic()
    message = error_of(text)
    assert time.monotonic() - started < 5
    assert message == (
        f"pipeline.yaml:6: invalid YAML: aliases expand to more than {MAX_ALIAS_VALUES}"
        " values (at *e)"
    )


def test_deep_nesting_is_refused_with_its_line() -> None:
    deep_flow = "images: " + "[" * 100_000 + "]" * 100_000 + "\n"
    assert (
        error_of(deep_flow)
        == f"pipeline.yaml:1: invalid YAML: nested more than {MAX_DEPTH} levels deep"
    )
    deep_block = "".join("  " * level + "k:\n" for level in range(2000))
    assert error_of(deep_block) == (
        f"pipeline.yaml:{MAX_DEPTH + 1}: invalid YAML: nested more than {MAX_DEPTH} levels deep"
    )
    # aliases count with the depth of what they stand for
    inner = "[" * 40 + "]" * 40
    text = f"a: &a {inner}\nb: {'[' * 30}*a{']' * 30}\n"
    assert error_of(text) == (
        f"pipeline.yaml:2: invalid YAML: nested more than {MAX_DEPTH} levels deep (at *a)"
    )


def test_huge_documents_are_refused() -> None:
    with pytest.raises(YamlProblem, match="longer than 16 MiB"):
        load_yaml_with_lines("#" * (MAX_YAML_CHARS + 1))


def test_reasonable_anchors_merges_and_nesting_still_work() -> None:
    data, lines = load_yaml_with_lines(
        "base: &b {x: 1, y: [1, 2]}\nuse:\n  - <<: *b\n    z: 3\n  - *b\n"
        + "deep: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n"
    )  # fmt: skip
    assert data["use"] == [{"x": 1, "y": [1, 2], "z": 3}, {"x": 1, "y": [1, 2]}]
    assert lines.line_of(("use", 1)) is not None
    many = "v: &v [1, 2, 3]\nall: [" + ", ".join(["*v"] * 1000) + "]\n"
    data, _ = load_yaml_with_lines(many)
    assert len(data["all"]) == 1000


@pytest.mark.anyio
async def test_endless_config_file_is_not_read_whole() -> None:
    with pytest.raises(ConfigError, match=r"^/dev/zero: the document is longer than 16 MiB$"):
        await load_config_file("/dev/zero")


@pytest.mark.parametrize("bad", ["\udcc6", "\x07", "\ufffe"])
def test_unprintable_characters_are_refused_with_their_line(bad: str) -> None:
    text = f"images:\n  - source: local:///a\n    target: local:///b{bad}\n"
    with pytest.raises(ConfigError, match=r"^pipeline\.yaml:3: invalid YAML: .*#x"):
        parse_config_text(text)
