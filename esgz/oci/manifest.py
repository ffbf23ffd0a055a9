"""Descriptors, image manifests, indexes and image configs: parse, edit, serialise.

Every model keeps the JSON object it was parsed from (``raw``), so fields esgz does not
know survive a round trip: :meth:`to_json` writes the known fields from the model and
then the remaining raw fields in their original order.

Serialisation (:func:`to_bytes`) is compact UTF-8 JSON exactly as Go's
``encoding/json`` writes it (:mod:`esgz.oci.gojson`: HTML characters escaped, Go's
number and string forms).
Known keys are written in the order of the Go (ocispec) structs containerd marshals —
also for Docker-typed documents, whose Docker-written form has ``size`` before ``digest``:

* descriptor: ``mediaType, digest, size, urls, annotations, data, platform, artifactType``
* platform: ``architecture, os, os.version, os.features, variant``
* manifest: ``schemaVersion, mediaType, artifactType, config, layers, subject, annotations``
* index: ``schemaVersion, mediaType, artifactType, manifests, subject, annotations``

Annotation keys are sorted (Go marshals maps sorted). Empty optional fields are omitted
(``omitempty``); a ``mediaType`` absent from a parsed OCI manifest or index stays absent.
Unknown keys follow the known ones, in their original order.

Parsing raises :class:`~esgz.errors.ImageError` with one line for malformed JSON, a
``schemaVersion`` other than 2, Docker schema 1, or fields of the wrong type.

Image configs are handled as raw JSON: :class:`ImageConfig` reads what esgz needs
(``rootfs.diff_ids``, platform, the run config) and :func:`rewrite_config` rewrites
``rootfs.diff_ids`` exactly as containerd's image converter does (see its docstring).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from esgz.errors import ImageError
from esgz.oci import gojson, mediatypes
from esgz.oci.digest import parse_digest, sha256_of
from esgz.oci.platform import Platform

__all__ = [
    "Descriptor",
    "ImageConfig",
    "Index",
    "Manifest",
    "digest_of",
    "go_json_bytes",
    "parse_index",
    "parse_json_object",
    "parse_manifest",
    "parse_manifest_or_index",
    "rewrite_config",
    "to_bytes",
]


def go_json_bytes(obj: Any, *, sort_keys: bool = False) -> bytes:
    """Compact UTF-8 JSON as Go's ``json.Marshal`` writes it (see :mod:`esgz.oci.gojson`)."""
    return gojson.dumps(obj, sort_keys=sort_keys)


def parse_json_object(data: bytes, what: str) -> dict[str, Any]:
    """``data`` decoded as a JSON object; ImageError naming ``what`` otherwise."""
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ImageError(f"{what} is not valid JSON: {err}") from None
    except RecursionError:
        raise ImageError(f"{what} is nested too deeply") from None
    if not isinstance(obj, dict):
        raise ImageError(f"{what} must be a JSON object, got {type(obj).__name__}")
    return obj


def _string(obj: Mapping[str, Any], key: str, what: str, *, required: bool = False) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise ImageError(f"{what} has no {key!r}")
        return ""
    if not isinstance(value, str):
        raise ImageError(f"{what} field {key!r} must be a string")
    return value


def _annotations(obj: Mapping[str, Any], what: str) -> dict[str, str]:
    value = obj.get("annotations")
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ImageError(f"{what} annotations must be an object of strings")
    return dict(value)


def _sorted(annotations: Mapping[str, str]) -> dict[str, str]:
    return {key: annotations[key] for key in sorted(annotations)}


def _with_unknown(known: dict[str, Any], raw: Mapping[str, Any], names: Sequence[str]) -> None:
    for key, value in raw.items():
        if key not in names and key not in known:
            known[key] = value


@dataclass(frozen=True, slots=True)
class Descriptor:
    """A content descriptor (OCI image spec): what a blob is, where, and how big."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Platform | None = None
    urls: tuple[str, ...] = ()
    artifact_type: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    _KEYS = (
        "mediaType",
        "digest",
        "size",
        "urls",
        "annotations",
        "data",
        "platform",
        "artifactType",
    )

    @classmethod
    def from_json(cls, obj: object, what: str = "descriptor") -> Descriptor:
        """Read a descriptor object; ImageError if a field is missing or malformed."""
        if not isinstance(obj, dict):
            raise ImageError(f"{what} must be a JSON object")
        digest = _string(obj, "digest", what, required=True)
        try:
            parse_digest(digest)
        except ValueError as err:
            raise ImageError(f"{what}: {err}") from None
        size = obj.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ImageError(f"{what} {digest} has no valid 'size'")
        urls = obj.get("urls") or []
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise ImageError(f"{what} {digest} 'urls' must be a list of strings")
        platform = obj.get("platform")
        return cls(
            media_type=_string(obj, "mediaType", what, required=True),
            digest=digest,
            size=size,
            annotations=_annotations(obj, what),
            platform=None if platform is None else Platform.from_json(platform),
            urls=tuple(urls),
            artifact_type=_string(obj, "artifactType", what),
            raw=dict(obj),
        )

    def to_json(self) -> dict[str, Any]:
        """The descriptor JSON object (see the module docs for key order)."""
        obj: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.urls:
            obj["urls"] = list(self.urls)
        if self.annotations:
            obj["annotations"] = _sorted(self.annotations)
        if "data" in self.raw and self.raw.get("digest") == self.digest:
            obj["data"] = self.raw["data"]
        if self.platform is not None:
            obj["platform"] = self.platform.to_json()
        if self.artifact_type:
            obj["artifactType"] = self.artifact_type
        _with_unknown(obj, self.raw, self._KEYS)
        return obj


def _schema_version(obj: Mapping[str, Any], what: str) -> None:
    version = obj.get("schemaVersion")
    if version == 1:
        raise ImageError(
            f"{what} is Docker schema 1, which is not supported;"
            " push the image again with a current client to get schema 2"
        )
    if version != 2 or isinstance(version, bool):
        raise ImageError(f"{what} has schemaVersion {version!r}, expected 2")


def _descriptor_list(obj: Mapping[str, Any], key: str, what: str) -> tuple[Descriptor, ...]:
    value = obj.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ImageError(f"{what} field {key!r} must be a list")
    return tuple(
        Descriptor.from_json(item, f"{what} {key}[{position}]")
        for position, item in enumerate(value)
    )


def _optional_descriptor(obj: Mapping[str, Any], key: str, what: str) -> Descriptor | None:
    value = obj.get(key)
    return None if value is None else Descriptor.from_json(value, f"{what} {key}")


@dataclass(frozen=True, slots=True)
class Manifest:
    """An image manifest (OCI image manifest or Docker schema 2 manifest)."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)
    subject: Descriptor | None = None
    artifact_type: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    _KEYS = (
        "schemaVersion",
        "mediaType",
        "artifactType",
        "config",
        "layers",
        "subject",
        "annotations",
    )

    @property
    def is_docker(self) -> bool:
        """Whether this is a Docker schema 2 manifest."""
        return self.media_type == mediatypes.DOCKER_MANIFEST

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], media_type: str | None = None) -> Manifest:
        """Build from a parsed JSON object; ``media_type`` is used when it has none."""
        what = "image manifest"
        _schema_version(obj, what)
        declared = _string(obj, "mediaType", what)
        effective = declared or media_type or mediatypes.OCI_MANIFEST
        mediatypes.reject_schema1(effective)
        if not mediatypes.is_manifest(effective):
            raise ImageError(f"{what} has unsupported media type {effective!r}")
        if "manifests" in obj:
            raise ImageError(f"{what} has 'manifests': it looks like an index")
        if obj.get("config") is None:
            raise ImageError(f"{what} has no 'config'")
        return cls(
            declared,
            Descriptor.from_json(obj["config"], f"{what} config"),
            _descriptor_list(obj, "layers", what),
            *_document_tail(obj, what),
        )

    def to_json(self) -> dict[str, Any]:
        """The manifest JSON object (see the module docs for key order)."""
        body = {"config": self.config.to_json(), "layers": [d.to_json() for d in self.layers]}
        return _document_json(self, body, self._KEYS)


@dataclass(frozen=True, slots=True)
class Index:
    """An image index (OCI index or Docker manifest list)."""

    media_type: str
    manifests: tuple[Descriptor, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)
    subject: Descriptor | None = None
    artifact_type: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    _KEYS = (
        "schemaVersion",
        "mediaType",
        "artifactType",
        "manifests",
        "subject",
        "annotations",
    )

    @property
    def is_docker(self) -> bool:
        """Whether this is a Docker manifest list."""
        return self.media_type == mediatypes.DOCKER_MANIFEST_LIST

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], media_type: str | None = None) -> Index:
        """Build from a parsed JSON object; ``media_type`` is used when it has none."""
        what = "image index"
        _schema_version(obj, what)
        declared = _string(obj, "mediaType", what)
        effective = declared or media_type or mediatypes.OCI_INDEX
        if not mediatypes.is_index(effective):
            raise ImageError(f"{what} has unsupported media type {effective!r}")
        if "layers" in obj or "config" in obj:
            raise ImageError(f"{what} has 'layers'/'config': it looks like a manifest")
        return cls(declared, _descriptor_list(obj, "manifests", what), *_document_tail(obj, what))

    def to_json(self) -> dict[str, Any]:
        """The index JSON object (see the module docs for key order)."""
        body = {"manifests": [d.to_json() for d in self.manifests]}
        return _document_json(self, body, self._KEYS)


def _document_tail(
    obj: Mapping[str, Any], what: str
) -> tuple[dict[str, str], Descriptor | None, str, dict[str, Any]]:
    """The fields a manifest and an index share, after their own ones, in field order."""
    return (
        _annotations(obj, what),
        _optional_descriptor(obj, "subject", what),
        _string(obj, "artifactType", what),
        dict(obj),
    )


def _document_json(
    document: Manifest | Index, body: Mapping[str, Any], names: Sequence[str]
) -> dict[str, Any]:
    """A manifest's or index's JSON object around its own ``body`` keys (module docs)."""
    obj: dict[str, Any] = {"schemaVersion": 2}
    if document.media_type:
        obj["mediaType"] = document.media_type
    if document.artifact_type:
        obj["artifactType"] = document.artifact_type
    obj.update(body)
    if document.subject is not None:
        obj["subject"] = document.subject.to_json()
    if document.annotations:
        obj["annotations"] = _sorted(document.annotations)
    _with_unknown(obj, document.raw, names)
    return obj


def to_bytes(document: Manifest | Index | Descriptor) -> bytes:
    """Serialise a manifest, index or descriptor as compact JSON (module docs)."""
    return go_json_bytes(document.to_json())


def digest_of(document: Manifest | Index) -> str:
    """The sha256 digest of :func:`to_bytes` of ``document``."""
    return sha256_of(to_bytes(document))


def parse_manifest(data: bytes, media_type: str | None = None) -> Manifest:
    """Parse an image manifest; ``media_type`` (e.g. Content-Type) if the JSON has none."""
    if media_type is not None:
        mediatypes.reject_schema1(media_type)
    return Manifest.from_json(parse_json_object(data, "image manifest"), media_type)


def parse_index(data: bytes, media_type: str | None = None) -> Index:
    """Parse an image index; ``media_type`` (e.g. Content-Type) if the JSON has none."""
    return Index.from_json(parse_json_object(data, "image index"), media_type)


def parse_manifest_or_index(data: bytes, media_type: str | None = None) -> Manifest | Index:
    """Parse either kind, deciding by the JSON ``mediaType``, else ``media_type``, else shape.

    ``media_type`` is typically a registry's Content-Type or a descriptor's media type;
    generic values such as ``application/json`` are ignored.
    """
    if media_type is not None:
        mediatypes.reject_schema1(media_type)
    obj = parse_json_object(data, "manifest")
    declared = obj.get("mediaType")
    hint = declared if isinstance(declared, str) and declared else media_type
    if hint is not None:
        mediatypes.reject_schema1(hint)
    if obj.get("schemaVersion") == 1:
        _schema_version(obj, "manifest")
    if hint is not None and mediatypes.is_index(hint):
        return Index.from_json(obj, hint)
    if hint is not None and mediatypes.is_manifest(hint):
        return Manifest.from_json(obj, hint)
    if "manifests" in obj:
        return Index.from_json(obj, None)
    if "config" in obj or "layers" in obj:
        return Manifest.from_json(obj, None)
    if declared:
        raise ImageError(f"unsupported manifest media type {declared!r}")
    raise ImageError("manifest is neither an image manifest nor an index")


# --- image configs ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """An image config (OCI or Docker), read-only view over its JSON object.

    ``raw`` is the decoded object; ``data`` the bytes it came from and ``members`` the
    text of each top-level member, kept so that :meth:`with_diff_ids` rewrites the
    config the way containerd does without parsing it again.
    """

    raw: Mapping[str, Any]
    data: bytes = b""
    members: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: bytes) -> ImageConfig:
        """Parse config bytes (once); ImageError if malformed or without usable ``rootfs``."""
        decoded = _decoded_members(_decode(data), "image config")
        config = cls(
            {key: value for key, (_, value) in decoded.items()},
            data,
            {key: text for key, (text, _) in decoded.items()},
        )
        config.diff_ids  # noqa: B018  (validates rootfs)
        return config

    def with_diff_ids(self, diff_id_map: Mapping[str, str]) -> bytes:
        """The config's bytes with ``rootfs.diff_ids`` rewritten: see :func:`rewrite_config`."""
        return _rewrite_members(dict(self.members), self.data, diff_id_map)

    @property
    def diff_ids(self) -> list[str]:
        """``rootfs.diff_ids`` (uncompressed layer digests, bottom first)."""
        rootfs = self.raw.get("rootfs")
        if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
            raise ImageError("image config has no rootfs of type 'layers'")
        diff_ids = rootfs.get("diff_ids") or []
        if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
            raise ImageError("image config rootfs.diff_ids must be a list of digests")
        return list(diff_ids)

    @property
    def platform(self) -> Platform:
        """The platform the config declares (``os``, ``architecture``, ``variant``, …)."""
        return Platform.from_json(
            {
                key: self.raw[key]
                for key in ("architecture", "os", "os.version", "os.features", "variant")
                if key in self.raw
            }
        )

    @property
    def run_config(self) -> Mapping[str, Any]:
        """The ``config`` object (Entrypoint, Cmd, Env, WorkingDir, User, …), or ``{}``."""
        value = self.raw.get("config")
        return value if isinstance(value, dict) else {}

    def _string_list(self, key: str) -> list[str] | None:
        value = self.run_config.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ImageError(f"image config {key} must be a list of strings")
        return list(value)

    @property
    def entrypoint(self) -> list[str] | None:
        """``config.Entrypoint`` or None."""
        return self._string_list("Entrypoint")

    @property
    def cmd(self) -> list[str] | None:
        """``config.Cmd`` or None."""
        return self._string_list("Cmd")

    @property
    def env(self) -> list[str]:
        """``config.Env`` (``KEY=value`` strings), or ``[]``."""
        return self._string_list("Env") or []

    @property
    def working_dir(self) -> str:
        """``config.WorkingDir`` or ``""``."""
        value = self.run_config.get("WorkingDir") or ""
        return value if isinstance(value, str) else ""

    @property
    def user(self) -> str:
        """``config.User`` or ``""``."""
        value = self.run_config.get("User") or ""
        return value if isinstance(value, str) else ""


def rewrite_config(config_bytes: bytes, diff_id_map: Mapping[str, str]) -> bytes:
    """Rewrite ``rootfs.diff_ids`` by value, the way containerd's image converter does.

    Every occurrence of an old DiffID that maps to a *different* new one is replaced.
    When nothing changed (no ``rootfs`` of type ``layers``, or no DiffID in the map) the
    input bytes are returned unchanged. Otherwise:

    * ``rootfs`` becomes ``{"type":"layers","diff_ids":[…]}`` (other rootfs keys dropped);
    * the legacy dummy ``Image`` key is deleted from ``config`` and ``container_config``
      (each of which is then re-written with its keys sorted);
    * the document is re-written with top-level keys sorted (byte order), every other
      value kept as its original JSON text, compacted, with Go's HTML escaping — the
      output of Go's ``json.Marshal(map[string]*json.RawMessage)``.

    ImageError if the config is not a JSON object.
    """
    members = _raw_members(_decode(config_bytes), "image config")
    return _rewrite_members(members, config_bytes, diff_id_map)


def _rewrite_members(
    members: dict[str, str], config_bytes: bytes, diff_id_map: Mapping[str, str]
) -> bytes:
    rootfs_text = members.get("rootfs")
    if rootfs_text is None:
        return config_bytes
    rootfs = json.loads(rootfs_text)
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
        return config_bytes
    diff_ids = rootfs.get("diff_ids") or []
    if not isinstance(diff_ids, list):
        raise ImageError("image config rootfs.diff_ids must be a list")
    new_diff_ids = [diff_id_map.get(d, d) if isinstance(d, str) else d for d in diff_ids]
    if new_diff_ids == diff_ids:
        return config_bytes
    members["rootfs"] = go_json_bytes({"type": "layers", "diff_ids": new_diff_ids}).decode()
    for key in ("config", "container_config"):
        value = members.get(key)
        if value is None or value.strip() == "null":
            continue
        nested = _raw_members(value, f"image config {key}")
        nested.pop("Image", None)
        members[key] = _marshal_raw_map(nested)
    return _marshal_raw_map(members).encode("utf-8")


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ImageError(f"image config is not UTF-8: {err}") from None


def _raw_members(text: str, what: str) -> dict[str, str]:
    return {key: raw for key, (raw, _) in _decoded_members(text, what).items()}


def _decoded_members(text: str, what: str) -> dict[str, tuple[str, Any]]:
    try:
        return gojson.decoded_members(text)
    except ValueError as err:  # json.JSONDecodeError is a ValueError
        raise ImageError(f"{what} is not valid JSON (an object): {err}") from None
    except RecursionError:
        raise ImageError(f"{what} is nested too deeply") from None


def _marshal_raw_map(members: Mapping[str, str]) -> str:
    parts = [gojson.quote(key) + ":" + gojson.compact(members[key]) for key in sorted(members)]
    return "{" + ",".join(parts) + "}"
