"""Fixtures of the trio embedding tests: the sample images."""

from __future__ import annotations

from tests.fixtures.images import busybox_image  # noqa: F401  (fixture)
