"""Parse image references: registry references and ``local://`` OCI image layouts.

Registry references follow the Distribution reference grammar::

    reference  := [scheme] name [":" tag] ["@" digest]
    scheme     := "http://" | "https://"
    name       := [domain "/"] path            (whole name at most 255 characters)
    domain     := host [":" port]              (port 1..65535)
    host       := domain-name | IPv4 | "[" IPv6 "]"
    path       := component ("/" component)*   component: [a-z0-9]+ ((\\.|_|__|-+)[a-z0-9]+)*
    tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest     := algorithm ":" hex            (sha256 / sha512, lowercase hex)

Docker Hub normalisation, as ``docker`` and containerd do: the first path component is
a registry host only if it contains ``.`` or ``:``, is ``localhost``, or has uppercase
letters; otherwise the registry is ``docker.io`` (connected to as
``registry-1.docker.io``) and a one-component repository gets the ``library/`` prefix
(``ubuntu`` → ``docker.io/library/ubuntu``). ``index.docker.io`` is an alias of
``docker.io``. With neither tag nor digest the tag is ``latest``; with only a digest the
tag stays ``None``. ``http://`` sets :attr:`RegistryReference.plain_http`;
``https://`` is accepted and means the default (TLS).

OCI image layouts are written ``local://PATH[:TAG][@DIGEST]``:

* a digest is split off at the last ``@`` when what follows it is a valid digest;
* then a tag is split off at the last ``:`` of the *last path component* (text after the
  final ``/``), so ``local:///srv/a:b/img`` has no tag and ``local:///srv/img:v1`` has
  tag ``v1``; a last component with a ``:`` but an invalid tag after it is an error.
  A directory whose own name contains ``:`` cannot be named directly — use a parent
  symlink or a trailing ``/`` (``local:///srv/a:b/`` is the directory ``a:b``, no tag);
* ``local:///abs/dir`` is absolute; ``local://dir`` (no third ``/``) is a path relative
  to the current working directory, kept relative in :attr:`LayoutReference.path` (the
  seed ``ctr-remote`` accepted both forms);
* the tag is optional: as a source, the layout picks the image tagged ``latest`` or its
  only image (see :mod:`esgz.oci.layout`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from esgz.errors import ImageReferenceError
from esgz.oci.digest import parse_digest

__all__ = [
    "DOCKER_HUB_ENDPOINT",
    "DOCKER_HUB_REGISTRY",
    "LayoutReference",
    "RegistryReference",
    "parse_layout_reference",
    "parse_reference",
    "parse_registry_reference",
]

DOCKER_HUB_REGISTRY = "docker.io"
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
DEFAULT_TAG = "latest"
LOCAL_PREFIX = "local://"
MAX_NAME_LENGTH = 255

_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DOMAIN_COMPONENT_RE = re.compile(r"^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])$")
_IPV6_RE = re.compile(r"^\[[a-fA-F0-9:]+\]$")
_IDENTIFIER_RE = re.compile(r"^[a-f0-9]{64}$")
_DIGEST_SHAPE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]+$")


@dataclass(frozen=True, slots=True)
class RegistryReference:
    """An image in a registry: ``registry/repository[:tag][@digest]``.

    ``registry`` is the canonical host[:port] (``docker.io`` for Docker Hub);
    ``endpoint`` is where to connect. When both tag and digest are set, the digest
    decides what is fetched and the tag is informative (as in ``docker pull``).
    """

    registry: str
    repository: str
    tag: str | None = DEFAULT_TAG
    digest: str | None = None
    plain_http: bool = False

    @property
    def endpoint(self) -> str:
        """host[:port] to connect to (``registry-1.docker.io`` for Docker Hub)."""
        return DOCKER_HUB_ENDPOINT if self.registry == DOCKER_HUB_REGISTRY else self.registry

    @property
    def name(self) -> str:
        """``registry/repository``, e.g. ``docker.io/library/ubuntu``."""
        return f"{self.registry}/{self.repository}"

    @property
    def object(self) -> str:
        """What to ask the registry for: the digest if set, else the tag."""
        if self.digest is not None:
            return self.digest
        return self.tag or DEFAULT_TAG

    def with_tag(self, tag: str | None) -> RegistryReference:
        """A copy with ``tag`` and no digest."""
        return RegistryReference(self.registry, self.repository, tag, None, self.plain_http)

    def with_digest(self, digest: str) -> RegistryReference:
        """A copy pinned to ``digest`` (the tag is kept)."""
        return RegistryReference(self.registry, self.repository, self.tag, digest, self.plain_http)

    def __str__(self) -> str:
        scheme = "http://" if self.plain_http else ""
        return scheme + self.name + _tag_and_digest(self.tag, self.digest)


@dataclass(frozen=True, slots=True)
class LayoutReference:
    """An image in an OCI image-layout directory: ``local://path[:tag][@digest]``."""

    path: Path
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        text = LOCAL_PREFIX + str(self.path)
        if self.tag is None and ":" in self.path.name:
            text += "/"  # keeps a ':' in the directory name from reading as a tag
        return text + _tag_and_digest(self.tag, self.digest)


def _tag_and_digest(tag: str | None, digest: str | None) -> str:
    """The ``:tag`` and ``@digest`` suffixes of a reference's text form."""
    return (f":{tag}" if tag is not None else "") + (f"@{digest}" if digest is not None else "")


def parse_reference(text: str) -> RegistryReference | LayoutReference:
    """Parse a registry reference or a ``local://`` layout reference."""
    if text.startswith(LOCAL_PREFIX):
        return parse_layout_reference(text)
    return parse_registry_reference(text)


def parse_registry_reference(text: str) -> RegistryReference:
    """Parse ``[http://|https://]host[:port]/repo[:tag][@digest]`` (see module docs)."""
    original = text
    if not text or not text.strip():
        raise ImageReferenceError("empty image reference")
    if text != text.strip():
        raise _error(original, "surrounding whitespace")
    plain_http = False
    if text.startswith("http://"):
        plain_http, text = True, text[len("http://") :]
    elif text.startswith("https://"):
        text = text[len("https://") :]
    elif "://" in text:
        raise _error(original, f"unsupported scheme {text.split('://', 1)[0]!r}://")
    if not text:
        raise _error(original, "nothing after the scheme")

    remainder, digest = _split_digest(original, text)
    name, tag = _split_tag(original, remainder)
    if not name:
        raise _error(original, "missing repository name")
    if _IDENTIFIER_RE.match(name):
        raise _error(original, "a 64-character hex string is an image ID, not a repository")
    registry, repository = _split_registry(original, name)
    if len(name) > MAX_NAME_LENGTH:
        raise _error(original, f"repository name longer than {MAX_NAME_LENGTH} characters")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return RegistryReference(registry, repository, tag, digest, plain_http)


def parse_layout_reference(text: str) -> LayoutReference:
    """Parse ``local://PATH[:TAG][@DIGEST]`` (see module docs for the splitting rules)."""
    if not text.startswith(LOCAL_PREFIX):
        raise _error(text, f"layout references start with {LOCAL_PREFIX}")
    rest = text[len(LOCAL_PREFIX) :]
    digest: str | None = None
    at = rest.rfind("@")
    if at != -1 and _DIGEST_SHAPE_RE.match(rest[at + 1 :]):
        digest = _checked_digest(text, rest[at + 1 :])
        rest = rest[:at]
    tag: str | None = None
    last_slash = rest.rfind("/")
    last_component = rest[last_slash + 1 :]
    if ":" in last_component:
        colon = last_slash + 1 + last_component.rfind(":")
        tag = rest[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise _error(text, f"invalid tag {tag!r}: {_TAG_RULE}")
        rest = rest[:colon]
    if not rest:
        raise _error(text, "missing layout directory path")
    return LayoutReference(Path(rest), tag, digest)


_TAG_RULE = "a tag is 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'"


def _error(reference: str, problem: str) -> ImageReferenceError:
    return ImageReferenceError(f"invalid image reference {reference!r}: {problem}")


def _checked_digest(reference: str, digest: str) -> str:
    try:
        parse_digest(digest)
    except ValueError as err:
        raise _error(reference, str(err)) from None
    return digest


def _split_digest(reference: str, text: str) -> tuple[str, str | None]:
    if "@" not in text:
        return text, None
    remainder, digest = text.split("@", 1)
    if not digest:
        raise _error(reference, "empty digest after '@'")
    if "@" in digest:
        raise _error(reference, "more than one '@'")
    if not _DIGEST_SHAPE_RE.match(digest):
        raise _error(reference, f"invalid digest {digest!r}: expected <algorithm>:<hex>")
    return remainder, _checked_digest(reference, digest)


def _split_tag(reference: str, text: str) -> tuple[str, str | None]:
    last_slash = text.rfind("/")
    colon = text.rfind(":")
    if colon <= last_slash:  # no ':' after the last '/': a port, not a tag
        return text, None
    tag = text[colon + 1 :]
    if not tag:
        raise _error(reference, "empty tag after ':'")
    if len(tag) > 128:
        raise _error(reference, f"tag longer than 128 characters ({len(tag)})")
    if not _TAG_RE.match(tag):
        raise _error(reference, f"invalid tag {tag!r}: {_TAG_RULE}")
    return text[:colon], tag


def _split_registry(reference: str, name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        registry = _checked_domain(reference, first)
        repository = rest
    else:
        registry, repository = DOCKER_HUB_REGISTRY, name
    if registry == "index.docker.io":
        registry = DOCKER_HUB_REGISTRY
    _check_repository(reference, repository)
    if registry == DOCKER_HUB_REGISTRY and "/" not in repository:
        repository = f"library/{repository}"
    return registry, repository


def _checked_domain(reference: str, domain: str) -> str:
    host, port = domain, None
    if domain.startswith("["):
        end = domain.find("]")
        if end == -1:
            raise _error(reference, f"invalid registry host {domain!r}: unclosed '['")
        host, after = domain[: end + 1], domain[end + 1 :]
        if after:
            if not after.startswith(":"):
                raise _error(reference, f"invalid registry host {domain!r}")
            port = after[1:]
        if not _IPV6_RE.match(host):
            raise _error(reference, f"invalid IPv6 registry host {host!r}")
    else:
        if ":" in domain:
            host, port = domain.split(":", 1)
        if not host:
            raise _error(reference, f"empty registry host in {domain!r}")
        for component in host.split("."):
            if not _DOMAIN_COMPONENT_RE.match(component):
                raise _error(reference, f"invalid registry host {host!r}")
    if port is not None:
        if not port.isascii() or not port.isdigit():
            raise _error(reference, f"invalid registry port {port!r}")
        if not 1 <= int(port) <= 65535:
            raise _error(reference, f"registry port {port} out of range 1-65535")
    return domain


def _check_repository(reference: str, repository: str) -> None:
    if not repository:
        raise _error(reference, "missing repository name")
    for component in repository.split("/"):
        if not component:
            raise _error(reference, "empty path component in repository name")
        if component != component.lower() and _COMPONENT_RE.match(component.lower()):
            raise _error(reference, f"repository name must be lowercase: {repository!r}")
        if not _COMPONENT_RE.match(component):
            raise _error(
                reference,
                f"invalid repository path component {component!r}: lowercase letters,"
                " digits and single separators ('.', '_', '__', '-') only",
            )
