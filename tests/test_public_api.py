from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterator

import esgz
import esgz.errors

EXPECTED = {
    # the friendly API
    "convert",
    "optimize",
    "run_pipeline",
    "Pipeline",
    "load_config_file",
    "parse_config_text",
    # the config model
    "PipelineConfig",
    "ImageSpec",
    "DefaultsConfig",
    "HostEntry",
    "MountSpec",
    "WorkloadOptions",
    "CacheConfig",
    "ConcurrencyConfig",
    "ExecutorConfig",
    "RegistryHostConfig",
    # results
    "PipelineResult",
    "ImageResult",
    "ManifestResult",
    "LayerSummary",
    # events
    "Event",
    "EventBus",
    "ProgressEvent",
    "Subscription",
    "ImageResolved",
    "LayerPhase",
    "BytesFetched",
    "LayerFetched",
    "LayerReused",
    "BytesConverted",
    "LayerConverted",
    "BytesUploaded",
    "LayerUploaded",
    "ImagePushed",
    "ImageDone",
    "PipelineDone",
    "WarningEvent",
    "WorkloadOutput",
    "ProfileProgress",
    "ImageProfiled",
    "PlatformExecution",
    "__version__",
}


def test_all_is_exactly_the_public_api() -> None:
    assert set(esgz.__all__) == EXPECTED | set(esgz.errors.__all__)
    assert len(esgz.__all__) == len(set(esgz.__all__))
    for name in esgz.__all__:
        assert hasattr(esgz, name), name


def test_every_error_is_exported_from_the_top() -> None:
    for name in esgz.errors.__all__:
        assert getattr(esgz, name) is getattr(esgz.errors, name)


def test_building_blocks_do_not_import_the_pipeline() -> None:
    import subprocess
    import sys

    code = "import sys, esgz.estargz, esgz.oci; print('esgz.pipeline' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_unknown_attribute_is_an_attribute_error() -> None:
    import pytest

    with pytest.raises(AttributeError, match="no_such_name"):
        _ = esgz.no_such_name  # type: ignore[attr-defined]


# Public methods whose return types are the runner's view of the config: they belong to
# the framework layer (esgz.pipeline.config.ResolvedImage, esgz.runtime.WorkloadOptions)
# and are not part of what an application calls.
FRAMEWORK_HELPERS = {"PipelineConfig.resolved_images"}


def _leaf_types(hint: object) -> Iterator[type]:
    origin = typing.get_origin(hint)
    if origin is not None:
        if isinstance(origin, type):
            yield origin
        for argument in typing.get_args(hint):
            yield from _leaf_types(argument)
    elif isinstance(hint, type):
        yield hint


def _signatures(name: str, obj: object) -> Iterator[tuple[str, Callable[..., object] | type]]:
    """Every callable (and typed class body) that makes up the public surface of ``obj``."""
    if inspect.isfunction(obj):
        yield name, obj
        return
    assert inspect.isclass(obj), name
    yield f"{name} fields", obj
    yield f"{name}()", obj.__init__
    for attribute, value in vars(obj).items():
        if attribute.startswith("_") or f"{name}.{attribute}" in FRAMEWORK_HELPERS:
            continue
        if isinstance(value, property):
            value = value.fget
        if isinstance(value, classmethod | staticmethod):
            value = value.__func__
        if inspect.isfunction(value):
            yield f"{name}.{attribute}", value


def test_every_type_in_a_public_signature_is_exported() -> None:
    """A user can name every type the API takes or returns without leaving ``esgz``."""
    missing: dict[str, list[str]] = {}
    for name in esgz.__all__:
        obj = getattr(esgz, name)
        if name == "__version__" or (inspect.isclass(obj) and issubclass(obj, BaseException)):
            continue
        for where, target in _signatures(name, obj):
            for key, hint in typing.get_type_hints(target).items():
                if key.startswith("_"):
                    continue
                for leaf in _leaf_types(hint):
                    exported = getattr(esgz, leaf.__name__, None) is leaf
                    if leaf.__module__.startswith("esgz") and not exported:
                        missing.setdefault(leaf.__qualname__, []).append(f"{where}: {key}")
            if inspect.isclass(target):
                for base in target.__mro__[1:]:
                    public = not base.__name__.startswith("_")
                    exported = getattr(esgz, base.__name__, None) is base
                    if base.__module__.startswith("esgz") and public and not exported:
                        missing.setdefault(base.__qualname__, []).append(f"base of {name}")
    assert missing == {}


def test_the_signature_walk_sees_the_embedding_api() -> None:
    """The walk above reaches what it must check (a guard against a vacuous pass)."""
    seen = {
        leaf
        for _, target in _signatures("Pipeline", esgz.Pipeline)
        for hint in typing.get_type_hints(target).values()
        for leaf in _leaf_types(hint)
    }
    assert {esgz.Subscription, esgz.PipelineResult, esgz.PipelineConfig} <= seen
    hints = typing.get_type_hints(esgz.convert)
    assert esgz.EventBus in set(_leaf_types(hints["events"]))


def test_no_module_of_esgz_imports_trio_or_aiofiles() -> None:
    """trio is an extra (esgz runs under it through anyio); aiofiles is asyncio-only."""
    import subprocess
    import sys

    code = (
        "import importlib, pkgutil, sys, esgz\n"
        "for module in pkgutil.walk_packages(esgz.__path__, 'esgz.'):\n"
        "    importlib.import_module(module.name)\n"
        "print(len(sys.modules), 'trio' in sys.modules, 'aiofiles' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules, trio, aiofiles = out.stdout.split()
    assert int(modules) > 100  # the walk imported the package
    assert (trio, aiofiles) == ("False", "False")
