"""The public surface of esgz.registry."""

from __future__ import annotations

import esgz.registry


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
