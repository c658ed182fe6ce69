"""S3Sink against a real S3 server (SeaweedFS on loopback); every assertion
reads the server's state back (objects, headers, volume files)."""

from __future__ import annotations

import gzip
import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from capture.capturer import Capturer
from capture.errors import ConfigError, SinkError, UnsafeNameError
from capture.settings import CaptureSettings
from capture.sinks import sink_from_url
from capture.sinks.s3 import S3Sink
from tests.faults import TcpProxy
from tests.seaweed import SeaweedServer, free_ports
from tests.servers import threaded_http_server

KEY = "ranker/dt=2026-11-22/hour=23/host-1-1795000000000_000001.jsonl.gz"


def sink(server: SeaweedServer, bucket: str, prefix: str = "captures", **kw: Any) -> S3Sink:
    kw.setdefault("region", "us-east-1")
    return S3Sink(bucket, prefix, endpoint_url=server.endpoint_url, **kw)


def keys(server: SeaweedServer, bucket: str) -> list[str]:
    resp = server.client().list_objects_v2(Bucket=bucket)
    return [o["Key"] for o in resp.get("Contents", [])]


def body(server: SeaweedServer, bucket: str, key: str) -> bytes:
    data: bytes = server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return data


def stored_in_volumes(server: SeaweedServer, needle: bytes) -> bool:
    """Whether ``needle`` appears as-is in the server's volume files on disk."""
    return any(needle in f.read_bytes() for f in server.data_dir.rglob("*.dat"))


def test_put_stores_identical_bytes_under_prefix_and_key(seaweed, s3_bucket):
    data = gzip.compress(b'{"event_id": "e1"}\n' * 100) + os.urandom(512)
    s = sink(seaweed, s3_bucket)
    s.put(KEY, data)
    assert keys(seaweed, s3_bucket) == [f"captures/{KEY}"]
    assert body(seaweed, s3_bucket, f"captures/{KEY}") == data
    head = seaweed.client().head_object(Bucket=s3_bucket, Key=f"captures/{KEY}")
    assert head["ContentType"] == "application/x-ndjson"
    assert head["ContentLength"] == len(data)
    assert "ContentEncoding" not in head  # no client un-gzips a .jsonl.gz behind our back


def test_nested_prefix_and_no_prefix(seaweed, s3_bucket):
    sink(seaweed, s3_bucket, "/team/a/").put("m/x.jsonl.gz", b"nested")
    sink(seaweed, s3_bucket, "").put("m/x.jsonl.gz", b"root")
    assert sorted(keys(seaweed, s3_bucket)) == ["m/x.jsonl.gz", "team/a/m/x.jsonl.gz"]
    assert body(seaweed, s3_bucket, "team/a/m/x.jsonl.gz") == b"nested"
    assert body(seaweed, s3_bucket, "m/x.jsonl.gz") == b"root"


def test_same_key_twice_overwrites(seaweed, s3_bucket):
    s = sink(seaweed, s3_bucket)
    s.put(KEY, b"first batch, longer than the second")
    s.put(KEY, b"second")
    assert keys(seaweed, s3_bucket) == [f"captures/{KEY}"]
    assert body(seaweed, s3_bucket, f"captures/{KEY}") == b"second"


def test_sse_s3_is_applied_by_the_server(seaweed, s3_bucket):
    secret, plain = os.urandom(4096), os.urandom(4096)  # incompressible: stored as sent
    sink(seaweed, s3_bucket, sse="AES256").put("m/secret.jsonl.gz", secret)
    sink(seaweed, s3_bucket).put("m/plain.jsonl.gz", plain)
    client = seaweed.client()
    head = client.head_object(Bucket=s3_bucket, Key="captures/m/secret.jsonl.gz")
    assert head["ServerSideEncryption"] == "AES256"
    assert body(seaweed, s3_bucket, "captures/m/secret.jsonl.gz") == secret
    assert not stored_in_volumes(seaweed, secret[1000:1064])  # ciphertext at rest
    head = client.head_object(Bucket=s3_bucket, Key="captures/m/plain.jsonl.gz")
    assert "ServerSideEncryption" not in head
    assert stored_in_volumes(seaweed, plain[1000:1064])  # the check above can fail


def test_sse_kms_header_reaches_the_server(seaweed, s3_bucket):
    # This SeaweedFS has no KMS configured, so it refuses every SSE-KMS PUT
    # (500 InternalError): proof the header was sent, and nothing is stored.
    for kw in ({"sse": "aws:kms"}, {"sse": "aws:kms", "kms_key_id": "alias/captures"}):
        with pytest.raises(SinkError) as info:
            sink(seaweed, s3_bucket, max_attempts=1, **kw).put("m/k.jsonl.gz", b"x")
        assert s3_bucket in str(info.value) and "captures/m/k.jsonl.gz" in str(info.value)
    assert keys(seaweed, s3_bucket) == []


@pytest.mark.parametrize(
    "kw",
    [
        {"sse": "DES"},
        {"sse": "aes256"},
        {"sse": ""},
        {"kms_key_id": "k1"},
        {"kms_key_id": "k1", "sse": "AES256"},
        {"kms_key_id": " ", "sse": "aws:kms"},
        {"max_attempts": 0},
        {"connect_timeout": 0},
        {"read_timeout": -1.0},
        {"endpoint_url": "localhost:9000"},
        {"endpoint_url": "ftp://127.0.0.1:9000"},
    ],
)
def test_bad_settings_are_config_errors(kw):
    with pytest.raises(ConfigError):
        S3Sink("bucket", **kw)


def test_endpoint_with_credentials_is_refused_without_echoing_them():
    with pytest.raises(ConfigError) as info:
        S3Sink("bucket", endpoint_url="http://user:hunter2@127.0.0.1:9000")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("bad", ["UPPER", "ab", "a" * 64, "bad_bucket", "-x-y", "a..b", "10.0.0.1"])
def test_invalid_bucket_names(bad):
    with pytest.raises(ConfigError):
        S3Sink(bad)


@pytest.mark.parametrize("bad", ["../x", "a/../b", "x/./y", "a\\b", "~/x"])
def test_unsafe_prefixes_are_refused(bad):
    with pytest.raises(UnsafeNameError):
        S3Sink("good-bucket", bad)


@pytest.mark.parametrize("bad", ["../x", "/abs", "/abs/key", "a/../b", "a//b", "m\\x", "", "a/"])
def test_unsafe_keys_are_refused_and_nothing_written(seaweed, s3_bucket, bad):
    s = sink(seaweed, s3_bucket)
    with pytest.raises(UnsafeNameError):
        s.put(bad, b"x")
    assert keys(seaweed, s3_bucket) == []


def test_missing_bucket_is_permanent(seaweed):
    s = sink(seaweed, "no-such-bucket-here")
    with pytest.raises(SinkError) as info:
        s.put("m/a.jsonl.gz", b"x")
    assert info.value.retryable is False
    assert "no-such-bucket-here" in str(info.value) and "captures/m/a.jsonl.gz" in str(info.value)
    assert isinstance(info.value.__cause__, Exception)  # translated with ``from exc``
    with pytest.raises(SinkError) as info:
        s.check()
    assert info.value.retryable is False and "no-such-bucket-here" in str(info.value)
    names = {b["Name"] for b in seaweed.client().list_buckets()["Buckets"]}
    assert "no-such-bucket-here" not in names  # not auto-created either


def test_check_passes_on_a_good_bucket(seaweed, s3_bucket):
    s = sink(seaweed, s3_bucket)
    s.check()
    assert keys(seaweed, s3_bucket) == []  # a check writes nothing


def test_wrong_credentials_are_permanent_and_not_echoed(seaweed, s3_bucket, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "intruder")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value")
    s = sink(seaweed, s3_bucket)
    with pytest.raises(SinkError) as info:
        s.put("m/a.jsonl.gz", b"x")
    assert info.value.retryable is False
    assert "wrong-secret-value" not in str(info.value)
    with pytest.raises(SinkError) as info:
        s.check()
    assert info.value.retryable is False
    assert keys(seaweed, s3_bucket) == []


def test_nothing_listening_is_retryable_and_fast(aws_test_env):
    (port,) = free_ports(1)
    s = S3Sink(
        "bkt",
        endpoint_url=f"http://127.0.0.1:{port}",
        region="us-east-1",
        max_attempts=2,
        connect_timeout=0.5,
        read_timeout=0.5,
    )
    began = time.monotonic()
    with pytest.raises(SinkError) as info:
        s.put("m/a.jsonl.gz", b"x")
    assert info.value.retryable is True
    assert time.monotonic() - began < 5
    assert "bkt/m/a.jsonl.gz" in str(info.value)
    with pytest.raises(SinkError) as info:
        s.check()
    assert info.value.retryable is True


def test_server_that_never_answers_is_a_retryable_timeout(aws_test_env):
    # A listening socket nobody accepts from: TCP connects, no reply ever comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        s = S3Sink(
            "bkt",
            endpoint_url=f"http://127.0.0.1:{silent.getsockname()[1]}",
            region="us-east-1",
            max_attempts=1,
            read_timeout=0.5,
        )
        began = time.monotonic()
        with pytest.raises(SinkError) as info:
            s.put("m/a.jsonl.gz", b"x")
        elapsed = time.monotonic() - began
    assert info.value.retryable is True and "Timeout" in str(info.value)
    assert 0.4 < elapsed < 5


def test_timeouts_and_attempts_come_from_the_environment(aws_test_env):
    # The capture's own S3 sink, built from MODELTAP_* alone, against a server
    # that never answers: with the defaults (3 tries of 10 s) this takes ~30 s.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        settings = CaptureSettings.from_env(
            {
                "MODELTAP_SINK": "s3://bkt/captures",
                "MODELTAP_S3_ENDPOINT_URL": f"http://127.0.0.1:{silent.getsockname()[1]}",
                "MODELTAP_S3_REGION": "us-east-1",
                "MODELTAP_S3_MAX_ATTEMPTS": "2",
                "MODELTAP_S3_CONNECT_TIMEOUT_S": "0.5",
                "MODELTAP_S3_READ_TIMEOUT_S": "0.4",
            }
        )
        with Capturer(settings) as cap:
            config = cap.sink._client.meta.config
            assert (config.connect_timeout, config.read_timeout) == (0.5, 0.4)
            assert config.retries["total_max_attempts"] == 2
            began = time.monotonic()
            with pytest.raises(SinkError) as info:
                cap.sink.put("m/a.jsonl.gz", b"x")
            elapsed = time.monotonic() - began
    assert info.value.retryable is True and "Timeout" in str(info.value)
    assert 0.7 < elapsed < 5  # two tries of 0.4 s


@pytest.fixture(scope="module")
def _error_server(aws_test_env: None) -> Iterator[tuple[str, list[str], dict[str, Any]]]:
    """A real HTTP server answering every request with a scripted S3 error.

    SeaweedFS cannot be made to throttle on demand; this serves the error
    documents AWS S3 sends. Yields (url, request log, script)."""
    script: dict[str, Any] = {"status": 503, "code": "SlowDown"}
    seen: list[str] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # answers botocore's "Expect: 100-continue" at once

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            self.rfile.read(length)
            with lock:
                seen.append(f"{self.command} {self.path}")
            doc = (
                f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{script['code']}</Code>"
                "<Message>scripted</Message></Error>"
            ).encode()
            self.send_response(script["status"])
            self.send_header("content-type", "application/xml")
            self.send_header("content-length", str(len(doc)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(doc)

        do_PUT = do_HEAD = do_GET = _answer

        def log_message(self, *args: Any) -> None:
            pass

    with threaded_http_server(Handler) as url:
        yield url, seen, script


@pytest.fixture
def s3_errors(
    _error_server: tuple[str, list[str], dict[str, Any]],
) -> tuple[str, list[str], dict[str, Any]]:
    _error_server[1].clear()
    return _error_server


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (503, "SlowDown", True),
        (503, "ServiceUnavailable", True),
        (500, "InternalError", True),
        (400, "RequestTimeout", True),
        (403, "AccessDenied", False),
        (403, "InvalidAccessKeyId", False),
        (403, "SignatureDoesNotMatch", False),
        (404, "NoSuchBucket", False),
        (400, "InvalidArgument", False),
    ],
)
def test_error_translation_and_attempts(s3_errors, status, code, retryable):
    url, seen, script = s3_errors
    script.update(status=status, code=code)
    s = S3Sink("bkt", "p", endpoint_url=url, region="us-east-1", max_attempts=2)
    with pytest.raises(SinkError) as info:
        s.put("m/a.jsonl.gz", b"x")
    assert info.value.retryable is retryable
    assert code in str(info.value) and "s3://bkt/p/m/a.jsonl.gz" in str(info.value)
    # max_attempts counts every try: botocore retries only what it deems transient.
    assert seen == ["PUT /bkt/p/m/a.jsonl.gz"] * (2 if retryable else 1)


def test_outage_on_its_own_server_then_recovery(seaweed_own):
    server = seaweed_own
    server.create_bucket("outage")
    s = sink(server, "outage", max_attempts=1, connect_timeout=0.5)
    s.put("m/1.jsonl.gz", b"before")
    server.stop()
    with pytest.raises(SinkError) as info:
        s.put("m/2.jsonl.gz", b"during")
    assert info.value.retryable is True
    with pytest.raises(SinkError) as info:
        s.check()
    assert info.value.retryable is True
    server.start()
    s.check()
    s.put("m/2.jsonl.gz", b"after")
    assert keys(server, "outage") == ["captures/m/1.jsonl.gz", "captures/m/2.jsonl.gz"]
    assert body(server, "outage", "captures/m/1.jsonl.gz") == b"before"  # kept over restart
    assert body(server, "outage", "captures/m/2.jsonl.gz") == b"after"


def test_outage_through_a_cut_connection_then_recovery(seaweed, s3_bucket, s3_proxy: TcpProxy):
    s = S3Sink(s3_bucket, endpoint_url=s3_proxy.url, region="us-east-1", max_attempts=1)
    s.put("m/1.jsonl.gz", b"a")
    s3_proxy.down()
    with pytest.raises(SinkError) as info:
        s.put("m/2.jsonl.gz", b"b")
    assert info.value.retryable
    s3_proxy.up()
    s.put("m/2.jsonl.gz", b"b")
    assert keys(seaweed, s3_bucket) == ["m/1.jsonl.gz", "m/2.jsonl.gz"]
    assert body(seaweed, s3_bucket, "m/2.jsonl.gz") == b"b"


def test_describe_and_close(seaweed, s3_bucket):
    s = sink(seaweed, s3_bucket, "a/b")
    assert s.describe() == f"s3://{s3_bucket}/a/b via {seaweed.endpoint_url}"
    assert S3Sink("bkt", region="us-east-1").describe() == "s3://bkt"
    assert S3Sink("bkt", "x", region="us-east-1").describe() == "s3://bkt/x"
    s.put("m/a.jsonl.gz", b"x")
    s.close()
    assert keys(seaweed, s3_bucket) == ["a/b/m/a.jsonl.gz"]


def test_sink_from_url(seaweed, s3_bucket, tmp_path: Path):
    s = sink_from_url(f"s3://{s3_bucket}/a/b", endpoint_url=seaweed.endpoint_url)
    assert isinstance(s, S3Sink) and s.prefix == "a/b"
    s.put("m/x.jsonl.gz", b"via url")
    assert body(seaweed, s3_bucket, "a/b/m/x.jsonl.gz") == b"via url"
    assert sink_from_url(f"file://{tmp_path}").describe() == f"file://{tmp_path}"
    for bad in ("", "ftp://x/y", "s3:///nobucket", "file://host/x"):
        with pytest.raises(ConfigError):
            sink_from_url(bad)
