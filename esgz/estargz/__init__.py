"""The eStargz and zstd:chunked layer format: writer, reader and verifier.

Writing: :func:`convert_layer` / :func:`convert_layer_file` turn a layer blob (gzip, zstd
or plain tar) into an eStargz or zstd:chunked blob, as :class:`ConvertOptions` say, and
return a :class:`LayerResult` (digests, sizes, annotations).

Reading: :func:`open_layer` gives a :class:`LayerReader` over a blob on disk (TOC,
entries, verified file contents, safe extraction); :func:`is_reusable_layer` is the
``--reuse`` check; :func:`sniff_layer_format` tells the format from the footer.
"""

from esgz.estargz.convert import convert_layer, convert_layer_file
from esgz.estargz.options import ConvertOptions, LayerFormat, LayerResult
from esgz.estargz.reader import (
    BlobFormat,
    LayerReader,
    is_reusable_layer,
    is_reusable_layer_async,
    open_layer,
    sniff_layer_format,
)
from esgz.estargz.toc import TOC, TOCEntry

__all__ = [
    "TOC",
    "BlobFormat",
    "ConvertOptions",
    "LayerFormat",
    "LayerReader",
    "LayerResult",
    "TOCEntry",
    "convert_layer",
    "convert_layer_file",
    "is_reusable_layer",
    "is_reusable_layer_async",
    "open_layer",
    "sniff_layer_format",
]
