"""``python -m server --workers 2`` as real processes: load spread over both
workers, metrics summed whichever worker answers, a killed worker replaced
(its counters kept, its gauges dropped, its spool slot reclaimed), SIGTERM
drains every worker; plus spool slots and orphan spools on real flocks."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from capture.sinks.local import LocalSink
from capture.spool import DiskSpool
from capture.stats import CaptureStats
from server.metrics import forget_dead_workers
from server.workers import OrphanSpools, claim_spool_slot, try_claim
from tests.server.conftest import run_proxy
from tests.servers import free_port
from tests.support import all_records, read_objects, wait_for

PREDICT = "/v1/models/toy:predict"
LBL = (("model", "toy"),)


@contextlib.contextmanager
def workers_proxy(
    tmp_path: Path, model_url: str, *args: str, **env: str
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``python -m server`` in its own process group; stopped (SIGTERM, else
    SIGKILL to the group, workers included) on exit. Its stderr: ``log(tmp_path)``."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MODELTAP_", "PROM"))}
    environ.update(
        PYTHONPATH=os.getcwd(),
        MODELTAP_UPSTREAM_URL=model_url,
        MODELTAP_PORT=str(port),
        MODELTAP_SINK=str(tmp_path / "sink"),
        MODELTAP_MODEL="toy",
        MODELTAP_FLUSH_MAX_AGE_S="0.2",
        MODELTAP_SHUTDOWN_TIMEOUT_S="10",
    )
    environ.update(env)
    with open(tmp_path / "stderr.log", "a") as err:
        p = subprocess.Popen(
            [sys.executable, "-m", "server", *args],
            env=environ,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
            start_new_session=True,
        )
    try:
        yield p, f"http://127.0.0.1:{port}"
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(30)
        with contextlib.suppress(ProcessLookupError):  # workers left by a failed test
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def log(tmp_path: Path) -> str:
    return (tmp_path / "stderr.log").read_text()


def scrape(url: str) -> dict:
    text = httpx.get(url + "/_modeltap/metrics", timeout=5).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def families(url: str) -> set[tuple[str, str]]:
    """(name, type) of the families that have samples.

    ``*_created`` (a process's creation timestamps) is left out: multiprocess
    mode has none, as a sum of timestamps means nothing.
    """
    text = httpx.get(url + "/_modeltap/metrics", timeout=5).text
    found = text_string_to_metric_families(text)
    return {(f.name, f.type) for f in found if f.samples and not f.name.endswith("_created")}


def worker_pids(parent: int) -> set[int]:
    """The parent's spawned workers (not multiprocessing's resource tracker)."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if (
                ppid == parent
                and b"--multiprocessing-fork" in (stat.parent / "cmdline").read_bytes()
            ):
                pids.add(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return pids


def send(url: str, n: int, threads: int = 8, per_connection: int = 5) -> list[str]:
    """``n`` predictions over many short-lived connections; the answered event ids."""
    ids: list[str] = []
    lock = threading.Lock()

    def client(count: int) -> None:
        done = 0
        while done < count:
            with httpx.Client(timeout=10) as c:  # fresh connections: each is accepted anew
                for _ in range(min(per_connection, count - done)):
                    r = c.post(url + PREDICT, json={"instances": [[0.5, 1.0]]})
                    assert r.status_code == 200
                    with lock:
                        ids.append(r.headers["x-request-id"])
                    done += 1

    workers = [threading.Thread(target=client, args=(n // threads,)) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return ids


def pids_in_sink(sink: Path) -> set[str]:
    return {Path(key).name.split("-")[1] for key in read_objects(sink)}


def healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/_modeltap/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_two_workers_share_load_metrics_spool_and_drain_on_sigterm(tmp_path, model_url):
    spool = tmp_path / "spool"
    args = ("--workers", "2")
    with workers_proxy(tmp_path, model_url, *args, MODELTAP_SPOOL_DIR=str(spool)) as (p, url):
        assert wait_for(lambda: healthy(url) and len(worker_pids(p.pid)) == 2, timeout=30)
        first = send(url, 200, per_connection=10)
        sent = len(first)
        assert sent == 200

        # Both workers served and own one spool slot each; slot 2 is free.
        assert wait_for(
            lambda: scrape(url)[("modeltap_capture_records_written_total", LBL)] == sent
        )
        assert len(pids_in_sink(tmp_path / "sink")) == 2
        assert try_claim(spool, 0) is None and try_claim(spool, 1) is None
        free = try_claim(spool, 2)
        assert free is not None
        free.release()

        # Summed over workers, whichever answers (each scrape is a new connection).
        for _ in range(6):
            m = scrape(url)
            status = (("method", "POST"), ("model", "toy"), ("status", "200"))
            assert m[("modeltap_proxy_requests_total", status)] == sent
            assert m[("modeltap_proxy_request_seconds_count", LBL)] == sent
            assert m[("modeltap_capture_records_kept_total", LBL)] == sent
            assert m[("modeltap_capture_records_offered_total", LBL)] == sent
            assert m[("modeltap_capture_buffer_records", LBL)] == 0

        # A killed worker is replaced: its counters stay, its slot is taken again.
        victim = min(worker_pids(p.pid))
        os.kill(victim, signal.SIGKILL)
        assert wait_for(
            lambda: len(worker_pids(p.pid) - {victim}) == 2 and slots_held(spool), timeout=30
        )
        assert wait_for(lambda: healthy(url), timeout=10)
        for _ in range(4):
            assert scrape(url)[("modeltap_capture_records_kept_total", LBL)] == sent
        assert not any(
            name.endswith(f"_{victim}.db") and "live" in name
            for name in os.listdir(metrics_dir(p.pid))
        )
        assert not (spool / "worker-2").exists()

        # SIGTERM under load: every answered request has its record, exit 0.
        answered = list(first)
        lock, stop = threading.Lock(), threading.Event()

        def load() -> None:
            with httpx.Client(timeout=10) as c:
                while not stop.is_set():
                    try:
                        r = c.get(url + "/slow?s=0.02")
                    except httpx.HTTPError:
                        return  # the listener closed: shutdown under way
                    if r.status_code == 200:
                        with lock:
                            answered.append(r.headers["x-request-id"])

        threads = [threading.Thread(target=load) for _ in range(6)]
        for t in threads:
            t.start()
        assert wait_for(lambda: len(answered) >= sent + 40, timeout=20)
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
        stop.set()
        for t in threads:
            t.join(15)
    assert p.returncode == 0, log(tmp_path)
    kept = {r["event_id"] for r in all_records(tmp_path / "sink")}
    assert set(answered) <= kept and len(answered) > sent + 40
    assert not slots_held(spool)  # released at exit


def slots_held(spool: Path) -> bool:
    """True when slots 0 and 1 are both held by live workers."""
    for i in (0, 1):
        slot = try_claim(spool, i)
        if slot is not None:
            slot.release()
            return False
    return True


def metrics_dir(parent: int) -> str:
    """The PROMETHEUS_MULTIPROC_DIR the parent made (read from a worker's environment)."""
    pid = next(iter(worker_pids(parent)))
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    (value,) = [e for e in env if e.startswith(b"PROMETHEUS_MULTIPROC_DIR=")]
    return value.split(b"=", 1)[1].decode()


def test_same_metric_families_with_one_worker_and_two_and_leftover_spools_replayed(
    tmp_path, model_url
):
    one_kw = {"spool_dir": str(tmp_path / "s1"), "flush_max_age_s": 0.2}
    with run_proxy(model_url, tmp_path / "one", **one_kw) as one:
        send(one.url, 16, threads=2)
        assert wait_for(lambda: ("modeltap_prediction", "histogram") in families(one.url))
        single = families(one.url)
    # Left by earlier runs: a slot of this N, a slot of a larger N, one worker's spool.
    for leftover in ("s2/worker-0", "s2/worker-5", "s2"):
        _leave_spool(tmp_path / leftover, 1)
    env = {"MODELTAP_WORKERS": "2", "MODELTAP_SPOOL_DIR": "s2"}
    with workers_proxy(tmp_path, model_url, **env) as (p, url):
        assert wait_for(lambda: healthy(url), timeout=30)
        send(url, 16, threads=2)
        assert wait_for(lambda: families(url) == single), families(url) ^ single
        replayed = {f"left-{d}-0.jsonl.gz" for d in ("worker-0", "worker-5", "s2")}
        names = lambda: {k.rsplit("/", 1)[1] for k in read_objects_raw(tmp_path / "sink")}  # noqa: E731
        assert wait_for(lambda: replayed <= names()), names()
        p.send_signal(signal.SIGTERM)
        p.wait(30)
    assert p.returncode == 0, log(tmp_path)


def test_bad_worker_count_and_startup_failure_stop_the_parent(tmp_path, model_url):
    with workers_proxy(tmp_path, model_url, "--workers", "0") as (p, _):
        assert p.wait(30) == 2 and "MODELTAP_WORKERS=0 must be in 1..64" in log(tmp_path)
    (tmp_path / "file").write_text("x")
    bad_sink = str(tmp_path / "file" / "c")
    with workers_proxy(tmp_path, model_url, "--workers", "2", MODELTAP_SINK=bad_sink) as (p, _):
        assert p.wait(30) == 1 and "not writable" in log(tmp_path)


def test_slots_are_claimed_in_order_and_beyond_when_all_are_held(tmp_path):
    base = tmp_path / "spool"
    held = [claim_spool_slot(base, 2), claim_spool_slot(base, 2)]
    assert [s.directory.name for s in held] == ["worker-0", "worker-1"]
    extra = claim_spool_slot(base, 2)  # a rolling restart: old and new side by side
    assert extra.directory.name == "worker-2"
    held[0].release()
    again = claim_spool_slot(base, 2)
    assert again.directory.name == "worker-0"  # a restarted worker inherits the freed slot
    for s in (again, held[1], extra):
        s.release()


def _leave_spool(directory: Path, n: int) -> None:
    with DiskSpool(directory, fsync=False) as spool:
        for i in range(n):
            spool.write(f"toy/dt=2024-01-01/hour=00/left-{directory.name}-{i}.jsonl.gz", b"x", 3)


@pytest.mark.parametrize("workers", [1, 2])
def test_orphan_spools_are_replayed_but_owned_ones_are_not(tmp_path, workers):
    base, sink = tmp_path / "spool", LocalSink(tmp_path / "sink")
    _leave_spool(base / "worker-3", 2)  # from a run with more workers, or a rolling restart
    _leave_spool(base / "worker-1", 1)  # a slot whose worker died, free for now
    _leave_spool(base / "worker-0", 1)  # owned by a live worker when workers == 2
    _leave_spool(base, 1)  # a one-worker run's spool
    # The live owner: of slot 0 with two workers, of the base itself with one.
    owner = claim_spool_slot(base, workers) if workers == 2 else DiskSpool(base, fsync=False)
    stats = CaptureStats()
    delivered = OrphanSpools(base, workers, sink, stats).sweep()
    assert OrphanSpools(base, workers, sink, CaptureStats()).sweep() == 0  # nothing twice
    owner.release() if workers == 2 else owner.close()  # type: ignore[union-attr]
    keys = {k.rsplit("/", 1)[1] for k in read_objects_raw(tmp_path / "sink")}
    orphans = {"left-worker-3-0.jsonl.gz", "left-worker-3-1.jsonl.gz", "left-worker-1-0.jsonl.gz"}
    if workers == 2:  # worker-0 is held; base itself is an orphan
        assert keys == orphans | {"left-spool-0.jsonl.gz"}
    else:  # one worker holds base itself; worker-0 is an orphan
        assert keys == orphans | {"left-worker-0-0.jsonl.gz"}
    assert delivered == 3 * len(keys) == stats.get("replayed_records")


def read_objects_raw(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*.jsonl.gz")]


def test_a_dead_workers_gauges_go_and_its_counters_stay(tmp_path):
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    code = (
        "from prometheus_client import Counter, Gauge\n"
        "Counter('c', 'c').inc(5)\n"
        "Gauge('g', 'g', multiprocess_mode='livesum').set(7)\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=30)

    def values() -> dict:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(tmp_path))
        text = generate_latest(registry).decode()
        return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}

    assert values() == {"c_total": 5.0, "g": 7.0}
    assert len(forget_dead_workers(str(tmp_path))) == 1
    assert values() == {"c_total": 5.0}
    assert forget_dead_workers(str(tmp_path)) == []


def test_one_worker_ignores_a_multiprocess_dir(tmp_path, model_url):
    prom = tmp_path / "prom"
    prom.mkdir()
    with workers_proxy(tmp_path, model_url, PROMETHEUS_MULTIPROC_DIR=str(prom)) as (p, url):
        assert wait_for(lambda: healthy(url), timeout=30)
        sent = len(send(url, 20, threads=2))
        status = (("method", "POST"), ("model", "toy"), ("status", "200"))
        assert scrape(url)[("modeltap_proxy_requests_total", status)] == sent == 20
        assert ("modeltap_proxy_requests_created", status) in scrape(url)  # per-process mode
        p.send_signal(signal.SIGTERM)
        p.wait(30)
    assert p.returncode == 0 and list(prom.iterdir()) == []
