"""Fixtures for the oci tests: the sample images of tests.fixtures.images."""

from __future__ import annotations

from tests.fixtures.images import (  # noqa: F401  (fixtures used by the tests here)
    busybox_docker_image,
    busybox_image,
    busybox_mixed_image,
    multiplatform_image,
    python_image,
)
