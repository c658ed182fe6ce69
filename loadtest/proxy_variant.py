"""The proxy with part of the capture's background work cut out, to measure
where capture's cost lands (issue 4; ``python -m loadtest variants``).

    python -m loadtest.proxy_variant {whole,no-build,no-send,no-pack,no-keep} [proxy flags]

Every variant runs the request path as shipped: sample the exchange, pack it
(``capture.offload.pack_one``) and append it to the buffer. They differ in
what happens next:

- ``whole``: as shipped. The flusher packs the batch and sends it to the
  helper process, which builds, encodes and returns the records.
- ``no-build``: the flusher packs and sends the batch; the helper reads it
  and answers at once, with nothing built.
- ``no-send``: the flusher packs the batch, then drops it.
- ``no-pack``: the flusher drops the batch as it is sealed.
- ``no-keep``: as ``no-pack``, but the buffer holds one shared token instead
  of each packed exchange: the request path does the same work, and no
  memory is held from one request to the next until the seal.

The cut variants write no records. They are for measurement only, and
nothing outside ``loadtest`` uses this module.
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

VARIANTS = ("whole", "no-build", "no-send", "no-pack", "no-keep")

#: The helper's command line in ``no-build`` (as ``capture.offload._HELPER``).
_IDLE_HELPER = (
    "import sys; from loadtest.proxy_variant import serve_nothing; "
    "serve_nothing(*map(int, sys.argv[1:3]))"
)


def patch(variant: str, assign: Callable[[Any, str, Any], None] = setattr) -> None:
    """Cut ``variant``'s part out of this process's capture (``assign``:
    how to set an attribute; tests pass ``monkeypatch.setattr``)."""
    from capture import offload

    if variant not in VARIANTS:
        raise SystemExit(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    if variant == "no-keep":
        from capture import capturer

        real = capturer.pack_one

        def pack_and_forget(item: Any) -> bytes | None:
            real(item)
            return _TOKEN

        assign(capturer, "pack_one", pack_and_forget)
        assign(offload.EncoderProcess, "encode", _drop)
    if variant == "no-pack":
        assign(offload.EncoderProcess, "encode", _drop)
    elif variant == "no-send":
        assign(offload.EncoderProcess, "encode", _pack_and_drop)
    elif variant == "no-build":
        assign(offload, "_HELPER", _IDLE_HELPER)


_TOKEN = b"packed"


def _drop(self: Any, items: list[Any]) -> dict[Any, Any]:
    return {}


def _pack_and_drop(self: Any, items: list[Any]) -> dict[Any, Any]:
    from capture.offload import pack

    if pack(items) is None:
        raise ValueError("a batch item could not be packed")
    return {}


def serve_nothing(read_fd: int, write_fd: int) -> None:
    """A helper that reads each batch whole and answers that it built nothing."""
    reader, writer = Connection(read_fd), Connection(write_fd)
    try:
        reader.recv_bytes()  # the settings
        while True:
            reader.recv_bytes()
            writer.send_bytes(pickle.dumps(({}, 0, {}, None), 5))
    except (EOFError, OSError):
        return


def main(argv: list[str]) -> int:
    if not argv:
        raise SystemExit(__doc__)
    patch(argv[0])
    from server.__main__ import main as serve

    return serve(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
