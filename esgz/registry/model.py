"""The values the registry client takes and returns (no I/O, nothing imported but typing).

These are the one definition of each for all of esgz: stages and pipeline use
:data:`PushOutcome` and :data:`ProgressCallback` from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from esgz.registry.untrusted import parse_json

__all__ = ["BlobRef", "FetchedManifest", "ManifestInfo", "ProgressCallback", "PushOutcome"]

#: ``on_progress(digest, transferred, total)``: bytes of one blob moved so far.
ProgressCallback = Callable[[str, int, int], None]

#: What pushing a blob did: found it already there, mounted it from another repository,
#: or uploaded it.
PushOutcome = Literal["exists", "mounted", "uploaded"]


class BlobRef(Protocol):
    """Anything naming a blob by digest and size (OCI descriptors qualify)."""

    @property
    def digest(self) -> str:
        """The blob's digest, ``<algorithm>:<hex>``."""
        ...

    @property
    def size(self) -> int:
        """The blob's size in bytes."""
        ...


@dataclass(frozen=True, slots=True)
class ManifestInfo:
    """What a tag or digest resolves to, or where a pushed manifest landed."""

    digest: str
    media_type: str
    size: int


@dataclass(frozen=True, slots=True)
class FetchedManifest:
    """A manifest or index as served, with its verified digest."""

    digest: str
    media_type: str
    content: bytes

    def json(self) -> object:
        """The parsed JSON document (``None`` if it is not strict, readable JSON)."""
        return parse_json(self.content)
