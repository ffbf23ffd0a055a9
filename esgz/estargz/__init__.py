"""The eStargz and zstd:chunked layer format: writer, reader and verifier."""

from esgz.estargz.convert import convert_layer, convert_layer_file
from esgz.estargz.options import ConvertOptions, LayerFormat, LayerResult
from esgz.estargz.toc import TOC, TOCEntry

__all__ = [
    "TOC",
    "ConvertOptions",
    "LayerFormat",
    "LayerResult",
    "TOCEntry",
    "convert_layer",
    "convert_layer_file",
]
