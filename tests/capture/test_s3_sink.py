"""S3Sink against a real S3 server (SeaweedFS on loopback)."""

import time

import pytest

from capture.errors import ConfigError, SinkError, UnsafeNameError
from capture.sinks import sink_from_url
from capture.sinks.s3 import S3Sink
from tests.servers import free_port


def sink(seaweed, bucket, prefix="captures", **kw):
    return S3Sink(bucket, prefix, endpoint_url=seaweed.endpoint_url, region="us-east-1", **kw)


def test_put_stores_bytes_under_prefix_and_overwrites(seaweed, s3_bucket):
    s = sink(seaweed, s3_bucket)
    s.put("m/dt=2026-11-22/hour=23/a.jsonl.gz", b"first")
    s.put("m/dt=2026-11-22/hour=23/a.jsonl.gz", b"second")
    client = seaweed.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys == ["captures/m/dt=2026-11-22/hour=23/a.jsonl.gz"]
    assert client.get_object(Bucket=s3_bucket, Key=keys[0])["Body"].read() == b"second"
    s.check()
    assert s.describe() == f"s3://{s3_bucket}/captures via {seaweed.endpoint_url}"


def test_sse_s3_reaches_the_server(seaweed, s3_bucket):
    sink(seaweed, s3_bucket, sse="AES256").put("m/x.jsonl.gz", b"secret")
    head = seaweed.client().head_object(Bucket=s3_bucket, Key="captures/m/x.jsonl.gz")
    assert head["ServerSideEncryption"] == "AES256"
    sink(seaweed, s3_bucket).put("m/y.jsonl.gz", b"plain")
    head = seaweed.client().head_object(Bucket=s3_bucket, Key="captures/m/y.jsonl.gz")
    assert "ServerSideEncryption" not in head


@pytest.mark.parametrize(
    "kw", [dict(sse="DES"), dict(kms_key_id="k1"), dict(kms_key_id="k1", sse="AES256")]
)
def test_bad_encryption_settings(kw):
    with pytest.raises(ConfigError):
        S3Sink("bucket", **kw)


@pytest.mark.parametrize("bad", ["../x", "/abs/key", "a/../b", "a//b", "m\\x"])
def test_unsafe_keys_are_refused_and_nothing_written(seaweed, s3_bucket, bad):
    with pytest.raises(UnsafeNameError):
        sink(seaweed, s3_bucket).put(bad, b"x")
    assert "Contents" not in seaweed.client().list_objects_v2(Bucket=s3_bucket)


@pytest.mark.parametrize("bad", ["UPPER", "ab", "a" * 64, "bad_bucket"])
def test_invalid_bucket_and_prefix(bad):
    with pytest.raises(ConfigError):
        S3Sink(bad)
    with pytest.raises(UnsafeNameError):
        S3Sink("good-bucket", "captures/../../x")


def test_missing_bucket_is_permanent(seaweed):
    s = sink(seaweed, "no-such-bucket-here")
    with pytest.raises(SinkError) as info:
        s.put("m/a.jsonl.gz", b"x")
    assert info.value.retryable is False and "no-such-bucket-here" in str(info.value)
    with pytest.raises(SinkError):
        s.check()


def test_wrong_credentials_are_permanent_and_not_echoed(seaweed, s3_bucket, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "intruder")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value")
    with pytest.raises(SinkError) as info:
        sink(seaweed, s3_bucket).put("m/a.jsonl.gz", b"x")
    assert info.value.retryable is False
    assert "wrong-secret-value" not in str(info.value)


def test_nothing_listening_is_retryable_and_fast():
    s = S3Sink(
        "bkt",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region="us-east-1",
        max_attempts=2,
        connect_timeout=0.5,
    )
    t = time.monotonic()
    with pytest.raises(SinkError) as info:
        s.put("m/a.jsonl.gz", b"x")
    assert info.value.retryable is True and time.monotonic() - t < 10


def test_outage_through_a_cut_connection_then_recovery(seaweed, s3_bucket, s3_proxy):
    s = S3Sink(s3_bucket, endpoint_url=s3_proxy.url, region="us-east-1", max_attempts=1)
    s.put("m/1.jsonl.gz", b"a")
    s3_proxy.down()
    with pytest.raises(SinkError) as info:
        s.put("m/2.jsonl.gz", b"b")
    assert info.value.retryable
    s3_proxy.up()
    s.put("m/2.jsonl.gz", b"b")
    body = seaweed.client().get_object(Bucket=s3_bucket, Key="m/2.jsonl.gz")["Body"].read()
    assert body == b"b"


def test_sink_from_url(seaweed, s3_bucket, tmp_path):
    s = sink_from_url(f"s3://{s3_bucket}/a/b", endpoint_url=seaweed.endpoint_url)
    assert isinstance(s, S3Sink) and s.prefix == "a/b"
    assert sink_from_url(f"file://{tmp_path}").describe() == f"file://{tmp_path}"
    for bad in ("", "ftp://x/y", "s3:///nobucket", "file://host/x"):
        with pytest.raises(ConfigError):
            sink_from_url(bad)
