"""Nothing sensitive leaks, through the real proxy process: redacted fields
and credential headers never reach an S3 object, the spool or the log; SSE
settings reach the PUTs (checked on the server); the proxy connects to its
configured upstream only; no file lands outside the sink and spool
directories whatever names requests carry."""

from __future__ import annotations

import contextlib
import gzip
import socket
import threading
import time
import zlib

import httpx

from loadtest.harness import capture_counts, s3_env, s3_raw_objects
from tests.support import wait_for

TOKEN = "admin-TOKEN-5e1b"
#: Values that must never be stored or logged (each unique, so a hit is a leak).
SECRETS = {
    "email": "ann-7f3c@example.org",
    "ssn": "987-65-4321",
    "auth": "Bearer BEARER-9d2a",
    "cookie": "session=COOKIE-41be",
    "api_key": "APIKEY-c0de",
    "wrong_token": "WRONG-TOKEN-77aa",
}
#: Field names that are redacted wherever they appear: bodies, query, context, lookups, rows.
REDACTED = ("email", "ssn", "segment", "stock")


def gunzip_members(blob: bytes) -> bytes:
    """Every gzip member found in ``blob`` (a spool segment holds them between headers)."""
    out, start = [], 0
    while (i := blob.find(b"\x1f\x8b\x08", start)) >= 0:
        d = zlib.decompressobj(wbits=31)
        with contextlib.suppress(zlib.error):
            out.append(d.decompress(blob[i:]))
        start = i + 3
    return b"\n".join(out)


def traffic(url: str, n: int) -> list[str]:
    ids = []
    headers = {
        "Authorization": SECRETS["auth"],
        "Cookie": SECRETS["cookie"],
        "X-Api-Key": SECRETS["api_key"],
        "X-Visible": "visible-marker",
    }
    with httpx.Client(headers=headers, timeout=10) as c:
        for i in range(n):
            inst = {"x": 0.5, "email": SECRETS["email"], "ssn": SECRETS["ssn"], "note": "kept"}
            r = c.post(
                url + f"/v1/models/toy:predict?email={SECRETS['email']}&k={i}",
                json={"instances": [inst]},
            )
            assert r.status_code == 200
            ids.append(r.headers["x-request-id"])
            rank = {
                "user_id": "u3",
                "email": SECRETS["email"],
                "items": [{"id": "a", "ssn": SECRETS["ssn"]}, {"id": "b", "price": 2}],
            }
            r = c.post(url + "/rank", json=rank)
            assert r.status_code == 200 and "_modeltap" not in r.json()
            ids.append(r.headers["x-request-id"])
        bad = c.post(url + "/_modeltap/flush", headers={"Authorization": SECRETS["wrong_token"]})
        assert bad.status_code == 401
    return ids


def assert_clean(blob: bytes, where: str) -> None:
    for name, value in SECRETS.items():
        assert value.encode() not in blob, f"{name} leaked into {where}"
    for field in REDACTED:
        assert f'"{field}"'.encode() not in blob, f"field {field!r} in {where}"
    for header in (b'"authorization"', b'"cookie"', b'"x-api-key"'):
        assert header not in blob.lower(), f"{header!r} in {where}"


def test_redacted_fields_and_credentials_never_reach_s3_spool_or_log(
    toy_model, start_proxy, seaweed, s3_bucket, s3_proxy, tmp_path
):
    spool = tmp_path / "spool"
    proxy = start_proxy(
        {
            "MODELTAP_UPSTREAM_URL": toy_model.url,
            "MODELTAP_MODEL": "toy",
            "MODELTAP_ADMIN_TOKEN": TOKEN,
            "MODELTAP_FLUSH_MAX_AGE_S": "0.3",
            "MODELTAP_SPOOL_DIR": str(spool),
            "MODELTAP_SPOOL_REPLAY_S": "0.5",
            "MODELTAP_REDACT_FIELDS": ",".join(REDACTED),
            # Allowlisted on purpose: credential headers must still never be kept.
            "MODELTAP_HEADER_ALLOWLIST": "authorization,cookie,x-api-key,x-visible",
            "MODELTAP_S3_SSE": "AES256",
            **s3_env(s3_proxy.url, s3_bucket),
        }
    )
    ids = traffic(proxy.url, 10)
    s3_proxy.down()  # the next records go to the spool: scan it while they are there
    ids += traffic(proxy.url, 10)
    assert wait_for(lambda: capture_counts(proxy.metrics())["spool_records"] >= 10, 30)
    segments = list(spool.glob("*.wal"))
    spooled = gunzip_members(b"".join(p.read_bytes() for p in segments))
    assert b"visible-marker" in spooled  # the scan reads records, so it can find a leak
    assert_clean(spooled, "the spool")
    s3_proxy.up()
    assert wait_for(lambda: capture_counts(proxy.metrics())["spool_records"] == 0, 60)
    assert proxy.stop() == 0
    client = seaweed.client()
    objects = dict(s3_raw_objects(client, s3_bucket))
    everything = b"\n".join(objects.values())
    assert all(i.encode() in everything for i in ids)  # every exchange is in there
    assert b"visible-marker" in everything and b'"note"' in everything
    assert_clean(everything, "S3")
    for key in objects:  # SSE-S3 reached every PUT, direct or replayed
        assert client.head_object(Bucket=s3_bucket, Key=key)["ServerSideEncryption"] == "AES256"
    log = proxy.log()
    assert "upload of" in log  # the outage was logged ...
    assert_clean(log.encode(), "the proxy log")  # ... without payloads or credentials
    assert TOKEN not in log


def test_no_file_escapes_the_sink_or_spool_directories(toy_model, start_proxy, tmp_path):
    root = tmp_path / "data"
    sink, spool = root / "captures", root / "spool"
    proxy = start_proxy(
        {
            "MODELTAP_UPSTREAM_URL": toy_model.url,
            "MODELTAP_SINK": str(sink),
            "MODELTAP_SPOOL_DIR": str(spool),
            "MODELTAP_ADMIN_TOKEN": TOKEN,
        }
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    hostile = ["../../../escape", "/etc/escape", "..", "a/../../escape", "..\\escape", "x\x00y"]
    with httpx.Client(timeout=10) as c:
        for name in hostile:
            safe_header = name.replace("\x00", "")
            r = c.post(
                proxy.url + "/v1/models/toy:predict",
                json={"instances": [[1.0]]},
                headers={"X-Request-ID": safe_header, "X-Model-Version": safe_header},
            )
            assert r.status_code == 200 and ".." not in r.headers["x-request-id"]
            label = {"event_id": name, "label": 1, "model": name, "item_id": name}
            r = c.post(proxy.url + "/_modeltap/ground-truth", json=label, headers=auth)
            assert r.status_code == 400, r.text
            r = c.post(
                proxy.url + "/_modeltap/ground-truth",
                params={"model": name},
                json={"event_id": "e1", "label": 1},
                headers=auth,
            )
            assert r.status_code == 400, r.text
        r = c.post(
            proxy.url + "/_modeltap/ground-truth",
            json={"event_id": "../../escape", "label": 1},
            headers=auth,
        )
        assert c.post(proxy.url + "/_modeltap/flush", headers=auth).status_code == 200
    assert proxy.stop() == 0
    written = [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".log")]
    assert written and all(p.is_relative_to(sink) or p.is_relative_to(spool) for p in written)
    for p in sink.rglob("*.jsonl.gz"):
        rel = p.relative_to(sink).parts
        assert ".." not in rel and rel[0] in ("model", "ground_truth"), rel
        gzip.decompress(p.read_bytes())


class Listener:
    """A loopback socket that must receive nothing: counts connections."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


def raw_request(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        with contextlib.suppress(TimeoutError):
            s.settimeout(2)
            while chunk := s.recv(65536):
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks):
                    break
    return b"".join(chunks)


def test_absolute_targets_host_headers_and_connect_never_leave_the_upstream(
    toy_model, start_proxy, tmp_path
):
    evil = Listener()
    proxy = start_proxy(
        {"MODELTAP_UPSTREAM_URL": toy_model.url, "MODELTAP_SINK": str(tmp_path / "c")}
    )
    elsewhere = f"127.0.0.1:{evil.port}".encode()
    try:
        answers = [
            raw_request(
                proxy.port,
                b"GET http://"
                + elsewhere
                + b"/status/200 HTTP/1.1\r\nHost: "
                + elsewhere
                + b"\r\nConnection: close\r\n\r\n",
            ),
            raw_request(
                proxy.port,
                b"GET /status/200 HTTP/1.1\r\nHost: " + elsewhere + b"\r\n"
                b"X-Forwarded-Host: " + elsewhere + b"\r\nConnection: close\r\n\r\n",
            ),
            raw_request(
                proxy.port,
                b"CONNECT "
                + elsewhere
                + b" HTTP/1.1\r\nHost: "
                + elsewhere
                + b"\r\nConnection: close\r\n\r\n",
            ),
            raw_request(
                proxy.port,
                b"GET //" + elsewhere + b"/status/200 HTTP/1.1\r\nHost: x\r\n"
                b"Connection: close\r\n\r\n",
            ),
        ]
        time.sleep(0.5)
        assert evil.accepted == 0, answers
        for answer in answers:
            assert answer.startswith(b"HTTP/1.1 "), answer  # the proxy answered each itself
        # the first two reached the configured model (its /status/200 route)
        assert answers[0].startswith(b"HTTP/1.1 200") and answers[1].startswith(b"HTTP/1.1 200")
        assert httpx.get(proxy.url + "/_modeltap/healthz").status_code == 200
    finally:
        evil.close()
    assert proxy.stop() == 0
