"""One run of ``./dev stack`` (``python -m loadtest.stack``) for the deploy tests.

``stack_run`` runs it once per session as a real process, with ``--keep`` and
its monitor pushing to ``pushgateway``: a real HTTP server on loopback that
keeps every body pushed to it (the Pushgateway's push API is a PUT or POST of
the text exposition format to ``/metrics/job/...``). While the stack is kept
running the fixture checks that its proxy answers, then stops it with SIGINT,
as Ctrl-C would.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest

from tests.servers import threaded_http_server

ROOT = Path(__file__).resolve().parents[2]
STACK_REQUESTS = 600  # drift needs 200 rows on each side (min_rows), quality 200 labels


@dataclass
class Pushgateway:
    url: str
    pushes: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, body


@pytest.fixture(scope="session")
def pushgateway() -> Iterator[Pushgateway]:
    pushes: list[tuple[str, str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def _keep(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            pushes.append((self.command, self.path, body.decode()))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        do_PUT = do_POST = _keep

        def log_message(self, *args: object) -> None:
            pass

    with threaded_http_server(Handler) as url:
        yield Pushgateway(url, pushes)


@dataclass
class StackRun:
    out: Path
    returncode: int
    stdout: str
    seconds: float
    urls: dict[str, str]
    answered_while_kept: int


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_stack(out: Path, *args: str, keep_check=None, timeout: float = 180) -> StackRun:
    """``python -m loadtest.stack --out OUT ARGS``; with ``--keep``, call
    ``keep_check(urls)`` once it is up, then SIGINT it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELTAP_", "AWS_"))}
    began = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadtest.stack", "--out", str(out), *args],
        cwd=ROOT,
        env=env,
        # Started with SIGINT ignored, as a background job of a non-interactive
        # shell (a CI runner's) is: the SIGINT below must stop it all the same.
        preexec_fn=_ignore_sigint,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    kept = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C stops it"):
                kept.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    urls: dict[str, str] = {}
    answered = 0
    try:
        if "--keep" in args:
            assert kept.wait(timeout), "".join(lines)[-3000:]
            text = "".join(lines)
            urls = dict(re.findall(r"(proxy|model) (http://127\.0\.0\.1:\d+)", text))
            if keep_check is not None:
                answered = keep_check(urls)
            proc.send_signal(signal.SIGINT)
        proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(10)
    stdout = "".join(lines)
    urls = urls or dict(re.findall(r"(proxy|model) (http://127\.0\.0\.1:\d+)", stdout))
    return StackRun(out, proc.returncode, stdout, time.monotonic() - began, urls, answered)


def _answers(urls: dict[str, str]) -> int:
    r = httpx.get(urls["proxy"] + "/_modeltap/healthz", timeout=5)
    return r.status_code


@pytest.fixture(scope="session")
def stack_run(tmp_path_factory: pytest.TempPathFactory, pushgateway: Pushgateway) -> StackRun:
    out = tmp_path_factory.mktemp("stack")
    return run_stack(
        out,
        "--keep",
        "--requests",
        str(STACK_REQUESTS),
        "--pushgateway",
        pushgateway.url,
        keep_check=_answers,
    )
