"""Run esgz's writer on a tar file and compare its TOC with the Go builder's."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from esgz.estargz.convert import convert_layer
from esgz.estargz.options import ConvertOptions, LayerResult
from esgz.estargz.reader import open_layer
from esgz.estargz.toc import TOCEntry


def write_with_esgz(src: Path, dst: Path, **options: object) -> LayerResult:
    """Convert ``src`` into ``dst`` with :func:`convert_layer` and check the result's claims."""
    with open(src, "rb") as source, open(dst, "wb") as target:
        result = convert_layer(source, target, ConvertOptions(**options))  # type: ignore[arg-type]
    data = dst.read_bytes()
    assert result.size == len(data)
    assert result.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    return result


def toc_without_offsets(blob: Path) -> list[TOCEntry]:
    """The raw TOC entries of ``blob`` with compressed offsets blanked out."""
    with open_layer(blob) as layer:
        return [dataclasses.replace(entry, offset=0) for entry in layer.toc.entries]
