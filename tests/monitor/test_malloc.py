"""``monitor_job.malloc``: the pad setting, its effect on a real glibc heap
(in a fresh interpreter, so this test process's heap is not the subject).
The CLI's answer to a bad value is in test_cli.py."""

from __future__ import annotations

import ctypes
import subprocess
import sys
import textwrap

import pytest

from monitor_job.malloc import DEFAULT_PAD, PAD_ENV, PadError, keep_freed_memory, pad_bytes


def test_pad_from_the_environment() -> None:
    assert pad_bytes({}) == DEFAULT_PAD
    assert pad_bytes({PAD_ENV: " "}) == DEFAULT_PAD
    assert pad_bytes({PAD_ENV: "0"}) == 0
    assert pad_bytes({PAD_ENV: "33_554_432"}) == 32 * 1024 * 1024
    for bad in ("lots", "-1", "1.5", str(2**31)):
        with pytest.raises(PadError, match=PAD_ENV):
            pad_bytes({PAD_ENV: bad})


def test_zero_pad_changes_nothing() -> None:
    assert keep_freed_memory(0) is False


def _glibc_mallinfo2() -> bool:
    try:
        return hasattr(ctypes.CDLL(None), "mallinfo2")
    except OSError:
        return False


# After freeing ~30 MB of blocks below the mmap threshold, how much free
# memory the main arena keeps at its top (mallinfo2's keepcost), in MiB.
_KEPT = textwrap.dedent(
    """
    import ctypes, sys
    from monitor_job.malloc import keep_freed_memory

    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = Info
    print(keep_freed_memory(int(sys.argv[1])))
    blocks = [bytearray(100_000) for _ in range(300)]
    del blocks
    print(libc.mallinfo2().keepcost >> 20)
    """
)


@pytest.mark.skipif(not _glibc_mallinfo2(), reason="needs glibc's mallopt and mallinfo2")
def test_the_pad_keeps_freed_memory_for_the_next_object() -> None:
    def kept(pad: int) -> tuple[str, int]:
        out = subprocess.run(
            [sys.executable, "-c", _KEPT, str(pad)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.split()
        return out[0], int(out[1])

    assert kept(0) == ("False", 0)  # glibc trims the freed top at once
    applied, mib = kept(DEFAULT_PAD)
    assert applied == "True" and mib >= 32
