"""esgz.pipeline exports exactly its public surface."""

from __future__ import annotations

import esgz.pipeline


def test_all_names_exist_and_are_public() -> None:
    assert esgz.pipeline.__all__ == sorted(esgz.pipeline.__all__)
    for name in esgz.pipeline.__all__:
        assert hasattr(esgz.pipeline, name), name
        assert not name.startswith("_")
    exported = {name for name in vars(esgz.pipeline) if not name.startswith("_")}
    modules = {"api", "cache", "config", "dedup", "events", "jobs", "results", "runner", "yamlfile"}
    assert exported - modules == set(esgz.pipeline.__all__)
