"""Capture settings: one frozen dataclass, every field an environment variable.

``CaptureSettings.from_env()`` reads ``MODELTAP_<FIELD NAME IN CAPITALS>``
(``sample_rate`` <- ``MODELTAP_SAMPLE_RATE``); unknown ``MODELTAP_*`` names are
ignored here (the server has settings of its own). Values are validated in
the constructor, and an invalid one raises ``ConfigError`` naming the
variable, so a bad deployment fails at start, not at the first flush.

Defaults and why:

- flush at 10,000 records, 8 MiB or 60 s: objects large enough for efficient
  S3 reads, captures visible within a minute (Firehose: 5 MB/300 s; Vector's
  S3 sink: 10 MB/300 s);
- 64 MiB memory cap for buffered plus in-flight records;
- bodies kept up to 256 KiB each; headers from a short allowlist;
- slow exchanges (>= 1 s) and errors kept whatever the sample rate;
- full-traffic profiles off (``capture.traffic`` says what they cost), and
  written every 300 s when on;
- records built on the capture's flusher thread in a library ``Capturer``
  (``MODELTAP_ENCODER=auto``), in a helper process in the proxy, which then
  keeps its event loop's share of the interpreter (``capture.offload``).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from capture.buffer import BufferConfig
from capture.errors import ConfigError
from capture.keys import safe_segment
from capture.payloads import MappingConfig, PayloadExtractor
from capture.record import DEFAULT_HEADER_ALLOWLIST, RecordConfig
from capture.redaction import Redactor
from capture.sampler import Sampler

PREFIX = "MODELTAP_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}

T = TypeVar("T")


def _parse(name: str, raw: str, kind: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(kind) if a is not type(None)]
        return None if raw.strip() == "" else _parse(name, raw, inner[0])
    if origin is tuple:
        return tuple(v.strip() for v in raw.split(",") if v.strip())
    try:
        if kind is bool:
            value = raw.strip().lower()
            if value in _TRUE:
                return True
            if value in _FALSE:
                return False
            raise ValueError(raw)
        if kind is int:
            return int(raw.strip().replace("_", ""))
        if kind is float:
            return float(raw.strip())
    except ValueError:
        raise ConfigError(
            f"{PREFIX}{name.upper()}={raw!r} is not a valid {kind.__name__}"
        ) from None
    return raw


def from_env(cls: type[T], environ: Mapping[str, str] | None = None, **overrides: Any) -> T:
    """Build any settings dataclass from ``MODELTAP_*`` variables plus overrides."""
    env = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        var = PREFIX + f.name.upper()
        if var in env:
            values[f.name] = _parse(f.name, env[var], hints[f.name])
    values.update(overrides)
    return cls(**values)


_BUFFER = BufferConfig()
ENCODERS = ("auto", "thread", "process")


@dataclass(frozen=True)
class CaptureSettings:
    """Everything the capture library needs; see the README for each variable."""

    sink: str = "./captures"
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_sse: str | None = None
    s3_kms_key_id: str | None = None
    # Per S3 call: tries in all (1 = no retry), and seconds per try (S3Sink's defaults).
    s3_max_attempts: int = 3
    s3_connect_timeout_s: float = 2.0
    s3_read_timeout_s: float = 10.0
    model: str = "model"
    model_version: str | None = None
    model_variant: str | None = None
    sample_rate: float = 1.0
    sample_key: str = "event_id"
    sample_keep_errors: bool = True
    slow_threshold_s: float | None = 1.0
    # The buffer's defaults live in BufferConfig; these name them for MODELTAP_*.
    flush_max_records: int = _BUFFER.max_records
    flush_max_bytes: int = _BUFFER.max_bytes
    flush_max_age_s: float = _BUFFER.max_age_s
    buffer_max_bytes: int = _BUFFER.max_buffer_bytes
    upload_workers: int = _BUFFER.upload_workers
    gzip_level: int = _BUFFER.gzip_level
    close_timeout_s: float = _BUFFER.close_timeout_s
    spool_dir: str | None = None
    spool_max_bytes: int = 1024**3
    spool_replay_s: float = _BUFFER.replay_interval_s
    capture_bodies: bool = True
    max_body_bytes: int = 256 * 1024
    header_allowlist: tuple[str, ...] = field(default_factory=tuple)
    redact_fields: tuple[str, ...] = field(default_factory=tuple)
    redact_mode: str = "drop"
    redact_key: str | None = None
    redact_keep_unparsed_bodies: bool = False
    payload: str = "auto"
    csv_columns: tuple[str, ...] = field(default_factory=tuple)
    map_rows: str | None = None
    map_context: tuple[str, ...] = field(default_factory=tuple)
    map_predictions: str | None = None
    map_items: str | None = None
    map_item_id: str | None = None
    map_scores: str | None = None
    lookups_max_bytes: int = 64 * 1024
    # Full-traffic profiles (capture.traffic): off by default, it costs background CPU.
    profile_all: bool = False
    profile_max_age_s: float = 300.0
    profile_max_queue_bytes: int = 32 * 1024 * 1024
    # Where records are built: "thread" (the flusher thread), "process" (a
    # helper process, capture.offload) or "auto": the proxy's choice.
    encoder: str = "auto"

    def __post_init__(self) -> None:
        # Build each part once so a bad value fails here, naming the setting.
        safe_segment(self.model, "model name (MODELTAP_MODEL)")
        self.buffer_config()
        self.sampler()
        self.record_config()
        self.redactor()
        self.extractor()
        if self.encoder not in ENCODERS:
            raise ConfigError(
                f"MODELTAP_ENCODER={self.encoder!r} must be one of {', '.join(ENCODERS)}"
            )
        if self.s3_max_attempts < 1:
            raise ConfigError(f"MODELTAP_S3_MAX_ATTEMPTS must be >= 1, got {self.s3_max_attempts}")
        for name in ("s3_connect_timeout_s", "s3_read_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(
                    f"MODELTAP_{name.upper()} must be > 0 seconds, got {getattr(self, name)}"
                )
        if self.spool_max_bytes < 1:
            raise ConfigError(f"spool_max_bytes must be >= 1, got {self.spool_max_bytes}")
        if not self.profile_max_age_s > 0:
            raise ConfigError(
                f"MODELTAP_PROFILE_MAX_AGE_S must be > 0, got {self.profile_max_age_s}"
            )
        if self.profile_max_queue_bytes < 1:
            raise ConfigError(
                f"MODELTAP_PROFILE_MAX_QUEUE_BYTES must be >= 1, got {self.profile_max_queue_bytes}"
            )

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> CaptureSettings:
        return from_env(cls, environ, **overrides)

    def buffer_config(self) -> BufferConfig:
        return BufferConfig(
            max_records=self.flush_max_records,
            max_bytes=self.flush_max_bytes,
            max_age_s=self.flush_max_age_s,
            max_buffer_bytes=self.buffer_max_bytes,
            upload_workers=self.upload_workers,
            gzip_level=self.gzip_level,
            close_timeout_s=self.close_timeout_s,
            replay_interval_s=self.spool_replay_s,
        )

    def sampler(self) -> Sampler:
        return Sampler(
            self.sample_rate,
            keep_errors=self.sample_keep_errors,
            slow_s=self.slow_threshold_s,
            key=self.sample_key,
        )

    def record_config(self) -> RecordConfig:
        return RecordConfig(
            model=self.model,
            model_version=self.model_version,
            model_variant=self.model_variant,
            capture_bodies=self.capture_bodies,
            max_body_bytes=self.max_body_bytes,
            header_allowlist=DEFAULT_HEADER_ALLOWLIST | frozenset(self.header_allowlist),
        )

    def redactor(self) -> Redactor:
        return Redactor(
            self.redact_fields,
            mode=self.redact_mode,
            key=self.redact_key.encode() if self.redact_key else None,
            keep_unparsed_bodies=self.redact_keep_unparsed_bodies,
        )

    def extractor(self) -> PayloadExtractor:
        mapping = MappingConfig(
            rows=self.map_rows,
            context=self.map_context,
            predictions=self.map_predictions,
            items=self.map_items,
            item_id=self.map_item_id,
            scores=self.map_scores,
        )
        return PayloadExtractor(
            self.payload,
            mapping=mapping,
            csv_columns=self.csv_columns or None,
            lookups_max_bytes=self.lookups_max_bytes,
            max_parse_bytes=self.max_body_bytes,
        )

    def s3_options(self) -> dict[str, Any]:
        return {
            "endpoint_url": self.s3_endpoint_url,
            "region": self.s3_region,
            "sse": self.s3_sse,
            "kms_key_id": self.s3_kms_key_id,
            "max_attempts": self.s3_max_attempts,
            "connect_timeout": self.s3_connect_timeout_s,
            "read_timeout": self.s3_read_timeout_s,
        }
