"""Deterministic sampling: the same key is kept or dropped everywhere.

``Sampler(rate)`` keeps a key when ``blake2b(salt + key)``, read as a 64-bit
unsigned integer, falls below ``rate * 2**64``. The proxy and the in-process
decorator share this function, so a request sampled by one is sampled by the
other, and a user (when the key is a user id) is in or out as a whole.

Exchanges that failed (status >= 500, or a transport/model exception) and
slow ones (latency >= ``slow_s``) are kept regardless by default: they are
the ones an investigation needs. ``decide`` returns the reason a record is
kept (``"sampled"``, ``"error"``, ``"slow"``) or ``None``.

The reason says what a record stands for, so it is looked at before the
hash: a record kept because it failed or was slow is ``"error"`` or
``"slow"`` (kept with certainty: it stands for itself) even when its key
also fell inside the sampled fraction, and ``"sampled"`` means kept with
probability ``rate`` only (it stands for ``1 / rate`` exchanges). The
monitor's volume check counts traffic that way (``Partial.traffic_rows``).
Which exchanges are kept does not depend on the order, only their labels.

Keys (``key`` setting): ``event_id`` (default) or ``header:<name>``, decided
on the request path at no parsing cost.
"""

from __future__ import annotations

import hashlib
import math

from capture.errors import ConfigError

_SCALE = 2**64


class Sampler:
    """Keep-or-drop decisions for exchanges.

    >>> s = Sampler(0.5)
    >>> s.hit("user-42") == Sampler(0.5).hit("user-42")
    True
    >>> Sampler(0.0).decide("k", status=503, latency_s=0.01)
    'error'
    """

    def __init__(
        self,
        rate: float = 1.0,
        *,
        keep_errors: bool = True,
        slow_s: float | None = 1.0,
        salt: str = "",
        key: str = "event_id",
    ) -> None:
        if not isinstance(rate, (int, float)) or math.isnan(rate) or not 0.0 <= rate <= 1.0:
            raise ConfigError(f"sample rate must be in [0, 1], got {rate!r}")
        if slow_s is not None and slow_s <= 0:
            raise ConfigError(f"slow threshold must be > 0 seconds, got {slow_s!r}")
        if key != "event_id" and not (key.startswith("header:") and len(key) > len("header:")):
            raise ConfigError(f"sample key must be 'event_id' or 'header:<name>', got {key!r}")
        self.rate = float(rate)
        self.keep_errors = keep_errors
        self.slow_s = slow_s
        self.key = key
        self.header = key[len("header:") :].lower() if key.startswith("header:") else None
        self._salt = salt.encode()
        self._threshold = int(self.rate * _SCALE)

    def hit(self, key: str) -> bool:
        """True when ``key`` falls inside the sampled fraction."""
        if self._threshold >= _SCALE:
            return True
        if self._threshold <= 0:
            return False
        digest = hashlib.blake2b(self._salt + key.encode("utf-8", "replace"), digest_size=8)
        return int.from_bytes(digest.digest(), "big") < self._threshold

    def kept_anyway(
        self, *, status: int = 200, latency_s: float = 0.0, error: bool = False
    ) -> str | None:
        """``"error"`` or ``"slow"`` when the exchange is kept whatever its key, else None."""
        if self.keep_errors and (error or status >= 500):
            return "error"
        if self.slow_s is not None and latency_s >= self.slow_s:
            return "slow"
        return None

    def decide(
        self, key: str, *, status: int = 200, latency_s: float = 0.0, error: bool = False
    ) -> str | None:
        """Why this exchange is kept, or None when it is sampled out."""
        reason = self.kept_anyway(status=status, latency_s=latency_s, error=error)
        if reason is None and self.hit(key):
            return "sampled"
        return reason
