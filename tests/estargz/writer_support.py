"""Support for the writer tests: build input tars, convert, take blobs apart.

Blobs are taken apart with the standard library only (zlib, tarfile, json), independently
of the writer's own code.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zlib
from dataclasses import dataclass
from typing import Any

import zstandard

from esgz.estargz import ConvertOptions, LayerResult, convert_layer

MTIME = 1704164645  # 2024-01-02T03:04:05Z


@dataclass
class Spec:
    """One input entry for :func:`make_tar`."""

    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    linkname: str = ""
    uid: int = 0
    gid: int = 0
    uname: str = "root"
    gname: str = "root"
    devmajor: int = 0
    devminor: int = 0
    pax: dict[str, str] | None = None


def make_tar(specs: list[Spec], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A tar archive of ``specs`` written by Python's tarfile."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as archive:
        for spec in specs:
            info = tarfile.TarInfo(spec.name)
            info.type = spec.type
            info.mode = spec.mode
            info.mtime = MTIME
            info.uid, info.gid = spec.uid, spec.gid
            info.uname, info.gname = spec.uname, spec.gname
            info.linkname = spec.linkname
            info.devmajor, info.devminor = spec.devmajor, spec.devminor
            if spec.pax:
                info.pax_headers = dict(spec.pax)
            info.size = len(spec.data) if spec.type == tarfile.REGTYPE else 0
            archive.addfile(info, io.BytesIO(spec.data) if info.size else None)
    return buf.getvalue()


def convert(data: bytes, **options: Any) -> tuple[bytes, LayerResult]:
    """Convert ``data`` (any supported input) in memory."""
    out = io.BytesIO()
    result = convert_layer(io.BytesIO(data), out, ConvertOptions(**options))
    blob = out.getvalue()
    assert result.size == len(blob)
    assert result.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    return blob, result


@dataclass
class Frame:
    """One gzip member or zstd frame: where it starts and what it decompresses to."""

    offset: int
    compressed: bytes
    data: bytes


def gzip_members(blob: bytes) -> list[Frame]:
    """Split a multi-member gzip blob into its members."""
    view = memoryview(blob)
    frames: list[Frame] = []
    position = 0
    while position < len(blob):
        decompressor = zlib.decompressobj(31)
        data = decompressor.decompress(view[position:])
        assert decompressor.eof, f"member at {position} is truncated"
        end = len(blob) - len(decompressor.unused_data)
        frames.append(Frame(position, bytes(view[position:end]), data))
        position = end
    return frames


def zstd_frames(blob: bytes) -> list[Frame]:
    """Split a zstd blob into frames (skippable frames have their payload as data)."""
    frames: list[Frame] = []
    position = 0
    while position < len(blob):
        magic = blob[position : position + 4]
        if magic[1:] == b"\x2a\x4d\x18" and magic[0] & 0xF0 == 0x50:
            length = int.from_bytes(blob[position + 4 : position + 8], "little")
            end = position + 8 + length
            frames.append(Frame(position, blob[position:end], blob[position + 8 : end]))
        else:
            decompressor = zstandard.ZstdDecompressor().decompressobj()
            data = decompressor.decompress(blob[position:])
            assert decompressor.eof
            end = len(blob) - len(decompressor.unused_data)
            frames.append(Frame(position, blob[position:end], data))
        position = end
    return frames


def gzip_toc(blob: bytes) -> dict[str, Any]:
    """The TOC JSON of a gzip eStargz blob, located through its footer."""
    footer = blob[-51:]
    offset = int(footer[16:32], 16)
    toc_tar = zlib.decompressobj(31).decompress(blob[offset:-51])
    with tarfile.open(fileobj=io.BytesIO(toc_tar)) as archive:
        member = archive.next()
        assert member is not None
        assert member.name == "stargz.index.json"
        extracted = archive.extractfile(member)
        assert extracted is not None
        raw = extracted.read()
    parsed: dict[str, Any] = json.loads(raw)
    return parsed


def toc_bytes(blob: bytes) -> bytes:
    """The raw TOC JSON of a gzip eStargz blob."""
    offset = int(blob[-51:][16:32], 16)
    toc_tar = zlib.decompressobj(31).decompress(blob[offset:-51])
    size = int(toc_tar[124:135], 8)
    return toc_tar[512 : 512 + size]


def tar_members(stream: bytes) -> list[tarfile.TarInfo]:
    """Entries of an uncompressed tar stream (read with tarfile)."""
    with tarfile.open(fileobj=io.BytesIO(stream)) as archive:
        return archive.getmembers()


def tar_contents(stream: bytes) -> dict[str, bytes]:
    """Regular-file contents by name (last one wins) of an uncompressed tar stream."""
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(stream)) as archive:
        for member in archive:
            if member.isreg():
                extracted = archive.extractfile(member)
                assert extracted is not None
                out[member.name] = extracted.read()
    return out


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
