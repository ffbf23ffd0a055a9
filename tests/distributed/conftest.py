"""Fixtures of the distributed tests: sample images, real registries, Redis, workers."""

from __future__ import annotations

from tests.fixtures.images import busybox_image, multiplatform_image  # noqa: F401  (fixtures)
from tests.fixtures.registry import plain_registry, tls_registry  # noqa: F401  (fixtures)
from tests.fixtures.workers import redis_server  # noqa: F401  (fixture)
