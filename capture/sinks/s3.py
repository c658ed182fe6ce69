"""S3 sink (boto3): AWS S3 or any S3-compatible endpoint (MinIO, SeaweedFS).

Each batch becomes one object, ``{prefix}/{key}``, written with a single
``PutObject`` (``Content-Type: application/x-ndjson``; no ``Content-Encoding``,
so no client ever un-gzips a ``.jsonl.gz`` behind the reader's back).

Invariants:

- ``put`` of the same key twice overwrites: a retried or replayed batch never
  duplicates records.
- Keys and the prefix are checked with ``capture.keys`` (no ``..``, no
  absolute keys), so nothing is written outside the prefix.
- Errors are translated at this edge into ``SinkError`` with ``retryable``:
  connection failures, timeouts, throttling and 5xx may succeed later;
  a missing bucket, denied access, bad credentials and other 4xx will not.
  Messages name the bucket and key, never credentials.
- Retries here are botocore's ``standard`` mode (``max_attempts`` quick tries
  in all, with jitter); the buffer adds its own backoff and the disk spool on
  top, so a long outage is ridden out there, not here.
- Server-side encryption: ``sse="AES256"`` (SSE-S3) or ``sse="aws:kms"``
  (SSE-KMS, with an optional ``kms_key_id``) is sent with every PUT.

Credentials come from boto3's usual chain (``AWS_*`` variables, profiles,
instance or pod roles); the sink never takes them as arguments.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BaseEndpointResolverError,
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ValidationError,
)

from capture.errors import ConfigError, SinkError
from capture.keys import safe_key, safe_prefix

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.literals import ServerSideEncryptionType
    from mypy_boto3_s3.type_defs import PutObjectRequestTypeDef

SSE_MODES = ("AES256", "aws:kms")
CONTENT_TYPE = "application/x-ndjson"

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP_LIKE = re.compile(r"^\d+\.\d+\.\d+\.\d+$")

#: Error codes that may succeed later even though some come with a 4xx status.
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "RequestTimeout",
        "RequestTimeoutException",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequests",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "InternalError",
        "PriorRequestNotComplete",
        "ExpiredToken",  # role credentials are refreshed by boto3's chain
        "RequestTimeTooSkewed",  # a clock that gets resynced
    }
)
_TRANSIENT_STATUS = frozenset({408, 429})

#: botocore errors that are configuration mistakes: retrying cannot help.
_PERMANENT_BOTOCORE = (
    NoCredentialsError,
    PartialCredentialsError,
    ParamValidationError,
    ValidationError,
    BaseEndpointResolverError,
)


def _translate(exc: ClientError | BotoCoreError, what: str) -> SinkError:
    """One ``SinkError`` for a boto error; ``what`` names the operation and object."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        meta = exc.response.get("ResponseMetadata", {})
        status = int(meta.get("HTTPStatusCode") or 0)
        code = str(error.get("Code") or status or "Unknown")
        message = str(error.get("Message") or "")[:200]
        retryable = code in _TRANSIENT_CODES or status >= 500 or status in _TRANSIENT_STATUS
        detail = code if code == str(status) else f"{code} (HTTP {status})"
        if status == 404 and code == "404":
            detail = "HTTP 404 (no such bucket)"
        tries = int(meta.get("RetryAttempts") or 0) + 1
        text = f"{what}: {detail}" + (f": {message}" if message else "")
        return SinkError(f"{text} [{tries} attempt(s)]", retryable=retryable)
    # Connection refused/reset, DNS, timeouts, TLS, credential-service hiccups.
    retryable = not isinstance(exc, _PERMANENT_BOTOCORE)
    return SinkError(f"{what}: {type(exc).__name__}: {exc}", retryable=retryable)


def _check_endpoint(endpoint_url: str) -> str:
    parts = urlsplit(endpoint_url)
    if parts.username is not None or parts.password is not None:
        raise ConfigError("S3 endpoint URL must not contain credentials")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"S3 endpoint URL must be http(s)://host[:port], got {endpoint_url!r}")
    return endpoint_url.rstrip("/")


class S3Sink:
    """Stores batches as objects under ``s3://bucket/prefix/``.

    ``max_attempts`` is the total number of tries botocore makes per call
    (1 = no retry); ``connect_timeout``/``read_timeout`` are per try, in
    seconds. ``client`` replaces the boto3 client (its settings then apply).

    >>> S3Sink("my-bucket", "captures", sse="AES256", region="us-east-1").describe()
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
        if (
            not isinstance(bucket, str)
            or not _BUCKET.match(bucket)
            or ".." in bucket
            or _IP_LIKE.match(bucket)
        ):
            raise ConfigError(
                f"invalid S3 bucket name {bucket!r}: 3-63 lowercase letters, digits, '.', '-'"
            )
        if sse is not None and sse not in SSE_MODES:
            raise ConfigError(f"S3 server-side encryption must be one of {SSE_MODES}, got {sse!r}")
        if kms_key_id is not None and sse != "aws:kms":
            raise ConfigError("an S3 KMS key id needs sse='aws:kms'")
        if kms_key_id is not None and not kms_key_id.strip():
            raise ConfigError("the S3 KMS key id is empty")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ConfigError(f"S3 max_attempts must be an integer >= 1, got {max_attempts!r}")
        for name, value in (("connect_timeout", connect_timeout), ("read_timeout", read_timeout)):
            if not value > 0:
                raise ConfigError(f"S3 {name} must be > 0 seconds, got {value!r}")
        self.bucket = bucket
        self.prefix = safe_prefix(prefix)
        self.endpoint_url = _check_endpoint(endpoint_url) if endpoint_url else None
        self.sse = cast("ServerSideEncryptionType | None", sse)
        self.kms_key_id = kms_key_id
        if client is not None:
            self._client: S3Client = client
            return
        config = Config(
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            s3={"addressing_style": "path"} if self.endpoint_url else None,
        )
        # A session per sink: boto3's default session is not thread-safe to
        # create clients from, and the credential chain is resolved here.
        self._client = boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name=region, config=config
        )

    def object_key(self, key: str) -> str:
        """The full object key for a sink-relative ``key`` (checked)."""
        safe_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` as ``{prefix}/{key}``, replacing any object already there."""
        full = self.object_key(key)
        params: PutObjectRequestTypeDef = {
            "Bucket": self.bucket,
            "Key": full,
            "Body": data,
            "ContentType": CONTENT_TYPE,
        }
        if self.sse is not None:
            params["ServerSideEncryption"] = self.sse
        if self.kms_key_id is not None:
            params["SSEKMSKeyId"] = self.kms_key_id
        try:
            self._client.put_object(**params)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"put s3://{self.bucket}/{full}") from exc

    def check(self) -> None:
        """Raise ``SinkError`` unless the bucket exists and answers (HeadBucket)."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"check s3://{self.bucket}") from exc

    def describe(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return f"{where} via {self.endpoint_url}" if self.endpoint_url else where

    def close(self) -> None:
        """Close the client's connection pool (botocore >= 1.29.3 has ``close``)."""
        close = getattr(self._client, "close", None)
        if callable(close):
            close()

    def __repr__(self) -> str:
        return f"S3Sink({self.describe()!r})"
