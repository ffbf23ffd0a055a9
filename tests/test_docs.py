"""Every command-line flag is in docs/cli.md and every config key in docs/pipeline.md."""

from __future__ import annotations

import re
from collections.abc import Iterator

import asyncclick as click
from pydantic import BaseModel

from esgz.cli.main import cli
from esgz.pipeline.config import PipelineConfig
from tests.fixtures.cache import REPO_ROOT


def _options(group: click.Group) -> Iterator[tuple[str, str]]:
    for name, command in group.commands.items():
        for param in command.params:
            if isinstance(param, click.Option):
                for flag in (*param.opts, *param.secondary_opts):
                    if flag.startswith("--"):
                        yield name, flag


def _keys(model: type[BaseModel]) -> Iterator[tuple[str, type[BaseModel] | None]]:
    for name, field in model.model_fields.items():
        nested = [
            arg
            for arg in (field.annotation, *getattr(field.annotation, "__args__", ()))
            if isinstance(arg, type) and issubclass(arg, BaseModel)
        ]
        yield name, nested[0] if nested else None


def _all_keys(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[str]:
    seen.add(model)
    keys = set()
    for name, nested in _keys(model):
        keys.add(name)
        if nested is not None and nested not in seen:
            keys |= _all_keys(nested, seen)
    return keys


def test_every_flag_is_documented() -> None:
    text = (REPO_ROOT / "docs" / "cli.md").read_text()
    missing = sorted(
        f"{command} {flag}"
        for command, flag in _options(cli)
        if not re.search(rf"{re.escape(flag)}(?![\w-])", text)
    )
    assert missing == []


def test_every_config_key_is_documented() -> None:
    text = (REPO_ROOT / "docs" / "pipeline.md").read_text()
    keys = _all_keys(PipelineConfig, set())
    assert {"images", "workload", "period", "broker"} <= keys  # the walk reaches the nesting
    missing = sorted(key for key in keys if not re.search(rf"\b{re.escape(key)}\b", text))
    assert missing == []
