"""Fixtures of the optimize tests: sample images, a registry, and ``esgz`` as a process."""

from __future__ import annotations

from tests.fixtures.images import (  # noqa: F401  (fixtures)
    busybox_image,
    multiplatform_image,
    python_image,
)
from tests.fixtures.multiarch import (  # noqa: F401  (fixtures)
    multiarch_busybox_image,
    multiarch_python_image,
    qemu_binfmt,
)
from tests.fixtures.registry import plain_registry  # noqa: F401  (fixtures)
