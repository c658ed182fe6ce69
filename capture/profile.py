"""Column and dataset profiles: mergeable summaries built from datasketches.

A ``ColumnProfile`` summarises one column with exact counters (values, nulls,
NaN, inf, the kind of each value, numeric min/max/sum, mean and M2 for the
variance) and three sketches: KLL for quantiles of the finite numbers, HLL for
the distinct count, frequent-items for the most common values. A
``DatasetProfile`` is a row count plus one ``ColumnProfile`` per column.

Invariants:

- Profiles merge, in any order: merging the profiles of two halves gives the
  profile of the whole, exactly for the counters, min and max, to float
  rounding for sum and mean (Chan et al.'s parallel mean/M2 combination), and
  within sketch error for the sketches. Profiles built with different KLL k
  still merge.
- In a ``DatasetProfile`` every column's ``count`` equals ``rows``: a column
  absent from a row, a batch or a merged profile counts as null there.
- Values are keyed by ``canonical()``: 1, 1.0 and "1" are one value.
- Updates never raise on odd values (huge ints, NaN, nested containers, lone
  surrogates); every query answers an empty column with ``[]`` or ``None``.
- ``to_bytes()`` is UTF-8 JSON (orjson) with ``FORMAT`` inside and each sketch
  base64-encoded beside a blake2b checksum; ``from_bytes()`` raises
  ``ValueError`` naming the problem, and checks the checksum before handing
  bytes to datasketches (a corrupt KLL sketch can crash the process).

Speed: updates take a batch (a column of a batch of rows), never one value.
A numeric batch is sorted once, in a buffer its thread reuses ("Scratch
memory" below): its finite values are a slice, its runs are the distinct
keys, and KLL takes it whole, in descending order (~3x faster than
shuffled; KLL's error bounds hold for any order). A batch with many distinct
numbers or strings reaches HLL through numpy ("HLL from numpy" below), a
small one with one call per distinct key; frequent-items gets one call per
value frequent enough in the batch to matter (see FREQ_RESOLUTION and
FREQ_RESOLUTION_NUMERIC). Strings
in a list are counted with ``collections.Counter``; strings in a pyarrow
array (what the monitor's training reader hands over) are counted by Arrow
in C++, or by their hashes when nearly all distinct (an id column), and
read from the array's UTF-8 buffer, with the same profile as a result
("Arrow input" below; pyarrow is imported only when such an array is
passed). On 2 shared cores (``loadtest/bench_profile.py``): ~1.0-1.2M rows/s
through ``update_columns`` for 20 mixed columns with Arrow strings (~0.7M
with lists of ``str``), ~210k rows/s through ``update_rows`` (batches of
16,384), ~22M values/s through ``update_numeric`` (continuous floats).

Example::

    prof = DatasetProfile()
    prof.update_rows([{"age": 31, "city": "Lyon"}, {"age": 45.5}])
    prof.columns["age"].quantiles([0.5])        # [31.0]
    DatasetProfile.from_bytes(prof.to_bytes()).rows   # 2
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import re
import struct
import threading
import unicodedata
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from hashlib import blake2b
from itertools import pairwise
from operator import itemgetter
from typing import Any, Protocol

import datasketches as ds
import numpy as np
import orjson

FORMAT = 1
KIND = "modeltap.profile"
KLL_K = 200
BASELINE_KLL_K = 1000
HLL_LG_K = 12
FREQ_LG_MAX = 10
MAX_STRING = 256
# A distinct value seen at most batch/FREQ_RESOLUTION times in a batch is not
# fed to frequent-items: it adds at most N/4096 to any count's error (the
# sketch's own bound is 3.5N/1024), and spares a string per value for
# continuous columns, where nearly every value is distinct.
FREQ_RESOLUTION = 4096
# The same for a batch of numbers only (FREQ_RESOLUTION for any batch with a
# string in it): at most N/1024 more error. A numeric column's frequent items
# serve only its heavy values (an id_like column's stuck value, a label's
# classes); the domain check and categorical drift, which count what
# frequent-items misses as outside the domain, read String columns. In a
# 5,000-row batch a number then needs 5 occurrences, not 2, to be fed: the
# integer-valued columns of a one-row-per-record capture object fed ~5,000
# values an object before, ~2 ms of the monitor's main thread.
FREQ_RESOLUTION_NUMERIC = 1024
# A batch with at least this many distinct numbers or strings feeds HLL
# through numpy (see "HLL from numpy") rather than one sketch call per key.
VECTOR_HLL_MIN = 1024
# An Arrow string batch whose first ID_SAMPLE strings are at least 95% distinct
# is counted by hash (see ``_arrow_counts_by_hash``), not by Arrow's hash table.
ID_SAMPLE = 2048

# A canonical key before it becomes text: int (whole numbers in int64 range),
# float (other finite numbers) or str. HLL hashes ints and floats directly,
# which keeps canonical()'s equivalence and saves a number->str per value.
Key = int | float | str
_INT64 = 2**63
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_KINDS = ("null", "boolean", "integral", "fractional", "string", "other")
_NUMERIC_TYPES = (int, float, type(None), np.float64, np.float32, np.int64, np.int32)


def _cut(s: str) -> str:
    if len(s) <= MAX_STRING:
        return s
    digest = blake2b(s.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    return s[:200] + "…#" + digest


def _clean(s: str) -> str:
    """Valid UTF-8 (lone surrogates escaped, as sketches need) and NFC."""
    if s.isascii():
        return s
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        s = s.encode("utf-8", "backslashreplace").decode("utf-8")
    return s if unicodedata.is_normalized("NFC", s) else unicodedata.normalize("NFC", s)


def _int_key(v: int) -> Key:
    if -_INT64 <= v < _INT64:
        return v  # hashed by HLL as an int64
    try:
        return _cut(str(v))
    except ValueError:  # more digits than int->str allows
        return _cut(f"0x{v:x}")


def _float_key(x: float) -> Key | None:
    if math.isnan(x):
        return None
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x.is_integer():
        return _int_key(int(x))
    return x


def _str_key(s: str) -> Key:
    if s.isascii():
        # A JSON number written as a string is that number: "1.0" is 1.
        m = _NUMBER.fullmatch(s) if s and s[0] in "-0123456789" else None
        if m is None:
            return _cut(s)
        if m.group(1) is None and m.group(2) is None:  # an integer: exact
            return _int_key(int(s)) if len(s) <= 20 else _cut(s)  # long ones: s == str(int(s))
        key = _float_key(float(s))
        return "nan" if key is None else key  # the pattern admits no NaN
    return _cut(_clean(s))


def _other_key(v: Any) -> str:
    opts = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
    try:
        text = orjson.dumps(v, option=opts).decode()
    except TypeError:  # huge ints, surrogates, nesting orjson refuses
        try:
            text = json.dumps(
                v, sort_keys=True, ensure_ascii=False, default=repr, separators=(",", ":")
            )
        except Exception:  # any object at all must still get a key
            text = f"<{type(v).__name__}>"
    return _cut(_clean(text))


def _classify(v: Any) -> tuple[str, float | None, Key | None]:
    """(kind, finite number for the quantile sketch or None, canonical key)."""
    if v is None:
        return "null", None, None
    if isinstance(v, (bool, np.bool_)):
        return "boolean", None, "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        i = int(v)
        try:
            return "integral", float(i), _int_key(i)
        except OverflowError:  # beyond float range: counted, not in numeric stats
            return "integral", None, _int_key(i)
    if isinstance(v, (float, np.floating)):
        x = float(v)
        if math.isnan(x):
            return "nan", None, None
        if math.isinf(x):
            return "inf", None, _float_key(x)
        return ("integral" if x.is_integer() else "fractional"), x, _float_key(x)
    if isinstance(v, str):
        return "string", None, _str_key(v)
    return "other", None, _other_key(v)


# -- Scratch memory ----------------------------------------------------------------
#
# A numeric batch goes through a few arrays as large as itself (the sorted
# copy, a float64 temporary, masks, the distinct keys). Allocated afresh per
# batch, each megabyte of them cost ~256 page faults: glibc hands a freed
# heap top back to the kernel and the next batch faults it in again, zeroed.
# On the project's 2-core VMs that was ~70,000 faults and a quarter of the
# time of profiling 1M rows x 15 numeric columns. So those arrays live in
# buffers that each thread keeps from batch to batch (``_Workspace``), up to
# ``WORK_KEEP_BYTES`` each (a handful of slots: a few MB per thread at most);
# a larger batch allocates as before. A slot's contents are valid until the
# next ``take`` of that slot: nothing taken from it is kept past the call
# that takes it (sketches copy what they are fed).

WORK_KEEP_BYTES = 1 << 21  # 256k float64 values: every batch size this project uses


class _Workspace(threading.local):
    """Per-thread reusable buffers, by slot name (see "Scratch memory")."""

    def __init__(self) -> None:
        self.raw: dict[str, np.ndarray] = {}
        self._scratch: _Scratch | None = None

    def take(self, slot: str, n: int, dtype: Any) -> np.ndarray:
        """An uninitialised array of ``n`` items of ``dtype`` in buffer ``slot``."""
        dt = np.dtype(dtype)
        size = n * dt.itemsize
        raw = self.raw.get(slot)
        if raw is None or raw.size < size:
            raw = np.empty(size, np.uint8)
            if size <= WORK_KEEP_BYTES:
                self.raw[slot] = raw
        return raw[:size].view(dt)

    @property
    def scratch(self) -> _Scratch:
        """This thread's buffers for hashing keys (see "HLL from numpy")."""
        if self._scratch is None:
            self._scratch = _Scratch()
        return self._scratch


_WORK = _Workspace()


# -- HLL from numpy ------------------------------------------------------------
#
# datasketches' HLL takes one value per call (~60-250 ns). For a batch with
# many distinct keys, the registers are computed here as the sketch computes
# them: MurmurHash3_x64_128 (seed 9001) of the key's bytes (an int64 key's 8
# bytes, a fractional number's float64 bits, a string's UTF-8), register =
# low lg_k bits of the first hash word, value = 1 + leading zeros of the
# second (capped at 63). The registers become a serialised HLL_8 image
# (datasketches' documented binary layout, flagged out of order as a union's
# result is) that an ``hll_union`` folds into the column's sketch. The
# sketch ends the same as if every key had been fed to it, except that its
# estimate is the composite one (as after any merge) rather than HIP.
# ``_vector_hll()`` is a self-check on first use (~0.15 s, so importing
# this module stays cheap): registers of numbers and of
# strings of every length up to 40 must equal datasketches' own, byte for
# byte, or every batch takes the one-call-per-key path.

_C1, _C2 = np.uint64(0x87C37B91114253D5), np.uint64(0x4CF5AD432745937F)
_F1, _F2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)
_HLL_SEED = np.uint64(9001)
_ADD1, _ADD2 = np.uint64(0x52DCE729), np.uint64(0x38495AB5)
_HLL_CHUNK = 1 << 14  # keys hashed at a time: scratch stays in cache, no fresh pages


def _rotl(x: np.ndarray, r: int, tmp: np.ndarray) -> None:
    np.right_shift(x, 64 - r, out=tmp)
    x <<= r
    x |= tmp


def _fmix64(k: np.ndarray, tmp: np.ndarray) -> None:
    """MurmurHash3's 64-bit finaliser, in place (``tmp``: scratch of the same shape)."""
    for mult in (_F1, _F2, None):
        np.right_shift(k, 33, out=tmp)
        k ^= tmp
        if mult is not None:
            k *= mult


def _mix_word(
    h: np.ndarray,
    word: np.ndarray,
    ca: np.uint64,
    cb: np.uint64,
    r: int,
    k: np.ndarray,
    t: np.ndarray,
) -> None:
    """``h ^= rotl(word * ca, r) * cb`` (``k``, ``t``: scratch)."""
    np.multiply(word, ca, out=k)
    _rotl(k, r, t)
    k *= cb
    h ^= k


def _stir(h: np.ndarray, other: np.ndarray, r: int, add: np.uint64, t: np.ndarray) -> None:
    """``h = (rotl(h, r) + other) * 5 + add``."""
    _rotl(h, r, t)
    h += other
    h *= np.uint64(5)
    h += add


class _Scratch:
    """Buffers for hashing up to ``_HLL_CHUNK`` keys at a time (one set per
    thread, ``_WORK.scratch``: see "Scratch memory")."""

    def __init__(self, size: int = _HLL_CHUNK) -> None:
        self.h1, self.h2, self.k, self.t = (np.empty(size, np.uint64) for _ in range(4))
        self.exp = np.empty(size, np.float64)
        self.value = np.empty(size, np.uint8)


def _hll_registers(reg: np.ndarray, words: np.ndarray, length: int, sc: _Scratch) -> None:
    """Raise HLL_8 registers ``reg`` (uint8, 2**lg_k) by keys of ``length`` bytes,
    given as rows of little-endian uint64 words (zero-padded to 16-byte blocks)."""
    for i in range(0, words.shape[0], _HLL_CHUNK):
        _raise(reg, *_murmur(words[i : i + _HLL_CHUNK], length, sc), sc)


def _hll_hashed(reg: np.ndarray, h1: np.ndarray, h2: np.ndarray) -> None:
    """Raise HLL_8 registers ``reg`` by keys already hashed (``_string_hashes``)."""
    sc = _WORK.scratch
    for i in range(0, h1.size, _HLL_CHUNK):
        m = min(_HLL_CHUNK, h1.size - i)
        np.copyto(sc.h1[:m], h1[i : i + m])
        np.copyto(sc.h2[:m], h2[i : i + m])
        _raise(reg, sc.h1[:m], sc.h2[:m], sc)


def _raise(reg: np.ndarray, h1: np.ndarray, h2: np.ndarray, sc: _Scratch) -> None:
    """Raise registers ``reg`` by up to ``_HLL_CHUNK`` keys' hash words, held in
    ``sc`` (``h1`` is overwritten)."""
    m, t = h1.size, sc.t[: h1.size]
    # Value 1 + leading zeros of h2 (capped at 63): its high half is exact
    # as a float64, whose biased exponent is bit_length + 1022 (0 for 0).
    e, v = sc.exp[:m].view(np.uint64), sc.value[:m]
    np.right_shift(h2, 32, out=t)
    np.copyto(e.view(np.float64), t.view(np.int64), casting="unsafe")  # faster than uint64
    e >>= np.uint64(52)
    np.subtract(1055, e, out=e)
    np.copyto(v, e, casting="unsafe")
    if int(t.min()) == 0:  # a high half of zeros: ~1 key in 4 billion
        low = np.flatnonzero(t == 0)
        v[low] = _low_values(h2[low])
    h1 &= np.uint64(reg.size - 1)
    np.maximum.at(reg, h1.view(np.int64), v)


def _murmur(w: np.ndarray, length: int, sc: _Scratch) -> tuple[np.ndarray, np.ndarray]:
    """MurmurHash3_x64_128 (seed 9001) of up to ``_HLL_CHUNK`` keys of ``length``
    bytes, given as rows of words (as ``_hll_registers``): (h1, h2), views of ``sc``."""
    blocks, rem = divmod(length, 16)
    m = w.shape[0]
    h1, h2, k, t = sc.h1[:m], sc.h2[:m], sc.k[:m], sc.t[:m]
    h1.fill(_HLL_SEED)
    h2.fill(_HLL_SEED)
    for b in range(blocks):  # MurmurHash3_x64_128, body
        _mix_word(h1, w[:, 2 * b], _C1, _C2, 31, k, t)
        _stir(h1, h2, 27, _ADD1, t)
        _mix_word(h2, w[:, 2 * b + 1], _C2, _C1, 33, k, t)
        _stir(h2, h1, 31, _ADD2, t)
    if rem > 8:  # tail: a zero word would mix to nothing, so only real ones
        _mix_word(h2, w[:, 2 * blocks + 1], _C2, _C1, 33, k, t)
    if rem:
        _mix_word(h1, w[:, 2 * blocks], _C1, _C2, 31, k, t)
    h1 ^= np.uint64(length)
    h2 ^= np.uint64(length)
    h1 += h2
    h2 += h1
    _fmix64(h1, t)
    _fmix64(h2, t)
    h1 += h2
    h2 += h1
    return h1, h2


def _low_values(h2: np.ndarray) -> np.ndarray:
    """Register values of second hash words below 2**32."""
    bits = np.frexp(h2.astype(np.float64))[1]  # exact below 2**53; 0 for 0
    values: np.ndarray = (np.minimum(64 - bits, 62) + 1).astype(np.uint8)
    return values


def _hll_numbers(reg: np.ndarray, *arrays: np.ndarray) -> None:
    """Registers from int64 or float64 keys (each hashed as its 8 bytes)."""
    for a in arrays:
        if a.size:
            words = np.ascontiguousarray(a).view(np.uint64).reshape(-1, 1)
            _hll_registers(reg, words, 8, _WORK.scratch)


def _hll_strings(reg: np.ndarray, buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> None:
    """Registers from byte strings ``buf[starts[i] : starts[i] + lengths[i]]``
    (none empty: the sketch ignores empty strings), hashed a length at a time."""
    sc = _WORK.scratch
    for _, words, length in _string_words(buf, starts, lengths):
        _hll_registers(reg, words, length, sc)


def _string_words(
    buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """The non-empty byte strings ``buf[starts[i] : starts[i] + lengths[i]]``, up
    to ``_HLL_CHUNK`` of one length at a time: (their indices, their bytes as
    rows of little-endian uint64 words zero-padded to 16-byte blocks, length)."""
    if not lengths.size:
        return
    order = np.argsort(lengths, kind="stable")
    lengths = lengths[order]
    edges = np.flatnonzero(np.diff(lengths)) + 1
    for lo, hi in zip([0, *edges.tolist()], [*edges.tolist(), lengths.size], strict=True):
        length = int(lengths[lo])
        if not length:
            continue
        width = -(-length // 16) * 16
        # Every ``length`` bytes of the buffer as one item (no copy): gathering
        # items is ~3x faster than gathering rows of a 2-d window view.
        items = np.ndarray((buf.size - length + 1,), f"V{length}", buf, strides=(1,))
        for c in range(lo, hi, _HLL_CHUNK):
            idx = order[c : min(hi, c + _HLL_CHUNK)]
            at = starts[idx]
            mat = _WORK.take("words", idx.size * width, np.uint8).reshape(idx.size, width)
            mat[:, length:] = 0
            if _evenly_spaced(at, length):  # as consecutive strings of one length are
                # One strided copy, ~4x faster.
                step = int(at[1] - at[0])
                rows = np.lib.stride_tricks.as_strided(
                    buf[at[0] :], shape=(at.size, length), strides=(step, 1), writeable=False
                )
                mat[:, :length] = rows
            else:
                mat[:, :length] = items[at].view(np.uint8).reshape(at.size, length)
            yield idx, mat.view("<u8"), length


def _evenly_spaced(at: np.ndarray, length: int) -> bool:
    """Whether the increasing starts ``at`` of strings of ``length`` bytes are
    ``length`` (Arrow) or ``length + 1`` (NUL-joined) bytes apart each."""
    if at.size < 2:
        return False
    span = int(at[-1] - at[0])
    if span == length * (at.size - 1):
        return True  # strings do not overlap: no gap is below length, so none above
    return span == (length + 1) * (at.size - 1) and bool((np.diff(at) == length + 1).all())


def _string_hashes(
    buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The two words of the MurmurHash3_x64_128 HLL uses (seed 9001) of each byte
    string ``buf[starts[i] : starts[i] + lengths[i]]`` (0 and 0 for empty ones)."""
    h1, h2 = np.zeros(lengths.size, np.uint64), np.zeros(lengths.size, np.uint64)
    sc = _WORK.scratch
    for idx, words, length in _string_words(buf, starts, lengths):
        h1[idx], h2[idx] = _murmur(words, length, sc)
    return h1, h2


def _hll_image(reg: np.ndarray) -> bytes:
    """A serialised HLL_8 sketch in HLL mode holding registers ``reg``."""
    lg_k = int(reg.size).bit_length() - 1
    inv = np.ldexp(1.0, -reg.astype(np.int32))
    high = reg >= 32
    head = struct.pack(
        "<8B3d2I",
        10,  # preamble ints (HLL mode)
        1,  # serialisation version
        7,  # family: HLL
        lg_k,
        0,  # lg_arr: no aux map for HLL_8
        8 | 16,  # flags: compact, out of order (composite estimator, no HIP)
        0,  # cur_min: always 0 for HLL_8
        2 | 2 << 2,  # mode HLL, target HLL_8
        0.0,  # HIP accumulator: unused out of order
        float(inv[~high].sum()),  # kxq0
        float(inv[high].sum()),  # kxq1
        int(np.count_nonzero(reg == 0)),  # registers at cur_min (0)
        0,  # aux count
    )
    return head + reg.tobytes()


def _hll_self_check() -> bool:
    """Registers computed here equal datasketches' own (see "HLL from numpy")."""
    rng = np.random.default_rng(0)
    ints = rng.integers(-(2**63), 2**63 - 1, 3000, dtype=np.int64)
    ints[:3] = (0, -1, 1)
    fracs = rng.normal(size=3000)
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyz0123456789-_é€"))
    strings = ["".join(rng.choice(alphabet, 1 + i % 40)) for i in range(3000)]
    buf, _, starts, lengths = _string_buffer(strings)
    cases: list[tuple[list[Any], Any]] = [
        (ints.tolist(), lambda reg: _hll_numbers(reg, ints)),
        (fracs.tolist(), lambda reg: _hll_numbers(reg, fracs)),
        (strings, lambda reg: _hll_strings(reg, buf, starts, lengths)),
    ]
    for values, fill in cases:
        sketch = ds.hll_sketch(HLL_LG_K, ds.HLL_8)
        _drain(map(sketch.update, values))
        reg = np.zeros(1 << HLL_LG_K, np.uint8)
        try:
            fill(reg)
            image = ds.hll_sketch.deserialize(_hll_image(reg))
        except Exception:
            return False
        theirs = sketch.serialize_compact()
        if theirs[40:] != reg.tobytes() or image.serialize_compact()[40:] != theirs[40:]:
            return False
        if abs(image.get_estimate() - sketch.get_estimate()) > 0.05 * len(values):
            return False
    return True


def _plain_strings(
    keys: Sequence[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(UTF-8 buffer, starts, lengths, own) of distinct strings, where ``own``
    marks those that are their own canonical key: not long, ASCII, and not
    made only of characters a JSON number uses (the others need _str_key).
    None when a key holds a NUL."""
    buf, chars, starts, lengths = _string_buffer(keys)
    if not starts.size:
        return None
    # Each key's segment starts at the NUL before it, whose flags are 0.
    flags = np.bitwise_or.reduceat(chars, np.maximum(starts - 1, 0))
    return buf, starts, lengths, _own_keys(flags, lengths)


def _own_key(s: str) -> bool:
    """``_own_keys`` for one string."""
    return not s or (s.isascii() and len(s) <= MAX_STRING and bool(s.strip(_NUMBER_CHARS)))


def _own_keys(flags: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Which strings are their own canonical key, from the OR of ``_CHAR_FLAGS``
    over each one's bytes and its length in bytes."""
    own: np.ndarray = ((flags & 1) == 1) & (flags < 2) & (lengths <= MAX_STRING)
    own |= lengths == 0
    return own


# Per byte of a UTF-8 key: 1 = not a character of a JSON number, 2 = not ASCII.
_NUMBER_CHARS = "\x00-+.0123456789eE"
_CHAR_FLAGS = bytes(0 if chr(c) in _NUMBER_CHARS else 1 if c < 128 else 3 for c in range(256))
_DIGIT_FREE_NUMBER_BYTES = [ord(c) for c in _NUMBER_CHARS if not c.isdigit()]


def _char_flags(chars: np.ndarray) -> np.ndarray:
    """``_CHAR_FLAGS`` of each of the bytes ``chars`` (uint8), in the "flags"
    scratch buffer: a few vectorised compares, ~2x faster than ``bytes.translate``
    (which needs two fresh copies of the bytes)."""
    n = chars.size
    flags, tmp = _WORK.take("flags", n, np.uint8), _WORK.take("flags_tmp", n, np.uint8)
    number, same = _WORK.take("number", n, np.bool_), _WORK.take("same", n, np.bool_)
    np.subtract(chars, ord("0"), out=tmp)  # wraps below "0"
    np.less(tmp, 10, out=number)
    for c in _DIGIT_FREE_NUMBER_BYTES:
        np.equal(chars, c, out=same)
        number |= same
    np.logical_not(number, out=flags.view(np.bool_))  # 1: not a character of a number
    np.right_shift(chars, 7, out=tmp)
    tmp <<= 1
    flags |= tmp  # 2: not ASCII
    return flags


def _string_buffer(keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The keys' UTF-8 bytes joined by NUL, ``_CHAR_FLAGS`` of those bytes, and
    each key's start and length; empty positions when a key holds a NUL itself."""
    data = "\x00".join(keys).encode("utf-8", "surrogatepass")
    buf = np.frombuffer(data, np.uint8)
    flags = _char_flags(buf)
    seps = np.flatnonzero(buf == 0)
    if seps.size != len(keys) - 1:
        empty = np.zeros(0, np.intp)
        return buf, flags, empty, empty
    bounds = np.empty(len(keys) + 1, np.intp)
    bounds[0] = -1
    bounds[1:-1] = seps
    bounds[-1] = buf.size
    return buf, flags, bounds[:-1] + 1, np.diff(bounds) - 1


# -- Arrow input ------------------------------------------------------------------
#
# A column may arrive as a pyarrow Array or ChunkedArray (what the monitor's
# training reader hands over for strings), recognised by its module so that
# this module never imports pyarrow unless given one. Strings are counted by
# Arrow (``value_counts``, in C++, in order of first appearance as a Counter
# would) and their distinct keys go through the same code as a list's, read
# from the array's offsets and UTF-8 buffer instead of Python ``str``: the
# profile equals the one ``to_pylist()`` would give, byte for byte. A batch
# of nearly distinct strings (an id column, told by a sample) is counted by
# sorting the strings' 64-bit hashes instead, exactly (a hash two different
# strings share sends the batch back to Arrow), and those hashes then feed
# HLL. Numbers go through numpy.


class ArrowArray(Protocol):
    """What is used of a pyarrow ``Array`` or ``ChunkedArray``."""

    @property
    def type(self) -> Any: ...

    @property
    def null_count(self) -> int: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Any]: ...


Column = Sequence[Any] | np.ndarray | ArrowArray


def _is_arrow(values: object) -> bool:
    return type(values).__module__.startswith("pyarrow")


def _is_text(t: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def _arrow_counts(arr: Any) -> tuple[Any, Any, tuple[np.ndarray, np.ndarray] | None]:
    """(distinct non-null strings, their counts, their hashes if computed) of an
    Arrow string column, in order of first appearance; a dictionary column's
    values decoded."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(arr, pa.Array) and _is_text(arr.type) and len(arr) >= ID_SAMPLE:
        sample = pc.count_distinct(arr.slice(0, ID_SAMPLE)).as_py()
        if sample * 20 >= ID_SAMPLE * 19:  # an id-like column
            by_hash = _arrow_counts_by_hash(arr)
            if by_hash is not None:
                return by_hash
    counted = pc.value_counts(arr)
    values, counts = counted.field(0), counted.field(1)
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
        if pc.count_distinct(values, mode="all").as_py() < len(values):  # repeats in the dictionary
            return _arrow_counts(arr.cast(values.type))
    if values.null_count:
        valid = values.is_valid()
        values, counts = values.filter(valid), counts.filter(valid)
    return values, counts, None


def _arrow_counts_by_hash(arr: Any) -> tuple[Any, Any, tuple[np.ndarray, np.ndarray]] | None:
    """``_arrow_counts`` of a string Array whose strings are (nearly) all
    distinct, ~3x faster than Arrow's hash table (``value_counts``): a 64-bit
    hash per string, sorted, tells the strings that occur once (nearly all)
    from the few that may repeat; those are counted by Arrow. None when two
    different strings share a hash (the caller counts with Arrow instead)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if arr.null_count:
        arr = arr.drop_null()
    n = len(arr)
    buf, offsets = _arrow_spans(arr)
    h1, h2 = _string_hashes(buf, offsets[:-1], np.diff(offsets))
    s = _sorted(h1)
    same = _WORK.take("mask", max(n - 1, 0), np.bool_)
    np.equal(s[1:], s[:-1], out=same)
    counts = np.ones(n, np.int64)
    if not same.any():
        return arr, pa.array(counts), (h1, h2)
    shared = np.unique(s[1:][same])
    rows = np.flatnonzero(np.isin(h1, shared))  # the strings that may repeat
    if pc.count_distinct(arr.take(rows), mode="all").as_py() != shared.size:
        return None  # a hash shared by different strings
    _, first, repeats = np.unique(h1[rows], return_index=True, return_counts=True)
    keep = np.ones(n, np.bool_)
    keep[rows] = False
    keep[rows[first]] = True
    counts[rows[first]] = repeats
    return arr.filter(keep), pa.array(counts[keep]), (h1[keep], h2[keep])


def _arrow_texts(values: Any) -> list[str]:
    """An Arrow string array as ``str``; bytes that are not UTF-8 replaced
    (U+FFFD), as the training reader decodes binary columns."""
    import pyarrow as pa

    try:
        return list(values.to_pylist())
    except UnicodeDecodeError:
        raw = values.cast(pa.large_binary()).to_pylist()
        return [b.decode("utf-8", "replace") for b in raw]


def _arrow_spans(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """(UTF-8 bytes, offsets) of an Arrow string Array, read from its buffers:
    string i is ``buf[offsets[i] : offsets[i + 1]]``."""
    import pyarrow as pa

    _, offsets_buf, data_buf = values.buffers()
    width = np.int64 if pa.types.is_large_string(values.type) else np.int32
    offsets = np.frombuffer(offsets_buf, width)[values.offset : values.offset + len(values) + 1]
    offsets = offsets.astype(np.intp)
    end = int(offsets[-1])
    buf = np.frombuffer(data_buf, np.uint8)[:end] if end else np.zeros(0, np.uint8)
    return buf, offsets


def _arrow_plain(
    values: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """``_plain_strings`` of an Arrow array of distinct strings, from its
    buffers. None when a string holds a NUL (as ``_plain_strings``) or the bytes
    are not valid UTF-8."""
    import pyarrow as pa

    buf, offsets = _arrow_spans(values)
    body = buf[offsets[0] :]
    if not body.all():  # a NUL
        return None
    chars = _char_flags(body)
    starts, lengths = offsets[:-1], np.diff(offsets)
    flags = np.zeros(starts.size, np.uint8)
    full = lengths > 0
    if full.any():
        flags[full] = np.bitwise_or.reduceat(chars, starts[full] - offsets[0])
    if (flags >= 2).any():  # non-ASCII bytes: Arrow may hold invalid UTF-8
        try:
            values.validate(full=True)
        except pa.ArrowInvalid:
            return None
    return buf, starts, lengths, _own_keys(flags, lengths)


def _drain(calls: Iterable[Any]) -> None:
    """Run a lazy ``map`` of calls at C speed."""
    deque(calls, maxlen=0)


@functools.cache
def _vector_hll() -> bool:
    """Whether the numpy HLL path may be used (its self-check passed)."""
    return _hll_self_check()


def _distinct(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a sorted numeric array: its distinct values, and those frequent
    enough for frequent-items (count * FREQ_RESOLUTION_NUMERIC > size) with
    their counts."""
    n = s.size
    if not n:
        return s, s, np.zeros(0, np.int64)
    first = _WORK.take("mask", n, np.bool_)
    first[0] = True
    np.not_equal(s[1:], s[:-1], out=first[1:])
    m = n // FREQ_RESOLUTION_NUMERIC
    k = int(np.count_nonzero(first))
    if m == 0 or k <= n >> 6:  # a small batch, or few runs: count every run
        starts = np.flatnonzero(first)
        u = s[starts]
        counts = np.diff(starts, append=n)
        if m == 0:  # every value counts
            return u, u, counts
        heavy = counts > m
        return u, u[heavy], counts[heavy]
    # A value occurs more than m times iff its run covers some s[i] and s[i + m]:
    # no count per distinct value is needed for the (many) rare ones.
    u = s[first]
    same = _WORK.take("mask", n - m, np.bool_)
    np.equal(s[m:], s[:-m], out=same)
    heavy = s[m:][same]
    if heavy.size:
        keep = np.empty(heavy.size, dtype=bool)
        keep[0] = True
        np.not_equal(heavy[1:], heavy[:-1], out=keep[1:])
        heavy = heavy[keep]
    counts = np.searchsorted(s, heavy, "right") - np.searchsorted(s, heavy, "left")
    return u, heavy, counts


def _sorted(a: np.ndarray) -> np.ndarray:
    """``np.sort(a)`` of a 1-d array, in the "sort" scratch buffer."""
    s = _WORK.take("sort", a.size, a.dtype)
    np.copyto(s, a)
    s.sort()
    return s


def _float_keys(u: np.ndarray, whole: bool | None) -> tuple[np.ndarray, np.ndarray, list[Key]]:
    """canonical() keys of distinct non-NaN floats ``u``: whole numbers in int64
    range as int64, other finite numbers as themselves, the rest (inf, huge
    whole numbers) as Python keys. ``whole``: True when every value of ``u`` is
    known to be a finite whole number, False when every one is finite and not
    whole, None when unknown (a mask per value then sorts them out)."""
    if whole is False:
        return u[:0].astype(np.int64), u, []
    if whole and u.size and max(-u[0], u[-1]) < 2.0**63:  # sorted: the ends are the extremes
        ints = _WORK.take("ints", u.size, np.int64)
        np.copyto(ints, u, casting="unsafe")  # as astype(np.int64)
        return ints, u[:0], []
    finite = np.isfinite(u)
    whole = finite & (u == np.floor(u))
    small = whole & (np.abs(u) < 2.0**63)
    if bool(small.all()):
        return u.astype(np.int64), u[:0], []
    frac = finite & ~whole
    odd = [k for k in map(_float_key, u[~(small | frac)].tolist()) if k is not None]
    return u[small].astype(np.int64), u[frac], odd


def _float_texts(x: np.ndarray, whole: bool | None = None) -> list[str]:
    """``_text(_float_key(v))`` of each float of ``x`` (sorted, none NaN), in
    order, at C speed: repr() for fractional ones, str() of the int64 for whole
    ones below 2**63 (``int(v)``, exactly), a call each only for inf and larger
    whole ones. ``whole`` as ``_float_keys`` takes it."""
    if whole is False or not x.size:
        return list(map(repr, x.tolist()))
    inside = x[0] >= -(2.0**63) and x[-1] < 2.0**63  # sorted: the ends are the extremes
    if whole and inside:
        return list(map(str, x.astype(np.int64).tolist()))
    texts = np.array(list(map(repr, x.tolist())), dtype=object)
    at = np.flatnonzero(x == np.floor(x))  # inf too
    small = np.abs(x[at]) < 2.0**63
    texts[at[small]] = list(map(str, x[at[small]].astype(np.int64).tolist()))
    for i in at[~small].tolist():
        key = _float_key(float(x[i]))
        if key is not None:  # always: no NaN here
            texts[i] = _text(key)
    return texts.tolist()  # type: ignore[no-any-return]


def _keyed(counts: Mapping[Any, int]) -> dict[Key, int]:
    """Value counts re-counted by canonical key ("1" and 1 fold together)."""
    keys: dict[Key, int] = {}
    for v, c in counts.items():
        k = _str_key(v) if type(v) is str else _classify(v)[2]
        if k is not None:
            keys[k] = keys.get(k, 0) + c
    return keys


def _text(key: Key) -> str:
    return key if isinstance(key, str) else (str(key) if isinstance(key, int) else repr(key))


def canonical(value: Any) -> str | None:
    """The categorical key of ``value``: None for null and NaN, else a string
    equal for equal values (``canonical(1) == canonical(1.0) == canonical("1")``)."""
    key = _classify(value)[2]
    return None if key is None else _text(key)


def value_kind(value: Any) -> str:
    """The kind of a value: "null" | "boolean" | "integral" | "fractional" | "string" |
    "other". NaN and inf are "fractional"; a whole float (3.0) is "integral"."""
    kind = _classify(value)[0]
    return "fractional" if kind in ("nan", "inf") else kind


class ColumnProfile:
    """Counters and sketches of one column; see the module docstring."""

    def __init__(self, kll_k: int = KLL_K) -> None:
        if not isinstance(kll_k, int) or not 8 <= kll_k <= 65535:
            raise ValueError(f"kll_k must be an integer in 8..65535, got {kll_k!r}")
        self.count = 0
        self.nulls = 0
        self.nan = 0
        self.inf = 0
        self.types: dict[str, int] = {}
        self.numeric_count = 0
        self.min: float | None = None
        self.max: float | None = None
        self.sum = 0.0
        self._mean = 0.0
        self._m2 = 0.0
        self.kll = ds.kll_doubles_sketch(kll_k)
        self.hll = ds.hll_sketch(HLL_LG_K, ds.HLL_8)
        self.freq = ds.frequent_strings_sketch(FREQ_LG_MAX)

    @property
    def kll_k(self) -> int:
        return int(self.kll.k)

    @property
    def mean(self) -> float | None:
        return self._mean if self.numeric_count else None

    @property
    def std(self) -> float | None:
        """Population standard deviation of the finite numbers."""
        if not self.numeric_count:
            return None
        return math.sqrt(max(self._m2, 0.0) / self.numeric_count)

    # -- updates ---------------------------------------------------------

    def _kinds(self, kinds: Mapping[str, int]) -> None:
        for kind, n in kinds.items():
            if n:
                self.types[kind] = self.types.get(kind, 0) + n

    def add_nulls(self, n: int) -> None:
        """Count ``n`` missing values (a column absent from ``n`` rows)."""
        if n > 0:
            self.count += n
            self.nulls += n
            self._kinds({"null": n})

    def update(self, values: Column) -> None:
        """Add a batch of Python values (None is null), a numpy array, or a
        pyarrow Array or ChunkedArray (see "Arrow input")."""
        if isinstance(values, np.ndarray):
            if values.dtype.kind in "fiu":
                self.update_numeric(values)
                return
            values = list(values.tolist())
        elif not isinstance(values, Sequence):
            if _is_arrow(values):
                self._update_arrow(values)
                return
            values = list(values)
        n = len(values)
        if not n:
            return
        if type(values[0]) is str and self._update_strings(values):
            return
        tc = set(map(type, values))
        if all(t in _NUMERIC_TYPES for t in tc):
            try:
                arr = np.array(values, dtype=np.float64)  # None -> NaN
            except (OverflowError, ValueError, TypeError):
                pass  # an int beyond float range: the general path copes
            else:
                exact = (int in tc or np.int64 in tc) and bool((np.abs(arr) >= 2.0**53).any())
                nulls = values.count(None) if type(None) in tc else 0
                self._numeric(arr, nulls, keys_from_floats=not exact)
                if exact:  # ints a float64 cannot tell apart: key the originals
                    self._feed_keys(_keyed(Counter(values)), FREQ_RESOLUTION_NUMERIC)
                return
        if all(t is str or t is type(None) for t in tc) and self._update_strings(values):
            return
        self._update_general(values)

    def _update_strings(self, values: Sequence[Any]) -> bool:
        """The batch if it holds only strings and None (False, untouched, if not).
        Types are checked on the distinct values: only a str subclass (the
        same key anyway) could hide behind an equal str."""
        try:
            counts = Counter(values)
        except TypeError:  # unhashable values
            return False
        if not all(t is str or t is type(None) for t in set(map(type, counts))):
            return False
        nulls = counts.pop(None, 0)
        self._count_strings(len(values), nulls)
        self._feed_strings(counts)
        return True

    def _update_arrow(self, arr: Any) -> None:
        """An Arrow column, profiled as its ``to_pylist()`` would be."""
        import pyarrow as pa

        t = arr.type
        if _is_text(t) or (pa.types.is_dictionary(t) and _is_text(t.value_type)):
            self._arrow_strings(arr)
        elif pa.types.is_integer(t) or pa.types.is_floating(t):
            self._arrow_numbers(arr)
        else:
            self.update(arr.to_pylist())

    def _arrow_numbers(self, arr: Any) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        nulls = arr.null_count
        if not nulls:
            self.update_numeric(arr.to_numpy(zero_copy_only=False))
            return
        if pa.types.is_integer(arr.type):
            lo, hi = (v.as_py() for v in pc.min_max(arr).values())
            if lo is not None and max(-lo, hi) >= 2**53:  # exact keys, as a list keeps them
                self.update(arr.to_pylist())
                return
        floats = arr.cast(pa.float64()).fill_null(math.nan).to_numpy(zero_copy_only=False)
        self._numeric(floats, nulls, keys_from_floats=True)

    def _arrow_strings(self, arr: Any) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        n, nulls = len(arr), arr.null_count
        if not n:
            return
        self._count_strings(n, nulls)
        if nulls == n:
            return
        values, counts, hashes = _arrow_counts(arr)
        plain = _arrow_plain(values) if len(values) >= VECTOR_HLL_MIN and _vector_hll() else None
        if plain is None:
            by_key: dict[str, int] = {}
            for key, c in zip(_arrow_texts(values), counts.to_pylist(), strict=True):
                by_key[key] = by_key.get(key, 0) + c
            self._feed_strings(by_key)
            return

        def found(names: list[str]) -> list[tuple[str, int]]:
            if len(names) > 8:  # one hash table of the values rather than a scan per name
                pos = pc.index_in(pa.array(names, values.type), value_set=values).to_pylist()
            else:
                pos = [pc.index(values, name).as_py() for name in names]
            return [
                (name, i) for name, i in zip(names, pos, strict=True) if i is not None and i >= 0
            ]

        cnt = counts.to_numpy()
        texts = lambda idx: values.take(idx).to_pylist()  # noqa: E731
        self._feed_plain(*plain, cnt, texts, found, hashes)

    def _count_strings(self, n: int, nulls: int) -> None:
        self.count += n
        self.nulls += nulls
        self._kinds({"null": nulls, "string": n - nulls})

    def _update_general(self, values: Sequence[Any]) -> None:
        kinds: Counter[str] = Counter()
        keys: Counter[Key] = Counter()
        nums: list[float] = []
        for v in values:
            kind, num, key = _classify(v)
            kinds[kind] += 1
            if num is not None:
                nums.append(num)
            if key is not None:
                keys[key] += 1
        self.count += len(values)
        self.nulls += kinds["null"]
        self.nan += kinds["nan"]
        self.inf += kinds["inf"]
        kinds["fractional"] += kinds.pop("nan", 0) + kinds.pop("inf", 0)
        self._kinds(kinds)
        if nums:
            self._moments(np.array(nums, dtype=np.float64))
        numbers_only = kinds.keys() <= {"null", "integral", "fractional"}
        self._feed_keys(keys, FREQ_RESOLUTION_NUMERIC if numbers_only else FREQ_RESOLUTION)

    def update_numeric(self, arr: np.ndarray, nulls: int = 0) -> None:
        """Fast path: a numeric array (NaN counts as NaN, not null) plus a
        count of nulls. Integer arrays keep exact keys for the distinct count."""
        a = np.asarray(arr)
        if a.dtype.kind not in "fiu":  # bools, strings, objects
            self.update(a.tolist())
            self.add_nulls(nulls)
            return
        if a.dtype.kind == "f":
            self._numeric(np.require(a, np.float64).ravel(), 0, keys_from_floats=True)
        else:
            s = _sorted(a.ravel())
            floats = _WORK.take("floats", s.size, np.float64)
            np.copyto(floats, s, casting="unsafe")  # as astype(np.float64)
            self._sorted_numeric(floats, s.size, 0, 0, integral=s.size)
            if s.size and int(s[-1]) >= _INT64:  # uint64 beyond int64: exact keys one by one
                u, c = np.unique(s, return_counts=True)
                keys = zip(u.tolist(), c.tolist(), strict=True)
                self._feed_keys({_int_key(k): n for k, n in keys}, FREQ_RESOLUTION_NUMERIC)
            else:
                self._feed_int_keys(*_distinct(s.astype(np.int64, copy=False)))
        self.add_nulls(nulls)

    def _numeric(self, arr: np.ndarray, nulls: int, keys_from_floats: bool) -> None:
        """Count and sketch a float64 array in which ``nulls`` NaNs are nulls."""
        # One sort serves everything: the finite values are a slice of it
        # (min, max at its ends), the keys are its runs, and KLL takes a
        # sorted batch ~2.5x faster than a shuffled one (same error bounds:
        # KLL's guarantee holds for any order).
        s = _sorted(arr)  # NaN sort last (and searchsorted finds them there)
        nans = s.size - int(np.searchsorted(s, np.nan)) if s.size and np.isnan(s[-1]) else 0
        valid = s[: s.size - nans]
        integral, finite = self._sorted_numeric(valid, arr.size, nulls, nans - nulls)
        if keys_from_floats:
            # Whether every distinct key is whole, or none is, follows from the counts.
            whole = None if finite < valid.size or 0 < integral < finite else integral > 0
            u, heavy, counts = _distinct(valid)
            self._feed_float_keys(u, heavy, counts, whole)

    def _sorted_numeric(
        self, valid: np.ndarray, n: int, nulls: int, nan: int, integral: int | None = None
    ) -> tuple[int, int]:
        """Counters, moments and KLL from the sorted non-NaN float64 values of a
        batch of ``n`` values of which ``nulls`` are null and ``nan`` NaN (and
        ``integral`` whole, if known). Returns the whole and the finite counts."""
        lo = int(np.searchsorted(valid, -np.inf, "right")) if valid.size else 0
        hi = int(np.searchsorted(valid, np.inf, "left")) if valid.size else 0
        finite = valid[lo:hi]
        inf = valid.size - finite.size
        if integral is None:
            floor = _WORK.take("tmp", finite.size, np.float64)
            np.floor(finite, out=floor)
            same = _WORK.take("mask", finite.size, np.bool_)
            np.equal(finite, floor, out=same)
            integral = int(np.count_nonzero(same))
        self.count += n
        self.nulls += nulls
        self.nan += nan
        self.inf += inf
        self._kinds(
            {"null": nulls, "integral": integral, "fractional": finite.size - integral + nan + inf}
        )
        if finite.size:
            self._moments(finite, lo=float(finite[0]), hi=float(finite[-1]))
        return integral, finite.size

    def _moments(self, x: np.ndarray, lo: float | None = None, hi: float | None = None) -> None:
        """Moments and KLL from float64 values ``x``; ``lo`` and ``hi`` given when
        ``x`` is sorted (its ends)."""
        nb = x.size
        with np.errstate(all="ignore"):
            total = float(x.sum())  # may overflow to inf near 1e308: kept, not warned
            mean_b = total / nb  # what x.mean() computes
            d = _WORK.take("tmp", nb, np.float64)
            np.subtract(x, mean_b, out=d)
            # Not np.dot: OpenBLAS would wake threads that spin on the other
            # core for a vector this size, for no gain.
            np.multiply(d, d, out=d)
            m2_b = float(d.sum())
        if lo is None or hi is None:
            lo, hi = float(x.min()), float(x.max())
            self.kll.update(x)
        else:
            # KLL fills its level 0 from the top down: fed in descending order, it
            # finds each full level already sorted (~20% faster for a batch with
            # many distinct values than ascending, itself ~2.5x faster than shuffled).
            np.copyto(d, x[::-1])
            self.kll.update(d)
        self._combine(nb, mean_b, m2_b, total, lo, hi)

    def _combine(
        self, nb: int, mean_b: float, m2_b: float, sum_b: float, lo: float, hi: float
    ) -> None:
        """Chan et al.: fold a part's (n, mean, M2) into this profile's."""
        na = self.numeric_count
        n = na + nb
        with np.errstate(all="ignore"):
            delta = mean_b - self._mean
            self._mean = self._mean + delta * nb / n if na else mean_b
            self._m2 = self._m2 + m2_b + delta * delta * na * nb / n if na else m2_b
        self.numeric_count = n
        self.sum += sum_b
        self.min = lo if self.min is None else min(self.min, lo)
        self.max = hi if self.max is None else max(self.max, hi)

    def _hll_fold(self, reg: np.ndarray) -> None:
        """Fold HLL_8 registers computed in numpy into the sketch (see ``_hll_image``)."""
        union = ds.hll_union(HLL_LG_K)
        union.update(self.hll)
        union.update(ds.hll_sketch.deserialize(_hll_image(reg)))
        self.hll = union.get_result(ds.HLL_8)

    def _feed_int_keys(self, u: np.ndarray, heavy: np.ndarray, counts: np.ndarray) -> None:
        """HLL from distinct int64 keys ``u``; frequent-items from the ``heavy``
        ones with their ``counts`` (see ``_distinct``)."""
        if u.size >= VECTOR_HLL_MIN and _vector_hll():
            reg = np.zeros(1 << HLL_LG_K, np.uint8)
            _hll_numbers(reg, u)
            self._hll_fold(reg)
        else:
            _drain(map(self.hll.update, u.tolist()))
        _drain(map(self.freq.update, map(str, heavy.tolist()), counts.tolist()))

    def _feed_float_keys(
        self, u: np.ndarray, heavy: np.ndarray, counts: np.ndarray, whole: bool | None = None
    ) -> None:
        """HLL from distinct non-NaN floats ``u``; frequent-items from the
        ``heavy`` ones with their ``counts`` (see ``_distinct``; ``whole`` as
        ``_float_keys`` takes it)."""
        # Keys as canonical() makes them, without a Python call per value:
        # int64 for whole numbers, the float itself otherwise.
        ints, fracs, odd = _float_keys(u, whole)
        if ints.size + fracs.size >= VECTOR_HLL_MIN and _vector_hll():
            reg = np.zeros(1 << HLL_LG_K, np.uint8)
            _hll_numbers(reg, ints, fracs)
            self._hll_fold(reg)
        else:
            _drain(map(self.hll.update, ints.tolist()))
            _drain(map(self.hll.update, fracs.tolist()))
        _drain(map(self.hll.update, odd))
        _drain(map(self.freq.update, _float_texts(heavy, whole), counts.tolist()))

    def _feed_strings(self, counts: Mapping[str, int]) -> None:
        """HLL and frequent-items from a batch's counts of distinct strings."""
        n = len(counts)
        keys = list(counts)
        plain = _plain_strings(keys) if n >= VECTOR_HLL_MIN and _vector_hll() else None
        if plain is None:
            self._feed_keys(_keyed(counts))
            return

        def found(names: list[str]) -> list[tuple[str, int]]:
            hits = [name for name in names if name in counts]
            pos = {key: i for i, key in enumerate(keys)} if hits else {}
            return [(name, pos[name]) for name in hits]

        cnt = np.fromiter(counts.values(), np.int64, n)
        self._feed_plain(*plain, cnt, lambda idx: [keys[i] for i in idx.tolist()], found)

    def _feed_plain(
        self,
        buf: np.ndarray,
        starts: np.ndarray,
        lengths: np.ndarray,
        own: np.ndarray,
        cnt: np.ndarray,
        take: Callable[[np.ndarray], list[str]],
        found: Callable[[list[str]], list[tuple[str, int]]],
        hashes: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """HLL and frequent-items from distinct strings held as UTF-8 bytes
        (``buf[starts[i] : starts[i] + lengths[i]]``, ``own`` as ``_plain_strings``
        makes it) with their counts ``cnt``. ``take(indices)`` gives those keys
        as ``str``; ``found(names)`` gives (name, index) of the names among them;
        ``hashes``, their ``_string_hashes`` when already computed."""
        reg = np.zeros(1 << HLL_LG_K, np.uint8)
        fast = own & (lengths > 0)
        if hashes is None:
            _hll_strings(reg, buf, starts[fast], lengths[fast])
        else:
            _hll_hashed(reg, hashes[0][fast], hashes[1][fast])
        self._hll_fold(reg)
        other = np.flatnonzero(~own)
        raw = take(other)
        rest = _keyed(dict(zip(raw, cnt[other].tolist(), strict=True))) if raw else {}
        _drain(map(self.hll.update, rest))
        # canonical() may turn an odd key into one of the plain ones ("1e999" ->
        # "inf", a Kelvin sign -> "K"): frequent-items gets the sum, once.
        odd = set(raw)
        changed = [k for k in rest if isinstance(k, str) and k not in odd and _own_key(k)]
        for name, i in found(changed) if changed else []:
            rest[name] += int(cnt[i])
            own[i] = False
        total = int(cnt.sum())
        freq = self.freq.update
        heavy = np.flatnonzero(own & (cnt * FREQ_RESOLUTION > total))
        _drain(map(freq, take(heavy), cnt[heavy].tolist()))
        for key, c in rest.items():
            if c * FREQ_RESOLUTION > total:
                freq(_text(key), c)

    def _feed_keys(self, keys: Mapping[Key, int], resolution: int = FREQ_RESOLUTION) -> None:
        _drain(map(self.hll.update, keys))
        total = sum(keys.values())
        for k, n in keys.items():
            if n * resolution > total:
                self.freq.update(_text(k), n)

    def merge(self, other: ColumnProfile) -> None:
        """Fold ``other`` into this profile (``other`` is left unchanged)."""
        self.count += other.count
        self.nulls += other.nulls
        self.nan += other.nan
        self.inf += other.inf
        self._kinds(other.types)
        if other.numeric_count and other.min is not None and other.max is not None:
            self._combine(
                other.numeric_count, other._mean, other._m2, other.sum, other.min, other.max
            )
            self.kll.merge(other.kll)
        union = ds.hll_union(HLL_LG_K)
        union.update(self.hll)
        union.update(other.hll)
        self.hll = union.get_result(ds.HLL_8)
        self.freq.merge(other.freq)

    # -- queries ---------------------------------------------------------

    def distinct(self) -> float:
        """Estimated number of distinct non-null, non-NaN values."""
        return float(self.hll.get_estimate())

    def top(self, n: int) -> list[tuple[str, int]]:
        """Up to ``n`` most frequent canonical keys with estimated counts."""
        if n <= 0:
            return []
        items = self.freq.get_frequent_items(ds.frequent_items_error_type.NO_FALSE_NEGATIVES)
        items.sort(key=lambda it: (-it[1], it[0]))
        return [(str(it[0]), int(it[1])) for it in items[:n]]

    def quantiles(self, ranks: Sequence[float]) -> list[float]:
        """Values at normalised ``ranks`` (0..1, inclusive ranks); [] when no numbers."""
        if any(not 0.0 <= r <= 1.0 for r in ranks):
            raise ValueError(f"ranks must lie in [0, 1], got {list(ranks)!r}")
        if self.kll.is_empty() or not ranks:
            return []
        return [float(q) for q in self.kll.get_quantiles(list(ranks), True)]

    def cdf(self, points: Sequence[float], inclusive: bool = True) -> list[float]:
        """Share of numbers <= each point (< with ``inclusive=False``); [] when no numbers."""
        if self.kll.is_empty():
            return []
        return [
            math.nan if math.isnan(p) else float(self.kll.get_rank(float(p), inclusive))
            for p in points
        ]

    def pmf(self, split_points: Sequence[float]) -> list[float]:
        """Shares in the len+1 intervals (-inf, s0], (s0, s1], ..., (s_last, inf);
        [] when no numbers. Split points must increase strictly."""
        pts = [float(p) for p in split_points]
        if any(math.isnan(p) for p in pts) or any(a >= b for a, b in pairwise(pts)):
            raise ValueError(f"split points must increase strictly, got {pts!r}")
        if self.kll.is_empty():
            return []
        return [float(p) for p in self.kll.get_pmf(pts, True)]

    def inferred_type(self) -> str:
        """SageMaker's words: "Integral" | "Fractional" | "String" | "Unknown"."""
        present = self.count - self.nulls
        if present == 0:
            return "Unknown"
        numeric = self.types.get("integral", 0) + self.types.get("fractional", 0)
        if numeric < present:
            return "String"
        return "Fractional" if self.types.get("fractional", 0) else "Integral"

    # -- serialisation ---------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "nulls": self.nulls,
            "nan": self.nan,
            "inf": self.inf,
            "types": dict(self.types),
            "numeric_count": self.numeric_count,
            "min": self.min,
            "max": self.max,
            "sum": _enc_float(self.sum),
            "mean": _enc_float(self._mean),
            "m2": _enc_float(self._m2),
            "kll": _pack(self.kll.serialize()),
            "hll": _pack(self.hll.serialize_compact()),
            "freq": _pack(self.freq.serialize()),
        }

    def copy(self) -> ColumnProfile:
        """``from_dict(to_dict())`` without the encoding: the same fields and
        the same sketch bytes deserialised, so anything merged from the copy
        comes out as from the decoded profile (a sketch's internal order, which
        a frequent-items merge follows, is the deserialised one's)."""
        col = ColumnProfile.__new__(ColumnProfile)
        col.count, col.nulls, col.nan, col.inf = self.count, self.nulls, self.nan, self.inf
        col.numeric_count = self.numeric_count
        col.types = dict(self.types)
        col.min = None if self.min is None else float(self.min)
        col.max = None if self.max is None else float(self.max)
        col.sum = float(self.sum) or 0.0  # as _dec_float(...) or 0.0: -0.0 becomes 0.0
        col._mean = float(self._mean) or 0.0
        col._m2 = float(self._m2) or 0.0
        col.kll = ds.kll_doubles_sketch.deserialize(self.kll.serialize())
        col.hll = ds.hll_sketch.deserialize(self.hll.serialize_compact())
        col.freq = ds.frequent_strings_sketch.deserialize(self.freq.serialize())
        return col

    @classmethod
    def from_dict(cls, d: Any) -> ColumnProfile:
        """Inverse of ``to_dict``; ``ValueError`` naming the bad field."""
        if not isinstance(d, dict):
            raise ValueError(f"column profile is a {type(d).__name__}, not a JSON object")
        col = cls.__new__(cls)
        for name in ("count", "nulls", "nan", "inf", "numeric_count"):
            setattr(col, name, _need_int(d, name))
        types = d.get("types")
        if not isinstance(types, dict) or not all(
            k in _KINDS and type(v) is int and v >= 0 for k, v in types.items()
        ):
            raise ValueError(f"'types' is not a map of value kinds to counts: {types!r}")
        col.types = dict(types)
        col.min, col.max = _dec_float(d, "min", True), _dec_float(d, "max", True)
        col.sum = _dec_float(d, "sum", False) or 0.0
        col._mean = _dec_float(d, "mean", False) or 0.0
        col._m2 = _dec_float(d, "m2", False) or 0.0
        col.kll = _sketch(d, "kll", ds.kll_doubles_sketch.deserialize)
        col.hll = _sketch(d, "hll", ds.hll_sketch.deserialize)
        col.freq = _sketch(d, "freq", ds.frequent_strings_sketch.deserialize)
        if sum(col.types.values()) != col.count or col.types.get("null", 0) != col.nulls:
            raise ValueError(
                f"'types' {col.types} disagree with count {col.count}/nulls {col.nulls}"
            )
        if int(col.kll.n) != col.numeric_count or (col.min is None) != (col.numeric_count == 0):
            raise ValueError(
                f"the quantile sketch holds {col.kll.n} values but numeric_count is "
                f"{col.numeric_count} (min {col.min})"
            )
        return col


def _enc_float(x: float) -> float | str:
    return x if math.isfinite(x) else repr(x)  # JSON has no inf/NaN


def _dec_float(d: dict[str, Any], name: str, nullable: bool) -> float | None:
    v = d.get(name)
    if v is None and nullable:
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if v in ("inf", "-inf", "nan"):
        return float(v)
    raise ValueError(f"{name!r} is {v!r}, expected a number")


def _need_int(d: dict[str, Any], name: str) -> int:
    v = d.get(name)
    if type(v) is not int or v < 0:
        raise ValueError(f"{name!r} is {v!r}, expected a non-negative integer")
    return v


def _digest(raw: bytes) -> str:
    return blake2b(raw, digest_size=8).hexdigest()


def _pack(raw: bytes) -> dict[str, str]:
    # The checksum is checked before datasketches sees the bytes: a corrupt
    # KLL sketch can deserialise without error and then crash the process.
    return {"blake2b": _digest(raw), "data": base64.b64encode(raw).decode("ascii")}


def _sketch(d: dict[str, Any], name: str, load: Any) -> Any:
    v = d.get(name)
    if not isinstance(v, dict) or not isinstance(v.get("data"), str):
        raise ValueError(f"{name!r} sketch is missing")
    try:
        raw = base64.b64decode(v["data"], validate=True)
    except binascii.Error as exc:
        raise ValueError(f"{name!r} sketch is not base64 ({exc})") from exc
    if v.get("blake2b") != _digest(raw):
        raise ValueError(f"{name!r} sketch fails its checksum (corrupt or edited)")
    try:
        return load(raw)
    except Exception as exc:  # the C++ side raises several types
        raise ValueError(f"{name!r} sketch does not deserialise ({exc})") from exc


class DatasetProfile:
    """A row count and one ``ColumnProfile`` per column; see the module docstring."""

    def __init__(self, kll_k: int = KLL_K, meta: dict[str, Any] | None = None) -> None:
        ColumnProfile(kll_k)  # validates kll_k early
        self.kll_k = kll_k
        self.rows = 0
        self.columns: dict[str, ColumnProfile] = {}
        self.meta: dict[str, Any] = dict(meta or {})

    def _column(self, name: str) -> ColumnProfile:
        col = self.columns.get(name)
        if col is None:
            col = self.columns[name] = ColumnProfile(self.kll_k)
            col.add_nulls(self.rows)  # earlier rows lacked it
        return col

    def update_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Profile a batch of rows; a column absent from a row is null there."""
        n = len(rows)
        if not n:
            return
        if any(type(r) is not dict for r in rows):
            for i, r in enumerate(rows):
                if not isinstance(r, Mapping):
                    raise TypeError(f"row {i} is a {type(r).__name__}, not a mapping")
        names: set[Any] = set().union(*rows)
        if not all(type(k) is str and (k.isascii() or _clean(k) == k) for k in names):
            rows = [{_name(k): v for k, v in r.items()} for r in rows]
            names = set().union(*rows)
        order = sorted(names)
        if all(len(r) == len(order) for r in rows):  # every row has every column
            get = itemgetter(*order)
            table = (
                zip(*map(get, rows), strict=True)
                if len(order) > 1
                else [[r[order[0]] for r in rows]]
            )
            for name, col in zip(order, table, strict=True):
                self._column(name).update(col)
        else:
            for name in order:
                self._column(name).update([r.get(name) for r in rows])
        self._finish(names, n)

    def update_columns(self, columns: Mapping[str, Column], n_rows: int) -> None:
        """Profile a columnar batch of ``n_rows`` rows; absent columns are null.
        A column is a list of values, a numpy array or a pyarrow Array or
        ChunkedArray (see ``ColumnProfile.update``)."""
        names = {_name(k): k for k in columns}
        if len(names) != len(columns):
            raise ValueError(f"column names collide once made strings: {sorted(names)!r}")
        for name, values in columns.items():
            if len(values) != n_rows:
                raise ValueError(f"column {name!r} has {len(values)} values, expected {n_rows}")
        for name, key in names.items():
            self._column(name).update(columns[key])
        self._finish(set(names), n_rows)

    def _finish(self, seen: set[Any], n: int) -> None:
        for name, col in self.columns.items():
            if name not in seen:
                col.add_nulls(n)
        self.rows += n

    def merge(self, other: DatasetProfile) -> None:
        """Fold ``other`` in; this profile's meta wins on shared keys."""
        for name, col in self.columns.items():
            if name not in other.columns:
                col.add_nulls(other.rows)
        for name, col in other.columns.items():
            self._column(name).merge(col)
        self.rows += other.rows
        for k, v in other.meta.items():
            self.meta.setdefault(k, v)

    def to_bytes(self) -> bytes:
        doc = {
            "kind": KIND,
            "format": FORMAT,
            "rows": self.rows,
            "kll_k": self.kll_k,
            "meta": self.meta,
            "columns": {name: col.to_dict() for name, col in self.columns.items()},
        }
        try:
            return orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS)
        except TypeError as exc:
            raise ValueError(f"profile meta is not JSON-serialisable: {exc}") from exc

    def copy(self) -> DatasetProfile:
        """``from_bytes(to_bytes())`` without encoding and checking, for a
        profile that stays in this process (see ``ColumnProfile.copy``)."""
        prof = DatasetProfile(self.kll_k, orjson.loads(self._meta_bytes()))
        prof.rows = self.rows
        prof.columns = {name: col.copy() for name, col in self.columns.items()}
        return prof

    def _meta_bytes(self) -> bytes:
        try:
            return orjson.dumps(self.meta, option=orjson.OPT_NON_STR_KEYS)
        except TypeError as exc:
            raise ValueError(f"profile meta is not JSON-serialisable: {exc}") from exc

    @classmethod
    def from_bytes(cls, data: bytes) -> DatasetProfile:
        """Inverse of ``to_bytes``; ``ValueError`` saying what is wrong."""
        try:
            doc = orjson.loads(data)
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise ValueError(f"profile is not valid JSON ({exc})") from exc
        if not isinstance(doc, dict) or doc.get("kind") != KIND or "format" not in doc:
            raise ValueError("not a modeltap profile (no 'kind': 'modeltap.profile' and 'format')")
        if doc["format"] != FORMAT:
            raise ValueError(
                f"profile format {doc['format']!r} is not supported (expected {FORMAT})"
            )
        rows, kll_k = _need_int(doc, "rows"), _need_int(doc, "kll_k")
        meta, columns = doc.get("meta"), doc.get("columns")
        if not isinstance(meta, dict) or not isinstance(columns, dict):
            raise ValueError("profile 'meta' and 'columns' must be JSON objects")
        try:
            prof = cls(kll_k, meta)
        except ValueError as exc:
            raise ValueError(f"profile 'kll_k': {exc}") from exc
        prof.rows = rows
        for name, d in columns.items():
            try:
                col = ColumnProfile.from_dict(d)
            except ValueError as exc:
                raise ValueError(f"profile column {name!r}: {exc}") from exc
            if col.count != rows:
                raise ValueError(
                    f"profile column {name!r} counts {col.count} values in {rows} rows"
                )
            prof.columns[name] = col
        return prof


def _name(key: Any) -> str:
    """A column name that JSON and the sketches accept."""
    return _clean(key if isinstance(key, str) else str(key))
