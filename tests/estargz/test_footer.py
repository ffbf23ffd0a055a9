from __future__ import annotations

import gzip

import pytest

from esgz.errors import FormatError
from esgz.estargz.footer import (
    ZstdChunkedFooter,
    gzip_footer,
    parse_gzip_footer,
    parse_zstd_chunked_footer,
    zstd_chunked_footer,
)


def test_gzip_footer_matches_the_documented_bytes() -> None:
    # The worked example of the format: TOC member at offset 436.
    expected = bytes.fromhex(
        "1f8b08040000000000ff1a00534716003030303030303030303030303031623453544152475a"
        "010000ffff0000000000000000"
    )
    assert gzip_footer(436) == expected
    assert parse_gzip_footer(expected) == 436


def test_gzip_footer_is_an_empty_gzip_member() -> None:
    assert gzip.decompress(gzip_footer(123456)) == b""


@pytest.mark.parametrize("offset", [0, 1, 2**40 + 7])
def test_gzip_footer_round_trips(offset: int) -> None:
    assert parse_gzip_footer(gzip_footer(offset)) == offset


def test_gzip_footer_rejects_other_bytes() -> None:
    footer = bytearray(gzip_footer(10))
    footer[33] ^= 0xFF
    with pytest.raises(FormatError, match="STARGZ"):
        parse_gzip_footer(bytes(footer))
    with pytest.raises(FormatError, match="51 bytes"):
        parse_gzip_footer(b"short")


def test_zstd_footer_matches_the_documented_bytes() -> None:
    frame = zstd_chunked_footer(ZstdChunkedFooter(442, 448, 1275))
    assert frame[:8].hex() == "502a4d1828000000"
    assert frame[8:].hex() == (
        "ba01000000000000c001000000000000fb040000000000000100000000000000476e556c496e5578"
    )
    assert parse_zstd_chunked_footer(frame[8:]) == ZstdChunkedFooter(442, 448, 1275)


def test_zstd_footer_without_magic_is_rejected() -> None:
    with pytest.raises(FormatError, match="GnUlInUx"):
        parse_zstd_chunked_footer(b"\x00" * 40)
