"""``python -m server`` as a real process: settings errors, startup checks,
and SIGTERM under load."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.servers import free_port
from tests.support import all_records, wait_for


def start(env_extra, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELTAP_")}
    env.update(PYTHONPATH=os.getcwd(), **env_extra)
    return subprocess.Popen(
        [sys.executable, "-m", "server"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_missing_upstream_is_a_clear_error(tmp_path):
    p = start({}, tmp_path)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 2 and "MODELTAP_UPSTREAM_URL is required" in err


def test_bad_values_name_the_variable(tmp_path):
    p = start(
        {"MODELTAP_UPSTREAM_URL": "http://127.0.0.1:1", "MODELTAP_SAMPLE_RATE": "2"}, tmp_path
    )
    _, err = p.communicate(timeout=30)
    assert p.returncode == 2 and "sample rate" in err


def test_bad_prediction_baseline_fails_at_start_naming_the_file(tmp_path):
    broken = tmp_path / "statistics.json"
    broken.write_text('{"features": ')
    for env, expected in (
        ({"MODELTAP_PREDICTION_BASELINE": str(broken)}, "not valid JSON"),
        ({"MODELTAP_PREDICTION_BASELINE": (tmp_path / "nope.json").as_uri()}, "cannot read"),
    ):
        p = start({"MODELTAP_UPSTREAM_URL": "http://127.0.0.1:1", **env}, tmp_path)
        _, err = p.communicate(timeout=30)
        path = env["MODELTAP_PREDICTION_BASELINE"].removeprefix("file://")
        assert p.returncode == 2 and path in err and expected in err, err


def test_unwritable_sink_fails_at_start(tmp_path, model_url):
    (tmp_path / "file").write_text("x")
    p = start(
        {
            "MODELTAP_UPSTREAM_URL": model_url,
            "MODELTAP_PORT": str(free_port()),
            "MODELTAP_SINK": str(tmp_path / "file" / "captures"),
        },
        tmp_path,
    )
    _, err = p.communicate(timeout=30)
    assert p.returncode != 0 and "not writable" in err


def test_sigterm_under_load_answers_in_flight_and_keeps_every_record(tmp_path, model_url):
    port = free_port()
    sink = tmp_path / "captures"
    p = start(
        {
            "MODELTAP_UPSTREAM_URL": model_url,
            "MODELTAP_PORT": str(port),
            "MODELTAP_SINK": str(sink),
            "MODELTAP_MODEL": "toy",
            "MODELTAP_SHUTDOWN_TIMEOUT_S": "10",
        },
        tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: _healthy(url), timeout=30), p.stderr.read() if p.poll() else ""
        answered: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()

        def client():
            with httpx.Client(timeout=10) as c:
                while not stop.is_set():
                    try:
                        r = c.get(url + "/slow?s=0.05")
                    except httpx.HTTPError:
                        return  # the listener closed: shutdown under way
                    if r.status_code == 200:
                        with lock:
                            answered.append(r.headers["x-request-id"])

        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        assert wait_for(lambda: len(answered) >= 40, timeout=30)
        p.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        p.wait(timeout=30)
        stop.set()
        for t in threads:
            t.join(15)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0 and time.monotonic() - t0 < 20
    kept = {r["event_id"] for r in all_records(sink)}
    assert set(answered) <= kept and len(answered) >= 40


def _healthy(url):
    try:
        return httpx.get(url + "/_modeltap/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize("workers", ["1", "2"])
def test_forwarded_headers_name_the_peer_the_proxy_saw(tmp_path, model_url, workers):
    # A caller on loopback (a sidecar's usual neighbour) that sends its own
    # X-Forwarded-For: the proxy appends the peer it saw, and sets the proto of
    # the connection it accepted, whatever uvicorn trusts by default.
    port = free_port()
    p = start(
        {
            "MODELTAP_UPSTREAM_URL": model_url,
            "MODELTAP_PORT": str(port),
            "MODELTAP_SINK": str(tmp_path / "captures"),
            "MODELTAP_WORKERS": workers,
        },
        tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: _healthy(url), timeout=30), p.stderr.read() if p.poll() else ""
        r = httpx.post(
            url + "/echo",
            content=b"x",
            headers={"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"},
            timeout=10,
        )
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    seen = json.loads(r.headers["x-echo-headers"])
    assert seen["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
