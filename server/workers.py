"""Several proxy worker processes on one port (``MODELTAP_WORKERS`` > 1).

The parent (``serve_workers``) binds the listening socket, prepares the
Prometheus multiprocess directory, exports the settings as ``MODELTAP_*``
variables and hands over to uvicorn's own supervisor (``Multiprocess``):
it spawns the workers (fresh interpreters, never forks of a process with
threads), passes them the socket, health-checks them, replaces one that dies,
and on SIGTERM/SIGINT sends SIGTERM to each and waits. Why not one
``SO_REUSEPORT`` socket per worker: a second proxy started on the same port
would then silently share the traffic instead of failing to bind, and the
kernel's even spread is not needed: with one shared socket, 16 wrk
connections split about 45/55 between two workers here.

Each worker builds its app in ``worker_app`` from the environment, and its
lifespan creates the capture buffer, the upstream client and the threads
(``WorkerRuntime`` adds the spool slot and the metrics publisher). On SIGTERM
a worker finishes in-flight requests, flushes or spools its buffer and exits
0; the parent exits 0 when every worker did, else 1.

Spool slots: with ``MODELTAP_SPOOL_DIR=D`` and N workers, a worker takes the
first slot ``D/worker-i`` whose claim lock (``D/.worker-i.claim``, an
exclusive ``flock`` held for the worker's life) is free, trying 0..N-1 first,
so a restarted worker inherits (and replays) its predecessor's spool; when
0..N-1 are all held (a SIGHUP rolling restart runs old and new workers side
by side) it takes the next free one beyond. One worker uses ``D`` itself, as
before. ``OrphanSpools`` replays, at start and every ``ORPHAN_SWEEP_S``, the
non-empty spools that no process holds: every ``D/worker-k`` whose claim is
free (left by a larger N, a rolling restart, or N > 1 before a switch to
one worker) and, with N > 1, ``D`` itself (left by one worker before a
switch to several). So no spool is orphaned whatever N was before.

``/_modeltap/flush`` flushes the worker that receives the request only.
"""

from __future__ import annotations

import dataclasses
import fcntl
import gc
import logging
import multiprocessing
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn

from capture.errors import ConfigError, SpoolError
from capture.settings import CaptureSettings
from capture.stats import CaptureStats
from capture.types import Sink
from server.settings import ProxySettings

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from capture.capturer import Capturer
    from server.app import ProxyApp
    from server.metrics import CapturePublisher

log = logging.getLogger(__name__)

WORKER_APP = "server.workers:worker_app"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
STARTUP_FAILURE = 3  # uvicorn's code for "will fail again": its supervisor stops
ORPHAN_SWEEP_S = 30.0
_SLOT = re.compile(r"^worker-(\d+)$")


def tune_interpreter() -> None:
    """Per-process settings of the proxy (the parent's and every worker's)."""
    # The capture encodes on a background thread; with the default 5 ms switch
    # interval it can hold the GIL that long while a request waits.
    sys.setswitchinterval(float(os.environ.get("MODELTAP_GIL_SWITCH_S", "0.0005")))


def tune_gc() -> None:
    """Call once the app exists, before serving."""
    # Records are built in bursts of thousands of small objects; with the
    # default thresholds that triggers frequent full collections, which stop
    # the event loop too. Move what exists now out of the GC's way and collect
    # the young generation less often.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


# -- parent ---------------------------------------------------------------------


#: uvicorn settings of both entry points. ``proxy_headers`` off: the proxy
#: writes X-Forwarded-For/-Proto/-Host itself from the connection it accepted;
#: uvicorn's default would take a loopback caller's X-Forwarded-For as the
#: client, and the proxy would then append that address instead of the peer.
UVICORN_OPTIONS: dict[str, Any] = {
    "lifespan": "on",
    "log_level": "warning",
    "access_log": False,
    "proxy_headers": False,
}


def serve_workers(settings: ProxySettings, env: dict[str, str]) -> int:
    """Run ``settings.workers`` workers until SIGTERM/SIGINT; the exit status."""
    from uvicorn.supervisors import Multiprocess

    metrics_dir, owned = _multiprocess_dir()
    os.environ.update(env)  # the workers inherit the environment: same settings
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    config = WorkerConfig(
        WORKER_APP,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
        **UVICORN_OPTIONS,
    )
    try:
        sock = config.bind_socket()  # exits 3 with uvicorn's message when the port is taken
        supervisor = Multiprocess(config, sockets=[sock])
        try:
            supervisor.run()
        finally:
            sock.close()
    finally:
        if owned:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    failed = {p.pid: p.exitcode for p in supervisor.processes if p.exitcode != 0}
    if failed:
        log.error("worker exit codes (pid: code): %s", failed)
        return 1
    return 0


def _multiprocess_dir() -> tuple[str, bool]:
    """The user's ``PROMETHEUS_MULTIPROC_DIR`` (stale values wiped) or a fresh one."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not given:
        # Values are written to mmap'ed files on every request: keep them in RAM.
        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        return tempfile.mkdtemp(prefix="modeltap-metrics-", dir=shm), True
    path = Path(given)
    try:
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):  # a previous run's values would be summed in
            stale.unlink()
    except OSError as exc:
        raise ConfigError(f"PROMETHEUS_MULTIPROC_DIR={given!r} unusable: {exc}") from exc
    return given, False


# -- worker ---------------------------------------------------------------------

_early_signals: list[int] = []


def _remember(sig: int, frame: FrameType | None) -> None:
    _early_signals.append(sig)


class WorkerConfig(uvicorn.Config):
    """uvicorn's config plus the per-process setup of a worker.

    uvicorn calls ``configure_logging`` first thing in each spawned worker,
    before its server installs (and, on exit, restores then re-raises) its
    signal handlers: the one hook that runs there. The handler installed here
    makes that re-raise harmless, so a drained worker exits 0 rather than
    dying of SIGTERM, and remembers a signal that arrives before uvicorn
    listens (``worker_app`` passes it on).
    """

    def configure_logging(self) -> None:
        super().configure_logging()
        if multiprocessing.parent_process() is not None:
            logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, _remember)
            tune_interpreter()


def worker_app() -> ProxyApp:
    """The app factory uvicorn calls in each worker (settings from the environment)."""
    from server.app import create_app

    try:
        app = create_app(ProxySettings.from_env())
    except ConfigError as exc:
        log.error("cannot start: %s", exc)
        sys.exit(STARTUP_FAILURE)
    for sig in _early_signals:  # uvicorn's handlers are in place now
        signal.raise_signal(sig)
    tune_gc()
    return app


class WorkerRuntime:
    """What a worker adds around its capturer: its spool slot, the orphan
    sweep, and (N > 1) the multiprocess metrics. Built in the lifespan.

        runtime = WorkerRuntime(settings)
        capturer = Capturer(runtime.capture_settings(), ...)
        exposition = runtime.attach(capturer, registry)   # serve this one
        ...
        runtime.stop_background(); capturer.close(); runtime.close()
    """

    def __init__(self, settings: ProxySettings) -> None:
        from server.metrics import multiprocess_dir

        self.settings = settings
        self.metrics_dir = multiprocess_dir() if settings.workers > 1 else None
        self.slot: SpoolSlot | None = None
        self.orphans: OrphanSpools | None = None
        self.publisher: CapturePublisher | None = None

    def capture_settings(self) -> CaptureSettings:
        """The capture settings, pointing at the spool slot this worker claimed."""
        cap = self.settings.capture
        if self.settings.workers == 1 or not cap.spool_dir:
            return cap
        self.slot = claim_spool_slot(Path(cap.spool_dir), self.settings.workers)
        log.info("worker %d spools to %s", os.getpid(), self.slot.directory)
        return dataclasses.replace(cap, spool_dir=str(self.slot.directory))

    def attach(self, capturer: Capturer, registry: CollectorRegistry) -> CollectorRegistry:
        """Start the background parts; returns the registry ``/metrics`` serves."""
        from server.metrics import CaptureCollector, CapturePublisher, multiprocess_registry

        cap = self.settings.capture
        if cap.spool_dir:
            self.orphans = OrphanSpools(
                Path(cap.spool_dir), self.settings.workers, capturer.sink, capturer.stats
            )
            self.orphans.start()
        if self.metrics_dir is None:
            registry.register(CaptureCollector(capturer.stats, model=cap.model))
            return registry
        self.publisher = CapturePublisher(capturer.stats, model=cap.model, registry=registry)
        self.publisher.start()
        return multiprocess_registry(self.metrics_dir)

    def before_scrape(self) -> None:
        """Publish this worker's capture counters now; drop dead workers' gauges."""
        from server.metrics import forget_dead_workers

        if self.publisher is not None and self.metrics_dir is not None:
            try:
                self.publisher.publish()
                forget_dead_workers(self.metrics_dir)
            except OSError:  # serve what the files hold rather than fail the scrape
                log.exception("refreshing multiprocess metrics failed")

    def stop_background(self) -> None:
        """Before the capturer closes (the sweep uses its sink)."""
        if self.orphans is not None:
            self.orphans.stop()

    def close(self) -> None:
        """After the capturer closed: final counters, then this pid's gauges go."""
        from server.metrics import forget_worker

        try:
            if self.publisher is not None and self.metrics_dir is not None:
                self.publisher.stop()
                forget_worker(os.getpid(), self.metrics_dir)
        except OSError:
            log.exception("final multiprocess metrics not written")
        finally:
            if self.slot is not None:
                self.slot.release()


# -- spool slots ------------------------------------------------------------------


@dataclass
class SpoolSlot:
    """A claimed ``D/worker-i``: the claim lock is held until ``release``."""

    directory: Path
    index: int
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # releases the flock
            self.fd = -1


def try_claim(base: Path, index: int) -> SpoolSlot | None:
    """Claim slot ``index`` of ``base`` if no process (or other claim) holds it."""
    try:
        fd = os.open(base / f".worker-{index}.claim", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise SpoolError(f"cannot claim a spool slot in {base}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return SpoolSlot(base / f"worker-{index}", index, fd)


def claim_spool_slot(base: Path, workers: int) -> SpoolSlot:
    """The first free slot of ``base``: 0..workers-1, then beyond (overlaps)."""
    try:
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise SpoolError(f"cannot create spool directory {base}: {exc}") from exc
    for index in range(2 * workers + 8):
        slot = try_claim(base, index)
        if slot is not None:
            if index >= workers:  # a rolling restart, or a sweep replaying a free slot
                log.info("spool slots 0..%d busy; using %s", workers - 1, slot.directory)
            return slot
    raise SpoolError(f"every spool slot in {base} is held by another process")


class OrphanSpools:
    """Replays the spools under ``base`` that no live process holds.

    A spool is replayed while holding its claim (and the spool's own lock), so
    it never races an owner, and a worker starting meanwhile takes another
    slot; what the sink does not take stays for the next sweep. Replayed
    records count in ``stats`` like the capture's own.
    """

    def __init__(
        self,
        base: Path,
        workers: int,
        sink: Sink,
        stats: CaptureStats,
        *,
        interval_s: float = ORPHAN_SWEEP_S,
    ) -> None:
        self.base, self.workers, self.sink, self.stats = base, workers, sink, stats
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def candidates(self) -> list[tuple[Path, int | None]]:
        """(directory, slot index or None for ``base`` itself) to look at."""
        # One worker spools to base itself: it holds base's lock, never a slot.
        found: list[tuple[Path, int | None]] = [] if self.workers == 1 else [(self.base, None)]
        try:
            names = sorted(os.listdir(self.base))
        except OSError:
            return found
        return found + [(self.base / n, int(m[1])) for n in names if (m := _SLOT.match(n))]

    def sweep(self) -> int:
        """Replay every unowned non-empty spool once; records delivered."""
        from capture.spool import DiskSpool

        delivered = 0
        for directory, index in self.candidates():
            if self._stop.is_set():
                break
            if not any(directory.glob("segment-*.wal")):
                continue
            claim = try_claim(self.base, index) if index is not None else None
            if index is not None and claim is None:
                continue  # a live worker owns it
            try:
                spool = DiskSpool(directory, stats=CaptureStats())
            except SpoolError as exc:  # held by a process that predates claims, or unusable
                log.info("orphan spool %s skipped: %s", directory, exc)
                if claim is not None:
                    claim.release()
                continue
            try:
                while not self._stop.is_set():  # in steps, so a shutdown is not held up
                    result = spool.replay(self.sink, limit=16)
                    delivered += result.records
                    self.stats.add("replayed_records", result.records)
                    self.stats.add("replayed_batches", result.batches)
                    if result.corrupt:
                        self.stats.drop("spool_corrupt", result.corrupt)
                    if result.error or result.batches < 16:
                        break
                log.info("orphan spool %s: %d bytes left", directory, spool.size_bytes())
            finally:
                spool.close()
                if claim is not None:
                    claim.release()
        return delivered

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="modeltap-orphans", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self.sweep()
            except Exception:  # a sweep must never take the worker down
                log.exception("orphan spool sweep failed")
            if self._stop.wait(self.interval_s):
                return

    def stop(self, timeout: float = 5.0) -> None:
        """Stop sweeping; a replay stuck on a slow sink is left to end with it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("orphan spool replay still running at shutdown; left to the sink")
