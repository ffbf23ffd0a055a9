"""Fixtures of the pipeline tests: sample images and a real registry."""

from __future__ import annotations

from tests.fixtures.images import (  # noqa: F401  (fixtures)
    busybox_docker_image,
    busybox_image,
    multiplatform_image,
    python_image,
)
from tests.fixtures.registry import plain_registry  # noqa: F401  (fixture)
