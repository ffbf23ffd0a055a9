"""The fuzz targets: every parser of outside input, and the seeds each starts from.

A target takes arbitrary bytes and feeds them to one parser. It may only end in one of
two ways: normally, or with an :class:`~esgz.errors.EsgzError` (the error esgz shows the
user as one line). Anything else — ``ValueError``, ``RecursionError``, ``OverflowError``
— is a bug that :mod:`tests.fuzz.run` reports as a crash. Time and memory per input are
bounded by the fuzzer (``-timeout``, ``-rss_limit_mb``).

Targets that write something also check that esgz can read back what it wrote: a layer
the writer accepts must open, verify and extract with esgz's own reader.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio

from esgz.errors import EsgzError
from esgz.estargz import ConvertOptions, convert_layer, open_layer
from esgz.estargz.footer import (
    ZstdChunkedFooter,
    gzip_footer,
    parse_gzip_footer,
    parse_legacy_footer,
    parse_zstd_chunked_footer,
    zstd_chunked_footer,
)
from esgz.estargz.source import open_tar_stream
from esgz.estargz.tarinput import TarReader
from esgz.estargz.toc import decode_toc
from esgz.estargz.tocindex import build_index
from esgz.oci.manifest import ImageConfig, parse_manifest_or_index, rewrite_config, to_bytes
from esgz.oci.platform import parse_platform
from esgz.pipeline.config import parse_config_text
from esgz.registry.auth import parse_www_authenticate
from esgz.registry.credentials import DockerConfigCredentials
from esgz.runtime.record import expand_prefetch_list, parse_prefetch_list, parse_records
from tests.interop.spec_example import example_toc_json

__all__ = ["TARGETS", "Target"]


@dataclass(frozen=True)
class Target:
    """One parser under fuzzing: what to call on the input, and the starting corpus."""

    run: Callable[[bytes], None]
    seeds: Callable[[], list[bytes]]


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _tar(*members: tuple[tarfile.TarInfo, bytes], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data else None)
    return out.getvalue()


def _info(
    name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, **extra: object
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.mtime = 1_700_000_000
    for key, value in extra.items():
        setattr(info, key, value)
    return info


def _tar_seeds() -> list[bytes]:
    payload = b"hello\n" * 50
    long_name = "deep/" * 30 + "file.txt"
    plain = _tar(
        (_info("etc/", tarfile.DIRTYPE, mode=0o755), b""),
        (_info("etc/hostname", size=len(payload)), payload),
        (_info("etc/link", tarfile.SYMTYPE, linkname="hostname"), b""),
        (_info("etc/hard", tarfile.LNKTYPE, linkname="etc/hostname"), b""),
        (_info("etc/.wh..wh..opq"), b""),
        (_info("usr/.wh.gone"), b""),
        (_info(long_name, size=3, pax_headers={"user.x": "1"}), b"abc"),
    )
    gnu = _tar(
        (_info("a" * 120, size=len(payload)), payload),
        (_info("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3), b""),
        fmt=tarfile.GNU_FORMAT,
    )
    sparse = _tar(
        (
            _info(
                "sparse",
                size=512,
                pax_headers={
                    "GNU.sparse.major": "1",
                    "GNU.sparse.minor": "0",
                    "GNU.sparse.name": "sparse",
                    "GNU.sparse.realsize": "4096",
                },
            ),
            b"1\n0\n512\n".ljust(512, b"\0"),
        ),
    )
    return [plain, gnu, sparse, gzip.compress(plain, mtime=0)]


def _tar_stream(data: bytes) -> None:

    stream = open_tar_stream(io.BytesIO(data))
    try:
        reader = TarReader(stream)
        for _entry in reader:
            pass
    finally:
        stream.close()


def _convert_and_read_back(data: bytes) -> None:

    options = ConvertOptions(workers=1, chunk_size=1024, prioritized_files=("etc/hostname",))
    with tempfile.TemporaryDirectory(prefix="esgz-fuzz-") as scratch:
        out_path = Path(scratch) / "out"
        with open(out_path, "wb") as out:
            result = convert_layer(io.BytesIO(data), out, options)
        # Whatever the writer accepts, the reader must read back: no EsgzError allowed here.
        with open_layer(out_path) as layer:
            layer.verify(result.toc_digest)
            layer.extract(Path(scratch) / "root")


def _layer_blob(data: bytes) -> None:

    with (
        tempfile.TemporaryDirectory(prefix="esgz-fuzz-") as scratch,
        open_layer(io.BytesIO(data)) as layer,
    ):
        layer.verify(layer.toc_digest)
        layer.extract(Path(scratch) / "root")


def _layer_seeds() -> list[bytes]:

    seeds = []
    for fmt in ("estargz", "zstdchunked"):
        out = io.BytesIO()
        convert_layer(io.BytesIO(_tar_seeds()[0]), out, ConvertOptions(format=fmt, workers=1))
        seeds.append(out.getvalue())
    return seeds


def _toc_json(data: bytes) -> None:

    toc = decode_toc(data)
    build_index(toc, 1 << 40)


def _toc_seeds() -> list[bytes]:

    return [example_toc_json(100, 200, 300)]


def _footer(data: bytes) -> None:

    for parse in (parse_gzip_footer, parse_legacy_footer, parse_zstd_chunked_footer):
        with contextlib.suppress(EsgzError):
            parse(data)


def _footer_seeds() -> list[bytes]:

    return [gzip_footer(12345), zstd_chunked_footer(ZstdChunkedFooter(1, 2, 3))]


def _manifest(data: bytes) -> None:

    try:
        document = parse_manifest_or_index(data)
    except EsgzError:
        pass
    else:
        to_bytes(document)
    config = ImageConfig.parse(data)
    config.platform  # noqa: B018 - parses os/architecture
    rewrite_config(data, {d: d for d in config.diff_ids})


def _manifest_seeds() -> list[bytes]:
    digest = "sha256:" + "a" * 64
    layer = {
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": digest,
        "size": 1,
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest,
            "size": 2,
        },
        "layers": [layer],
        "annotations": {"a": "b"},
    }
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {**layer, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}
        ],
    }
    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [digest]},
    }
    return [json.dumps(doc).encode() for doc in (manifest, index, config)]


def _www_authenticate(data: bytes) -> None:

    parse_www_authenticate(_text(data))


def _www_authenticate_seeds() -> list[bytes]:
    return [
        b'Bearer realm="https://auth.example/token",service="registry",scope="repository:a:pull"',
        b'Basic realm="x", Bearer realm="y",error="insufficient_scope"',
    ]


def _yaml_config(data: bytes) -> None:

    parse_config_text(_text(data))


def _yaml_seeds() -> list[bytes]:
    return sorted(path.read_bytes() for path in Path("configs").glob("*.yaml")) or [
        b"images:\n  - source: local:///a\n    target: local:///b\n"
    ]


def _record(data: bytes) -> None:

    parse_records(_text(data))


def _record_seeds() -> list[bytes]:
    return [b'{"path":"/usr/bin/python3","manifestDigest":"","layerIndex":1}\n']


def _prefetch_list(data: bytes) -> None:

    names = ["usr", "usr/bin", "usr/bin/python3", "etc/hosts", "a/b/c/d"]
    expand_prefetch_list(parse_prefetch_list(_text(data)), names)


def _prefetch_seeds() -> list[bytes]:
    return [b"/usr/bin/python3\n/etc/*\n**/d\n# comment\n"]


def _reference(data: bytes) -> None:
    from esgz.oci.reference import parse_reference

    text = _text(data)
    parse_reference(text)
    with contextlib.suppress(EsgzError):
        parse_platform(text)


def _reference_seeds() -> list[bytes]:
    return [
        b"registry.example:5000/a/b:tag@sha256:" + b"0" * 64,
        b"http://localhost:5000/x:1",
        b"local:///srv/layout:tag",
        b"linux/arm64/v8",
    ]


def _docker_config(data: bytes) -> None:

    with tempfile.TemporaryDirectory(prefix="esgz-fuzz-") as scratch:
        (Path(scratch) / "config.json").write_bytes(data)
        provider = DockerConfigCredentials(Path(scratch))
        anyio.run(provider.get, "registry.example:5000")


def _docker_config_seeds() -> list[bytes]:
    return [
        json.dumps(
            {"auths": {"registry.example:5000": {"auth": "dXNlcjpwYXNz"}}, "credHelpers": {}}
        ).encode(),
        b'{"auths": {"https://index.docker.io/v1/": {"identitytoken": "t"}}}',
    ]


#: Every target by name (``python -m tests.fuzz.run NAME``).
TARGETS: dict[str, Target] = {
    "tar": Target(_tar_stream, _tar_seeds),
    "convert": Target(_convert_and_read_back, _tar_seeds),
    "layer": Target(_layer_blob, _layer_seeds),
    "toc-json": Target(_toc_json, _toc_seeds),
    "footer": Target(_footer, _footer_seeds),
    "manifest": Target(_manifest, _manifest_seeds),
    "www-authenticate": Target(_www_authenticate, _www_authenticate_seeds),
    "docker-config": Target(_docker_config, _docker_config_seeds),
    "yaml-config": Target(_yaml_config, _yaml_seeds),
    "record": Target(_record, _record_seeds),
    "prefetch-list": Target(_prefetch_list, _prefetch_seeds),
    "reference": Target(_reference, _reference_seeds),
}
