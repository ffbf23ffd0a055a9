"""Read and verify eStargz and zstd:chunked layer blobs.

Typical use::

    with open_layer("layer.blob") as layer:
        layer.verify("sha256:…")                 # Go's VerifyTOC against the annotation
        for entry in layer.entries():             # TOC order
            ...
        data = b"".join(layer.read_file("etc/os-release"))  # chunk digests verified
        layer.extract("/tmp/rootfs")              # safe extraction

:class:`LayerReader` never holds the whole blob in memory: it reads the footer and the
TOC, then decompresses only the chunks it is asked for, straight from the file. Opening
follows the Go reader (``estargz.Open``) with the stricter checks listed in
:mod:`esgz.estargz.tocindex`; every malformed input raises
:class:`~esgz.errors.FormatError`, every digest mismatch
:class:`~esgz.errors.VerificationError`, each with a one-line message naming the blob.

:func:`is_reusable_layer` is the ``--reuse`` test (FORMAT.md §14), and
:func:`sniff_layer_format` recognises a blob by its footer alone.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Final

import anyio.to_thread

from esgz.errors import FormatError, VerificationError
from esgz.estargz.blobfile import BlobFile, ByteStream, Compression, decompressed_range
from esgz.estargz.constants import NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK
from esgz.estargz.ordering import clean_name
from esgz.estargz.toc import TOC
from esgz.estargz.tocindex import (
    Chunk,
    LayerEntry,
    build_index,
    resolve_hardlink,
)
from esgz.estargz.tocload import DEFAULT_MAX_TOC_SIZE, BlobFormat, load_toc, sniff_footer
from esgz.estargz.verify import ChunkVerifier, check_digest, parse_digest, verify_toc

__all__ = [
    "BlobFormat",
    "Chunk",
    "LayerEntry",
    "LayerReader",
    "is_reusable_layer",
    "is_reusable_layer_async",
    "open_layer",
    "sniff_layer_format",
]

VERIFY_BEFORE_YIELD_LIMIT: Final = 16 * 1024 * 1024
"""Chunks up to this size are verified before any of their bytes is handed out."""

BlobSource = str | os.PathLike[str] | BinaryIO


class LayerReader:
    """An opened eStargz / stargz / zstd:chunked blob: its TOC, entries and file data.

    Build it with :func:`open_layer` (or the constructor) from a path or a seekable binary
    file, and close it (it is a context manager). It is safe to read from several threads.
    """

    def __init__(self, source: BlobSource, *, max_toc_size: int = DEFAULT_MAX_TOC_SIZE) -> None:
        try:
            self._blob = BlobFile(source)
        except FormatError as err:
            raise FormatError(f"{_source_name(source)}: {err.message}") from None
        self.name = self._blob.name
        """Where the blob came from (its path), for messages."""
        try:
            loaded = load_toc(self._blob, max_toc_size)
            index = build_index(loaded.toc, loaded.data_end)
        except FormatError as err:
            self._blob.close()
            raise type(err)(f"{self.name}: {err.message}") from None
        except BaseException:
            self._blob.close()
            raise
        self.format: BlobFormat = loaded.format
        """``"estargz"``, ``"stargz-legacy"`` or ``"zstdchunked"``."""
        self.compression: Compression = loaded.compression
        """``"gzip"`` or ``"zstd"``: how members / frames are compressed."""
        self.toc: TOC = loaded.toc
        """The TOC as decoded (raw names, chunk entries included)."""
        self.toc_digest: str = loaded.toc_digest
        """sha256 of the TOC JSON bytes (what the ``toc.digest`` annotation must hold)."""
        self.toc_offset: int = loaded.toc_offset
        """Blob offset of the TOC (gzip member, or zstd frame)."""
        self.size: int = self._blob.size
        """Size of the blob in bytes."""
        self._index = index
        self._verifier: ChunkVerifier | None = None

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        """Close the blob file (if the reader opened it)."""
        self._blob.close()

    def __enter__(self) -> LayerReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- entries ---------------------------------------------------------------------

    def entries(self) -> list[LayerEntry]:
        """Every file/dir/link/device/fifo entry of the TOC, in TOC (= blob) order."""
        return list(self._index.entries)

    def lookup(self, name: str, *, follow_hardlinks: bool = True) -> LayerEntry | None:
        """The entry for ``name`` (any spelling: ``/a``, ``./a``, ``a``; "" is the root).

        Implicit parent directories are found too. A hardlink resolves to its target
        unless ``follow_hardlinks`` is false. ``None`` if there is no such entry.
        """
        entry = self._index.by_name.get(clean_name(name))
        if entry is not None and follow_hardlinks and entry.type == "hardlink":
            entry = resolve_hardlink(entry, self._index.by_name)
        return entry

    def listdir(self, name: str = "") -> list[str]:
        """Sorted base names of the children of directory ``name`` (root by default)."""
        return sorted(self._index.children.get(clean_name(name), {}))

    def prefetch_landmark(self) -> LayerEntry | None:
        """The first root landmark (``.prefetch.landmark`` or ``.no.prefetch.landmark``)."""
        position = self._index.landmark_position
        return self._index.entries[position] if position >= 0 else None

    def prioritized_names(self) -> list[str]:
        """Cleaned names of the entries before the ``.prefetch.landmark`` (prefetched ones).

        Empty when the layer has ``.no.prefetch.landmark`` or no landmark at all.
        """
        landmark = self.prefetch_landmark()
        if landmark is None or landmark.name != PREFETCH_LANDMARK:
            return []
        return [entry.name for entry in self._index.entries[: self._index.landmark_position]]

    @property
    def has_no_prefetch_landmark(self) -> bool:
        """True when the first landmark is ``.no.prefetch.landmark``."""
        landmark = self.prefetch_landmark()
        return landmark is not None and landmark.name == NO_PREFETCH_LANDMARK

    # -- verification ----------------------------------------------------------------

    def verify(
        self, expected_toc_digest: str | None = None, *, check_data: bool = False
    ) -> ChunkVerifier:
        """Go's ``VerifyTOC``: TOC digest (when given) and a digest for every chunk.

        With ``check_data`` every regular file is also decompressed and its chunk and
        file digests checked. Raises :class:`~esgz.errors.VerificationError`.
        """
        try:
            verifier = verify_toc(self.toc, self.toc_digest, expected_toc_digest)
        except VerificationError as err:
            raise VerificationError(f"{self.name}: {err.message}") from None
        self._verifier = verifier
        if check_data:
            seen: set[int] = set()
            for entry in self._index.entries:
                if entry.type == "reg" and entry.toc_index not in seen:
                    seen.add(entry.toc_index)
                    for _ in self._read_entry(entry, verifier):
                        pass
        return verifier

    def _chunk_verifier(self) -> ChunkVerifier:
        if self._verifier is None:
            try:
                self._verifier = verify_toc(self.toc, self.toc_digest, None)
            except VerificationError as err:
                raise VerificationError(
                    f"{self.name}: cannot verify reads: {err.message}"
                ) from None
        return self._verifier

    # -- data ------------------------------------------------------------------------

    def read_file(self, name: str, *, verify: bool = True) -> Iterator[bytes]:
        """The content of regular file ``name`` (hardlinks followed) as byte pieces.

        With ``verify`` (the default) each chunk is checked against its digest — before
        any of its bytes is yielded for chunks up to 16 MiB, at the chunk's end for larger
        ones — and the whole file against its ``digest``. FileNotFoundError if there is no
        such entry, ValueError if it is not a regular file.
        """
        entry = self.lookup(name)
        if entry is None:
            raise FileNotFoundError(f"{self.name}: no entry {name!r} in the layer")
        if entry.type != "reg":
            raise ValueError(f"{self.name}: {name!r} is a {entry.type}, not a regular file")
        verifier = self._chunk_verifier() if verify else None
        return self._read_entry(entry, verifier)

    def read_entry(self, entry: LayerEntry, *, verify: bool = True) -> Iterator[bytes]:
        """The content of a regular-file entry from :meth:`entries` (see :meth:`read_file`)."""
        if entry.type != "reg":
            raise ValueError(f"{self.name}: {entry.name!r} is a {entry.type}, not a regular file")
        verifier = self._chunk_verifier() if verify else None
        return self._read_entry(entry, verifier)

    def read_bytes(self, name: str, *, verify: bool = True) -> bytes:
        """The whole content of regular file ``name`` (see :meth:`read_file`)."""
        return b"".join(self.read_file(name, verify=verify))

    def _read_entry(self, entry: LayerEntry, verifier: ChunkVerifier | None) -> Iterator[bytes]:
        whole = None
        if verifier is not None and entry.digest:
            try:
                algorithm, _ = parse_digest(entry.digest)
            except ValueError as err:
                raise VerificationError(f"{self.name}: {entry.name!r}: {err}") from None
            whole = hashlib.new(algorithm)
        for chunk in entry.chunks:
            for piece in self._read_chunk(entry, chunk, verifier):
                if whole is not None:
                    whole.update(piece)
                yield piece
        if whole is not None and f"{whole.name}:{whole.hexdigest()}" != entry.digest:
            raise VerificationError(
                f"{self.name}: {entry.name!r}: content digest {whole.name}:{whole.hexdigest()}"
                f" does not match the TOC digest {entry.digest}"
            )

    def _read_chunk(
        self, entry: LayerEntry, chunk: Chunk, verifier: ChunkVerifier | None
    ) -> Iterator[bytes]:
        what = f"{self.name}: {entry.name!r} chunk at file offset {chunk.chunk_offset}"
        try:
            yield from self._decode_chunk(chunk, verifier, what)
        except VerificationError:
            raise
        except FormatError as err:
            if err.message.startswith(what):
                raise
            raise FormatError(f"{what}: {err.message}") from None

    def _decode_chunk(
        self, chunk: Chunk, verifier: ChunkVerifier | None, what: str
    ) -> Iterator[bytes]:
        stream = ByteStream(
            decompressed_range(self._blob, self.compression, chunk.offset, chunk.end)
        )
        stream.skip(chunk.inner_offset, what)
        if verifier is None:
            yield from stream.iter_exact(chunk.size, what)
            return
        try:
            expected = verifier.digest_for(chunk)
            algorithm, encoded = parse_digest(expected)
        except (VerificationError, ValueError) as err:
            raise VerificationError(f"{what}: {err}") from None
        if chunk.size <= VERIFY_BEFORE_YIELD_LIMIT:
            data = stream.read_exact(chunk.size, what)
            check_digest(data, expected, what)
            yield data
            return
        hasher = hashlib.new(algorithm)
        for piece in stream.iter_exact(chunk.size, what):
            hasher.update(piece)
            yield piece
        if hasher.hexdigest() != encoded:
            raise VerificationError(f"{what}: content does not match its digest {expected}")

    def uncompressed_digest(self) -> tuple[str, int]:
        """``(diff_id, size)``: sha256 and length of the whole blob decompressed.

        For gzip blobs that includes the TOC entry and the end-of-archive blocks; for
        zstd:chunked the skippable TOC and footer frames add nothing (FORMAT.md §10/§11).
        """
        hasher = hashlib.sha256()
        total = 0
        try:
            for piece in decompressed_range(self._blob, self.compression, 0, self.size):
                hasher.update(piece)
                total += len(piece)
        except FormatError as err:
            raise FormatError(f"{self.name}: {err.message}") from None
        return f"sha256:{hasher.hexdigest()}", total

    def extract(
        self,
        dest_dir: str | os.PathLike[str],
        *,
        verify: bool = True,
        same_owner: bool | None = None,
        xattrs: bool = True,
    ) -> None:
        """Unpack the layer into ``dest_dir`` safely (see :func:`esgz.estargz.extract`)."""
        from esgz.estargz.extract import extract_layer

        extract_layer(self, Path(dest_dir), verify=verify, same_owner=same_owner, xattrs=xattrs)

    def __repr__(self) -> str:
        return (
            f"<LayerReader {self.name} {self.format} entries={len(self._index.entries)} "
            f"toc={self.toc_digest}>"
        )


def _source_name(source: BlobSource) -> str:
    if isinstance(source, str | os.PathLike):
        return str(source)
    return str(getattr(source, "name", "<blob>"))


def open_layer(source: BlobSource, *, max_toc_size: int = DEFAULT_MAX_TOC_SIZE) -> LayerReader:
    """Open a layer blob (path or seekable binary file); FormatError if it is not readable."""
    return LayerReader(source, max_toc_size=max_toc_size)


def sniff_layer_format(source: BlobSource) -> BlobFormat | None:
    """``"estargz"``, ``"stargz-legacy"`` or ``"zstdchunked"`` by the footer alone, else None.

    Only the last bytes are read; the TOC is not decoded (use :func:`open_layer` for that).
    A blob that cannot be read at all also gives None.
    """
    try:
        with BlobFile(source) as blob:
            return sniff_footer(blob)
    except FormatError:
        return None


def is_reusable_layer(source: BlobSource, toc_digest_annotation: str | None) -> bool:
    """Whether a layer can be passed through unchanged by ``--reuse`` (FORMAT.md §14).

    True iff the annotation is a parseable digest, the blob opens as gzip eStargz, legacy
    stargz or zstd:chunked, and Go's ``VerifyTOC(annotation)`` check passes.
    """
    if not toc_digest_annotation:
        return False
    try:
        parse_digest(toc_digest_annotation)
    except ValueError:
        return False
    try:
        with open_layer(source) as layer:
            layer.verify(toc_digest_annotation)
    except FormatError:
        return False
    return True


async def is_reusable_layer_async(
    source: str | os.PathLike[str], toc_digest_annotation: str | None
) -> bool:
    """:func:`is_reusable_layer` in a worker thread, for use inside the event loop."""
    return await anyio.to_thread.run_sync(is_reusable_layer, source, toc_digest_annotation)
