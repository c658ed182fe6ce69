"""The capture against a real S3 server (SeaweedFS on loopback): outages at
start and mid-stream, with and without a spool, and a SIGKILL mid-write."""

import gzip
import os
import subprocess
import sys
import textwrap

import orjson

from capture.capturer import Capturer
from tests.capture.test_capturer import ex
from tests.support import read_then_kill, wait_for


def s3_records(client, bucket, prefix=""):
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            out += [orjson.loads(line) for line in gzip.decompress(body).splitlines() if line]
    return out


def s3_keys(client, bucket):
    resp = client.list_objects_v2(Bucket=bucket)
    return [o["Key"] for o in resp.get("Contents", [])]


def capturer(server, bucket, **kw):
    """A capturer writing to ``bucket`` through ``server`` (SeaweedFS or a TcpProxy)."""
    kw.setdefault("flush_max_records", 25)
    endpoint = getattr(server, "endpoint_url", None) or server.url
    return Capturer(
        sink=f"s3://{bucket}/captures",
        s3_endpoint_url=endpoint,
        s3_region="us-east-1",
        model="ranker",
        **kw,
    )


def test_records_land_in_s3_under_hive_keys(seaweed, s3_bucket):
    with capturer(seaweed, s3_bucket) as cap:
        for i in range(60):
            cap.submit(ex(i))
    client = seaweed.client()
    keys = s3_keys(client, s3_bucket)
    assert len(keys) == 3
    assert all(k.startswith("captures/ranker/dt=") and "/hour=" in k for k in keys)
    ids = sorted(r["event_id"] for r in s3_records(client, s3_bucket))
    assert ids == sorted(f"ev-{i}" for i in range(60))


def test_s3_down_at_start_then_back_with_spool_loses_nothing(
    seaweed, s3_bucket, s3_proxy, tmp_path
):
    s3_proxy.down()
    cap = capturer(s3_proxy, s3_bucket, spool_dir=str(tmp_path / "spool"), spool_replay_s=0.2)
    for i in range(100):
        cap.submit(ex(i))
    assert cap.flush(timeout=60)
    snap = cap.stats.snapshot()
    assert snap["spooled_records"] == 100 and snap["records_written"] == 0
    s3_proxy.up()
    assert wait_for(lambda: cap.stats.get("replayed_records") == 100, timeout=60)
    # The replayer counts records as it uploads them and marks the sink up
    # only once its pass returns: wait for that, or new records may still
    # (harmlessly) go through the spool and not count as written directly.
    assert wait_for(lambda: not cap.buffer.sink_down, timeout=60)
    for i in range(100, 150):  # the sink is back: new records go straight to it
        cap.submit(ex(i))
    cap.close()
    ids = [r["event_id"] for r in s3_records(seaweed.client(), s3_bucket)]
    assert sorted(ids) == sorted(f"ev-{i}" for i in range(150))  # each exactly once
    assert cap.stats.get("records_written") == 50
    assert cap.stats.dropped() == 0 and not list((tmp_path / "spool").glob("*.wal"))


def test_s3_goes_away_mid_stream_and_comes_back_with_spool(seaweed, s3_bucket, s3_proxy, tmp_path):
    cap = capturer(s3_proxy, s3_bucket, spool_dir=str(tmp_path / "spool"), spool_replay_s=0.2)
    for i in range(50):
        cap.submit(ex(i))
    assert cap.flush(timeout=30)
    s3_proxy.down()
    for i in range(50, 120):
        cap.submit(ex(i))
    assert cap.flush(timeout=60)
    assert cap.stats.get("spooled_records") == 70
    s3_proxy.up()
    assert wait_for(lambda: cap.spool.is_empty(), timeout=60)
    cap.close()
    ids = [r["event_id"] for r in s3_records(seaweed.client(), s3_bucket)]
    assert sorted(ids) == sorted(f"ev-{i}" for i in range(120))


def test_short_outage_without_spool_is_retried_not_lost(seaweed, s3_bucket, s3_proxy):
    cap = capturer(s3_proxy, s3_bucket)
    s3_proxy.down()
    for i in range(60):
        cap.submit(ex(i))
    assert wait_for(lambda: cap.stats.get("upload_failures") >= 2, timeout=30)
    s3_proxy.up()
    cap.close(timeout=60)
    assert cap.stats.dropped() == 0 and cap.stats.get("upload_retries") >= 1
    assert len(s3_records(seaweed.client(), s3_bucket)) == 60


def test_s3_down_without_spool_counts_every_drop(s3_bucket, s3_proxy):
    s3_proxy.down()
    cap = capturer(s3_proxy, s3_bucket, buffer_max_bytes=64 * 1024, flush_max_bytes=16 * 1024)
    for i in range(2000):
        cap.submit(ex(i))
    _, held = cap.buffer.depth()
    assert held <= 64 * 1024  # memory stays under the cap while the sink is down
    cap.close(timeout=1)
    s = cap.stats.snapshot()
    assert s["offered"] == 2000 == s["kept"] + s["sampled_out"]
    assert s["kept"] == s["records_written"] + sum(s["dropped"].values())
    assert s["dropped"]["buffer_full"] > 0 and s["dropped"]["shutdown"] > 0


CHILD = textwrap.dedent(
    """
    import sys, time
    from capture.capturer import Capturer
    from tests.capture.test_capturer import ex
    endpoint, bucket, spool = sys.argv[1], sys.argv[2], sys.argv[3]
    cap = Capturer(sink=f"s3://{bucket}/captures", s3_endpoint_url=endpoint,
                   s3_region="us-east-1", model="ranker", spool_dir=spool, flush_max_records=10)
    for i in range(40):
        cap.submit(ex(i))
    cap.flush(timeout=60)
    print("spooled", cap.stats.get("spooled_records"), flush=True)
    i = 40
    while True:  # keep writing until killed: some of these are in flight at the kill
        cap.submit(ex(i))
        i += 1
        if i % 10 == 0:
            print("offered", i, flush=True)
        time.sleep(0.002)
    """
)


def test_sigkill_while_writing_then_restart_replays_the_spool(
    seaweed, s3_bucket, s3_proxy, tmp_path
):
    """Bound: every record the spool acknowledged survives a SIGKILL; records
    still in memory (offered after the last acknowledged batch) may be lost."""
    s3_proxy.down()
    spool = tmp_path / "spool"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, s3_proxy.url, s3_bucket, str(spool)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines = read_then_kill(child, lambda line: line.startswith("offered") and int(line[8:]) >= 200)
    assert lines[0] == "spooled 40"
    offered = int(lines[-1].split()[1])
    s3_proxy.up()
    with capturer(s3_proxy, s3_bucket, spool_dir=str(spool), spool_replay_s=0.2) as cap:
        assert wait_for(lambda: cap.spool.is_empty(), timeout=60)
    ids = {r["event_id"] for r in s3_records(seaweed.client(), s3_bucket)}
    assert {f"ev-{i}" for i in range(40)} <= ids  # acknowledged by the spool: never lost
    assert ids <= {f"ev-{i}" for i in range(offered + 50)}
    lost = offered - len(ids)
    assert 0 <= lost <= offered - 40  # at most what was offered after the acknowledged flush
