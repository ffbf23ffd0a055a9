from __future__ import annotations

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
    "WorkloadConfig",
    "CacheConfig",
    "ConcurrencyConfig",
    "RegistryHostConfig",
    # results
    "PipelineResult",
    "ImageResult",
    "ManifestResult",
    "LayerSummary",
    # events
    "Event",
    "Subscription",
    "ImageResolved",
    "BytesFetched",
    "LayerFetched",
    "LayerReused",
    "LayerConverted",
    "BytesUploaded",
    "LayerUploaded",
    "ImagePushed",
    "ImageDone",
    "PipelineDone",
    "WarningEvent",
    "WorkloadOutput",
    "ImageProfiled",
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
