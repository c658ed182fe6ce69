"""Keep freed heap memory for the next capture object (glibc only).

Why: a ``run`` reads each capture object whole on the read-ahead threads
(``monitor_job.columnar``): ~6 MB of JSON, its heads and tails, Arrow's
builders, ~20 MB of short-lived buffers an object. glibc's malloc hands the
top of each arena back to the kernel as soon as it is free
(``M_TRIM_THRESHOLD``, 128 KiB unless it adapts) and takes it again for the
next object, so every object paid for its pages again in faults and
zeroing: about two thirds of the job's system time.
``mallopt(M_TOP_PAD, 64 MiB)`` keeps up to 64 MiB at the top of each arena
instead.

Measured on the 1M-row scorer benchmark (``python -m loadtest monitor``'s
captures, ``modeltap-monitor run`` alone, alternated, BENCHMARKS.md): wall
6.7-6.8 s -> 6.2-6.3 s, system CPU 0.9-1.0 s -> 0.3 s, peak RSS +26 MB.
16 MiB did nothing measurable; 32-64 MiB did the same. For the ranking set
(10 rows a record, fewer and larger objects) no change beyond noise, and
18-41 MB more peak RSS (``python -m loadtest monitor --pad-reference``).

``MODELTAP_MONITOR_MALLOC_PAD`` sets the pad in bytes (``0`` leaves malloc
as it is). Other C libraries (musl, macOS) have no ``mallopt``: nothing is
changed there. Dask workers are other processes and keep their own
settings.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from collections.abc import Mapping

log = logging.getLogger(__name__)

PAD_ENV = "MODELTAP_MONITOR_MALLOC_PAD"
DEFAULT_PAD = 64 * 1024 * 1024
_M_TOP_PAD = -2  # glibc's <malloc.h>


class PadError(ValueError):
    """``MODELTAP_MONITOR_MALLOC_PAD`` is not a byte count."""


def pad_bytes(environ: Mapping[str, str] | None = None) -> int:
    """The pad the environment asks for (``DEFAULT_PAD`` when unset)."""
    env = os.environ if environ is None else environ
    text = env.get(PAD_ENV, "").strip()
    if not text:
        return DEFAULT_PAD
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = -1
    if not 0 <= value < 2**31:  # mallopt takes an int
        raise PadError(f"{PAD_ENV} must be a byte count from 0 to 2147483647, got {text!r}")
    return value


def keep_freed_memory(pad: int) -> bool:
    """``mallopt(M_TOP_PAD, pad)`` where glibc's malloc runs; True when set."""
    if pad <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if mallopt(_M_TOP_PAD, pad) != 1:
        log.debug("mallopt(M_TOP_PAD, %d) refused", pad)
        return False
    return True
