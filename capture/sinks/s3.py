"""S3 sink (boto3): AWS S3 or any S3-compatible endpoint (MinIO, SeaweedFS).

Invariants:

- ``put`` of the same key twice overwrites: a retried or replayed batch never
  duplicates records.
- Errors are translated at this edge into ``SinkError`` with ``retryable``:
  connection failures, timeouts, throttling and 5xx may succeed later;
  missing buckets, denied access and bad credentials will not. Messages name
  the bucket and key, never credentials.
- Retries here are botocore's ``standard`` mode (a few quick attempts with
  jitter); the buffer adds its own backoff and the disk spool on top.
- Server-side encryption: ``sse="AES256"`` (SSE-S3) or ``sse="aws:kms"``
  (SSE-KMS, with an optional ``kms_key_id``) is sent with every PUT.

Credentials come from boto3's usual chain (``AWS_*`` variables, profiles,
instance roles); the sink never takes them as arguments.
"""

from __future__ import annotations

import re
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from capture.errors import ConfigError, SinkError
from capture.keys import safe_key, safe_prefix

SSE_MODES = ("AES256", "aws:kms")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PERMANENT = {
    "NoSuchBucket",
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidBucketName",
    "AccountProblem",
    "KMS.NotFoundException",
    "KMS.DisabledException",
}


def _translate(exc: Exception, what: str) -> SinkError:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        retryable = code not in _PERMANENT and (status >= 500 or status in (0, 408, 429))
        if code in ("SlowDown", "RequestTimeout", "Throttling", "ThrottlingException"):
            retryable = True
        return SinkError(f"{what}: {code} (HTTP {status})", retryable=retryable)
    return SinkError(f"{what}: {type(exc).__name__}: {exc}", retryable=True)


class S3Sink:
    """Stores batches as objects under ``s3://bucket/prefix/``.

    >>> S3Sink("my-bucket", "captures", sse="AES256").describe()
    's3://my-bucket/captures'
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        sse: str | None = None,
        kms_key_id: str | None = None,
        max_attempts: int = 3,
        connect_timeout: float = 2.0,
        read_timeout: float = 10.0,
        client: Any = None,
    ) -> None:
        if not _BUCKET.match(bucket) or ".." in bucket:
            raise ConfigError(f"invalid S3 bucket name {bucket!r}")
        if sse is not None and sse not in SSE_MODES:
            raise ConfigError(f"S3 server-side encryption must be one of {SSE_MODES}, got {sse!r}")
        if kms_key_id and sse != "aws:kms":
            raise ConfigError("an S3 KMS key id needs sse='aws:kms' (MODELTAP_S3_SSE)")
        self.bucket = bucket
        self.prefix = safe_prefix(prefix)
        self.endpoint_url = endpoint_url
        self._extra: dict[str, Any] = {}
        if sse:
            self._extra["ServerSideEncryption"] = sse
        if kms_key_id:
            self._extra["SSEKMSKeyId"] = kms_key_id
        config = Config(
            retries={"max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            s3={"addressing_style": "path"} if endpoint_url else {},
        )
        self._client = client or boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config
        )

    def _full(self, key: str) -> str:
        safe_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> None:
        full = self._full(key)
        try:
            self._client.put_object(
                Bucket=self.bucket,
                Key=full,
                Body=data,
                ContentType="application/x-ndjson",
                **self._extra,
            )
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"put s3://{self.bucket}/{full}") from exc

    def check(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"s3://{self.bucket} not writable") from exc

    def describe(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return f"{where} via {self.endpoint_url}" if self.endpoint_url else where

    def close(self) -> None:
        close = getattr(self._client, "close", None)
        if callable(close):
            close()
