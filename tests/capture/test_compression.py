"""capture.compression: ISA-L or zlib, always plain gzip that the standard library reads."""

from __future__ import annotations

import gzip
import io
import zlib

import orjson
import pytest

from capture import compression
from capture.buffer import encode_items
from capture.compression import (
    GZIP_READ_ERRORS,
    INFLATE_ERRORS,
    gzip_compressor,
    gzip_inflater,
    gzip_reader,
)

LINES = [
    orjson.dumps({"i": i, "features": {"f0": i * 0.5, "device": ["web", "ios"][i % 2]}})
    for i in range(2000)
]
DATA = b"\n".join(LINES) + b"\n"


def _gzip(level: int, use_isal: bool) -> bytes:
    z = gzip_compressor(level, use_isal=use_isal)
    return z.compress(DATA[:5000]) + z.compress(DATA[5000:]) + z.flush()


def test_isal_is_what_this_environment_uses() -> None:
    # The project depends on isal; a CI image without it would silently be ~8x slower.
    assert compression.backend() == "isal"


@pytest.mark.parametrize("use_isal", [True, False])
@pytest.mark.parametrize("level", range(10))
def test_every_level_writes_gzip_the_standard_library_reads(level: int, use_isal: bool) -> None:
    out = _gzip(level, use_isal)
    assert out[:2] == b"\x1f\x8b"
    assert gzip.decompress(out) == DATA
    if level == 0:  # stored, as zlib's level 0 always did
        assert len(out) > len(DATA)
    else:
        assert len(out) < len(DATA) / 5


def test_levels_follow_zlibs_scale() -> None:
    # 7-9 are ISA-L's level 3: smaller than 1-3 (its level 1).
    assert len(_gzip(9, True)) < len(_gzip(1, True))
    assert len(_gzip(1, True)) == len(_gzip(3, True))


def test_out_of_range_level_is_refused() -> None:
    with pytest.raises(ValueError, match=r"0\.\.9"):
        gzip_compressor(10)
    with pytest.raises(ValueError, match=r"0\.\.9"):
        gzip_compressor(-1)


@pytest.mark.parametrize("use_isal", [True, False])
def test_inflater_reads_stdlib_gzip_and_refuses_damage(use_isal: bool) -> None:
    good = gzip.compress(DATA, compresslevel=6)
    inflate = gzip_inflater(use_isal=use_isal)
    assert inflate.decompress(good, len(DATA) + 1) == DATA
    assert inflate.eof and not inflate.unused_data

    bad_crc = bytearray(good)
    bad_crc[-8] ^= 0xFF  # the CRC32 in the trailer
    with pytest.raises(INFLATE_ERRORS):
        gzip_inflater(use_isal=use_isal).decompress(bytes(bad_crc), len(DATA) + 1)
    with pytest.raises(INFLATE_ERRORS):
        gzip_inflater(use_isal=use_isal).decompress(b"\x1f\x8b\x08\x00" + b"\xff" * 64)

    truncated = gzip_inflater(use_isal=use_isal)
    truncated.decompress(good[: len(good) // 2], len(DATA) + 1)
    assert not truncated.eof


def test_without_isal_the_capture_falls_back_to_zlib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compression, "_isal", None)
    assert compression.backend() == "zlib"
    z = gzip_compressor(3)
    assert type(z) is type(zlib.compressobj())
    groups, failed = encode_items(
        [{"model": {"name": "m"}, "i": i} for i in range(100)], lambda r: r, 3, "m"
    )
    data, count = groups[(None, "m")]
    assert failed == 0 and count == 100
    assert gzip.decompress(data).count(b"\n") == 100


def test_buffer_objects_are_isal_gzip_with_every_line(monkeypatch: pytest.MonkeyPatch) -> None:
    records = [{"model": {"name": "m"}, "i": i, "text": "x" * (i % 50)} for i in range(1000)]
    groups, _ = encode_items(records, lambda r: r, 3, "m")
    data, count = groups[(None, "m")]
    assert count == 1000
    lines = gzip.decompress(data).splitlines()
    assert [orjson.loads(line)["i"] for line in lines] == list(range(1000))
    # ISA-L's stream differs from zlib's at the same level: the fast path is in use.
    monkeypatch.setattr(compression, "_isal", None)
    zlib_data = encode_items(records, lambda r: r, 3, "m")[0][(None, "m")][0]
    assert data != zlib_data
    assert gzip.decompress(zlib_data) == gzip.decompress(data)


@pytest.mark.parametrize("use_isal", [True, False])
def test_gzip_reader_reads_lines_and_raises_read_errors(use_isal: bool) -> None:
    good = gzip.compress(DATA)
    with gzip_reader(io.BytesIO(good), use_isal=use_isal) as fh:
        assert fh.readlines() == [line + b"\n" for line in LINES]
    garbled = good[:40] + b"\xff" * 200 + good[240:]
    for bad in (garbled, good[: len(good) // 2], good[:-8] + b"\x00\x00\x00\x00" + good[-4:]):
        with pytest.raises(GZIP_READ_ERRORS), gzip_reader(io.BytesIO(bad), use_isal=use_isal) as fh:
            fh.read()
