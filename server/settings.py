"""Proxy settings: ``MODELTAP_*`` environment variables, or the same names as
CLI flags (``--upstream-url`` for ``MODELTAP_UPSTREAM_URL``). The capture's
own settings (sink, sampling, flush triggers, ...) come from
``capture.settings.CaptureSettings`` and are read from the same environment.

``MODELTAP_WORKERS`` (default 1) runs that many worker processes on one port
(``server.workers``); the workers read their settings from the environment
the parent exported, so CLI flags reach them as ``MODELTAP_*`` variables
(``cli_environ``).

Bad settings fail at start with a message naming the variable: a malformed
upstream URL, an invalid port, a ``MODELTAP_PREDICTION_BASELINE`` file that
cannot be read or is not a statistics.json (named in the message), or
(checked by ``create_app``'s lifespan) a sink that cannot be written.

Prediction and score histogram buckets: ``MODELTAP_PREDICTION_BUCKETS``
(comma-separated, increasing), or ``MODELTAP_PREDICTION_BASELINE``: a path or
``file://`` URL of a monitor baseline's ``statistics.json`` (or of the
directory ``modeltap-monitor baseline --out`` wrote), whose ``prediction``
and ``score`` quantiles become the buckets; a feature the file lacks keeps
the configured buckets, with a warning at start.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from capture.errors import ConfigError
from capture.settings import PREFIX, CaptureSettings, from_env

log = logging.getLogger(__name__)

#: More processes than this on one host is a deployment mistake, not a setting.
MAX_WORKERS = 64


@dataclass(frozen=True)
class ProxySettings:
    """The proxy's own settings; ``capture`` holds the capture's."""

    upstream_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8080
    admin_token: str | None = None
    upstream_timeout_s: float = 60.0
    upstream_connect_timeout_s: float = 5.0
    upstream_max_connections: int = 256
    shutdown_timeout_s: float = 25.0
    workers: int = 1
    stream_capture: bool = True
    prediction_buckets: tuple[str, ...] = field(default_factory=tuple)
    prediction_baseline: str | None = None
    capture: CaptureSettings = field(default_factory=CaptureSettings)
    #: Buckets read from ``prediction_baseline`` at construction, by feature.
    _baseline: dict[str, tuple[float, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not self.upstream_url:
            raise ConfigError("MODELTAP_UPSTREAM_URL is required (the model server's base URL)")
        parts = urlsplit(self.upstream_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"MODELTAP_UPSTREAM_URL={self.upstream_url!r} must be http(s)://host[:port][/base]"
            )
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            raise ConfigError(f"MODELTAP_UPSTREAM_URL={self.upstream_url!r}: {exc}") from None
        if not 0 < self.port < 65536:
            raise ConfigError(f"MODELTAP_PORT={self.port} is not a TCP port")
        for name in ("upstream_timeout_s", "upstream_connect_timeout_s", "shutdown_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{PREFIX}{name.upper()} must be > 0")
        try:
            buckets = [float(b) for b in self.prediction_buckets]
        except ValueError:
            raise ConfigError(
                f"MODELTAP_PREDICTION_BUCKETS={','.join(self.prediction_buckets)!r} "
                "must be comma-separated numbers"
            ) from None
        if buckets != sorted(set(buckets)):
            raise ConfigError("MODELTAP_PREDICTION_BUCKETS must be increasing")
        if self.upstream_max_connections < 1:
            raise ConfigError("MODELTAP_UPSTREAM_MAX_CONNECTIONS must be >= 1")
        if not 1 <= self.workers <= MAX_WORKERS:
            raise ConfigError(f"MODELTAP_WORKERS={self.workers} must be in 1..{MAX_WORKERS}")
        if self.prediction_baseline:
            self._load_baseline(self.prediction_baseline)

    def _load_baseline(self, location: str) -> None:
        from server.metrics import BASELINE_FEATURES, baseline_buckets

        found = baseline_buckets(location)  # ConfigError naming the file
        object.__setattr__(self, "_baseline", found)
        fallback = "MODELTAP_PREDICTION_BUCKETS" if self.prediction_buckets else "default"
        for feature in BASELINE_FEATURES:
            if feature not in found:
                log.warning(
                    "MODELTAP_PREDICTION_BASELINE=%s has no quantiles for a numeric %r "
                    "feature: its histogram uses the %s buckets",
                    location,
                    feature,
                    fallback,
                )

    def buckets(self, feature: str = "prediction") -> tuple[float, ...]:
        """Histogram buckets for ``feature`` (``prediction`` or ``score``):
        the baseline's quantiles when it has them, else the configured ones."""
        from server.metrics import DEFAULT_PREDICTION_BUCKETS

        if feature in self._baseline:
            return self._baseline[feature]
        return tuple(float(b) for b in self.prediction_buckets) or DEFAULT_PREDICTION_BUCKETS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ProxySettings:
        env = os.environ if environ is None else environ
        overrides.setdefault("capture", CaptureSettings.from_env(env))
        return from_env(cls, env, **overrides)


def _fields(cls: type[Any]) -> list[tuple[str, Any]]:
    hints = typing.get_type_hints(cls)
    return [
        (f.name, hints[f.name]) for f in dataclasses.fields(cls) if f.name != "capture" and f.init
    ]


def parse_args(
    argv: Sequence[str] | None, environ: Mapping[str, str] | None = None
) -> ProxySettings:
    """Settings from CLI flags over environment variables over defaults."""
    return ProxySettings.from_env(cli_environ(argv, environ))


def cli_environ(
    argv: Sequence[str] | None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment with CLI flags written in as ``MODELTAP_*`` variables.

    This is what worker processes inherit, so they build the same settings.
    """
    parser = argparse.ArgumentParser(
        prog="modeltap-proxy",
        description="Reverse proxy that captures what a model server sees and says.",
        epilog="Every flag is also an environment variable: --sample-rate is MODELTAP_SAMPLE_RATE.",
    )
    for cls in (ProxySettings, CaptureSettings):
        for name, _ in _fields(cls):
            parser.add_argument(
                "--" + name.replace("_", "-"),
                dest=name,
                default=None,
                metavar=(PREFIX + name.upper()),
            )
    args = vars(parser.parse_args(argv))
    env = dict(os.environ if environ is None else environ)
    env.update({PREFIX + k.upper(): v for k, v in args.items() if v is not None})
    return env
