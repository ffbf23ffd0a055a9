"""The public surface of esgz.registry."""

from __future__ import annotations

import json
import subprocess
import sys

import esgz.registry
from tests.fixtures.cache import REPO_ROOT


def test_all_is_the_public_api() -> None:
    assert sorted(esgz.registry.__all__) == [
        "BlobRef",
        "Challenge",
        "CredentialProvider",
        "Credentials",
        "DockerConfigCredentials",
        "FetchedManifest",
        "ManifestInfo",
        "ProgressCallback",
        "PushOutcome",
        "RegistryAuth",
        "RegistryClient",
        "RegistryOptions",
        "RetryPolicy",
        "StaticCredentials",
        "parse_www_authenticate",
    ]
    for name in esgz.registry.__all__:
        assert getattr(esgz.registry, name) is not None


def test_value_types_import_without_the_client() -> None:
    """esgz.registry.model (PushOutcome, ProgressCallback, ...) loads no httpx, no client."""
    code = (
        "import json, sys; from esgz.registry.model import PushOutcome, ProgressCallback; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    modules = json.loads(
        subprocess.run(
            [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, check=True
        ).stdout
    )
    assert "httpx" not in modules
    assert [m for m in modules if m.startswith("esgz.registry")] == [
        "esgz.registry",
        "esgz.registry.model",
        "esgz.registry.untrusted",
    ]
    assert set(esgz.registry._HOMES) == set(esgz.registry.__all__)
