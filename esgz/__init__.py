"""esgz: make container images lazy-pullable.

esgz converts OCI/Docker images into eStargz (and zstd:chunked) layers and can optimize
them against a workload so that the files it reads are prefetched at container start.
"""

from __future__ import annotations

from esgz.errors import EsgzError

__version__ = "0.1.0.dev0"

__all__ = ["EsgzError", "__version__"]
