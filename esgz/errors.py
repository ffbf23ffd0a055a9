"""The exceptions esgz raises on purpose.

Every error esgz expects to happen (bad input, a registry saying no, a workload that
cannot start) is an :class:`EsgzError`; anything else is a bug and keeps its traceback.
The CLI prints an ``EsgzError`` as one line (``str(err)``) and exits non-zero.

The hierarchy::

    EsgzError
    ├── ConfigError            bad pipeline config, flag or option value
    ├── ImageReferenceError    a reference (registry or local://) that does not parse
    ├── FormatError            layer bytes that are not what they claim to be
    │   └── VerificationError  a digest or size that does not match
    ├── ImageError             manifests, indexes and configs that esgz cannot use
    │   └── PlatformError      no manifest matches the requested platform
    ├── LayoutError            an OCI image-layout directory that is unusable
    ├── RegistryError          a registry answered with an error or could not be reached
    │   ├── AuthError          credentials missing, wrong, or refused
    │   └── NotFoundError      the registry has no such manifest or blob
    ├── WorkloadError          the workload to profile is invalid, or failed
    ├── SandboxError           the container sandbox could not be set up or torn down
    ├── StorageError           a disk is full, over quota or read-only (names the path)
    └── PipelineError          a stage failed; wraps the cause with image/layer/stage

Each exception carries the context it happened in as keyword attributes (``image``,
``layer``, ``stage``, ``registry``), and :meth:`EsgzError.__str__` puts that context in
front of the message so that one line says what went wrong and where.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "ConfigError",
    "EsgzError",
    "FormatError",
    "ImageError",
    "ImageReferenceError",
    "LayoutError",
    "NotFoundError",
    "PipelineError",
    "PlatformError",
    "RegistryError",
    "SandboxError",
    "StorageError",
    "VerificationError",
    "WorkloadError",
]


class EsgzError(Exception):
    """Root of every error esgz raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        image: str | None = None,
        layer: str | None = None,
        stage: str | None = None,
        registry: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.image = image
        self.layer = layer
        self.stage = stage
        self.registry = registry

    def context(self) -> str:
        """The ``image … layer … stage …`` prefix, or an empty string."""
        parts = [
            f"{label} {value}"
            for label, value in (
                ("image", self.image),
                ("layer", self.layer),
                ("stage", self.stage),
                ("registry", self.registry),
            )
            if value
        ]
        return ", ".join(parts)

    def __str__(self) -> str:
        where = self.context()
        return f"{where}: {self.message}" if where else self.message


class ConfigError(EsgzError):
    """A pipeline config, command-line flag or option value is invalid."""


class ImageReferenceError(EsgzError, ValueError):
    """An image reference does not parse (named so as not to shadow the builtin)."""


class FormatError(EsgzError):
    """Layer bytes are malformed, unsupported, or not the format they claim to be."""


class VerificationError(FormatError):
    """A digest, size or TOC check failed."""


class ImageError(EsgzError):
    """A manifest, index or image config is unusable (unknown media type, schema 1, ...)."""


class PlatformError(ImageError):
    """No manifest in an index matches the requested platform(s)."""


class LayoutError(EsgzError):
    """An OCI image-layout directory is missing, malformed, or cannot be written."""


class RegistryError(EsgzError):
    """A registry answered with an error, or could not be reached."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        image: str | None = None,
        layer: str | None = None,
        stage: str | None = None,
        registry: str | None = None,
    ) -> None:
        super().__init__(message, image=image, layer=layer, stage=stage, registry=registry)
        self.status_code = status_code


class AuthError(RegistryError):
    """Credentials are missing, wrong, or refused by the registry."""


class NotFoundError(RegistryError):
    """The registry has no such repository, manifest or blob."""


class WorkloadError(EsgzError):
    """The workload to profile is invalid (bad JSON, mount, user) or failed to run."""


class SandboxError(EsgzError):
    """The profiling sandbox (mounts, runc, fanotify, network) failed."""


class StorageError(EsgzError):
    """A file system esgz writes to is full, over quota or read-only; ``path`` says where."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        image: str | None = None,
        layer: str | None = None,
        stage: str | None = None,
        registry: str | None = None,
    ) -> None:
        super().__init__(message, image=image, layer=layer, stage=stage, registry=registry)
        self.path = path


class PipelineError(EsgzError):
    """A pipeline stage failed; ``__cause__`` holds the underlying error."""
