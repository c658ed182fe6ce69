"""gzip for capture objects: ISA-L (the ``isal`` package) when it is
installed, the standard library's zlib otherwise. Either way the output is
one ordinary gzip member that ``gzip``, ``zcat`` or any reader opens.

Why ISA-L: on the capture's own records its deflate is ~8x zlib's at the
levels the capture uses, and it still compresses a little better (a 100-item
ranking record: ~12 µs against ~100 µs at zlib's level 3, 19x against 15x
smaller; a one-row prediction: 0.25 µs against 1.6 µs, 67x against 85x),
and its inflate is ~2.6x zlib's (the monitor's reads). ``isal`` is a
dependency of the project and ships wheels for the usual platforms; where it
cannot be imported the capture falls back to zlib and works the same.

``MODELTAP_GZIP_LEVEL`` keeps zlib's 0-9 scale, so a setting means the same
thing with or without ISA-L: 0 stores without compressing (zlib, as always),
1-3 (the default 3) are ISA-L's level 1, 4-6 its level 2 and 7-9 its level 3,
the smallest and ~7x slower than level 1.
"""

from __future__ import annotations

import gzip
import zlib
from typing import IO, Any, Protocol

_isal: Any
_igzip: Any
try:
    from isal import igzip as _igzip
    from isal import isal_zlib as _isal
except ImportError:  # pragma: no cover - a platform without an isal wheel
    _isal = _igzip = None

#: zlib's level (0-9) -> ISA-L's (0-3); 0 is left to zlib, which stores.
_ISAL_LEVEL = (None, 1, 1, 1, 2, 2, 2, 3, 3, 3)
_GZIP_WBITS = 31  # deflate in a gzip container, 32 KiB window
_GUNZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip container only

#: What inflating damaged data raises, with either library.
INFLATE_ERRORS: tuple[type[Exception], ...] = (
    (zlib.error,) if _isal is None else (zlib.error, _isal.IsalError)
)


#: What reading a damaged or cut gzip stream raises (``gzip_reader``'s too).
GZIP_READ_ERRORS: tuple[type[Exception], ...] = (OSError, EOFError, *INFLATE_ERRORS)


class Compressor(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...

    def flush(self, mode: int = ..., /) -> bytes: ...


class Inflater(Protocol):
    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes, max_length: int = ..., /) -> bytes: ...


def backend() -> str:
    """``"isal"`` or ``"zlib"``: what ``gzip_compressor`` uses for levels 1-9."""
    return "zlib" if _isal is None else "isal"


def gzip_compressor(level: int, *, use_isal: bool = True) -> Compressor:
    """A compressor that writes one gzip member at ``level`` (zlib's 0-9 scale)."""
    if not 0 <= level <= 9:
        raise ValueError(f"gzip level must be in 0..9, got {level}")
    isal_level = _ISAL_LEVEL[level]
    if use_isal and _isal is not None and isal_level is not None:
        return _isal.compressobj(isal_level, _isal.DEFLATED, _GZIP_WBITS)  # type: ignore[no-any-return]
    return zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)


def gzip_inflater(*, use_isal: bool = True) -> Inflater:
    """A decompressor of one gzip member (zlib's ``decompressobj`` interface:
    ``decompress(data, max_length)``, ``eof``, ``unused_data``); it checks the
    header, the CRC and the length, and raises one of ``INFLATE_ERRORS``."""
    if use_isal and _isal is not None:
        return _isal.decompressobj(_GUNZIP_WBITS)  # type: ignore[no-any-return]
    return zlib.decompressobj(_GUNZIP_WBITS)


def gzip_reader(fileobj: IO[bytes], *, use_isal: bool = True) -> gzip.GzipFile:
    """``gzip.GzipFile(fileobj=...)`` for reading, ISA-L's when installed (the
    same class interface and errors, plus one of ``INFLATE_ERRORS`` for a
    damaged deflate stream: catch ``GZIP_READ_ERRORS``)."""
    if use_isal and _igzip is not None:
        return _igzip.GzipFile(fileobj=fileobj, mode="rb")  # type: ignore[no-any-return]
    return gzip.GzipFile(fileobj=fileobj, mode="rb")
