"""Dependency audit: known vulnerabilities in what the venv has installed.

    python -m loadtest.audit [pip-audit options]      # e.g. --format=json, --fix

Runs ``pip-audit`` (PyPA; in the ``test`` extra) over the interpreter's
environment: the proxy's, the capture's and the monitor's dependencies,
plus the test and benchmark tools installed beside them. The project
itself (an editable install, not on PyPI) is skipped. It queries the PyPI
advisory service (OSV data) over the network, so it is a script run by hand
or in CI, never a test (tests use loopback only). Exit status is
pip-audit's: 0 when nothing known is found, 1 when something is, or when
any dependency could not be audited (``--strict``: without it, a machine
that cannot reach the advisory data prints "No known vulnerabilities found"
for packages it never checked, and exits 0).
"""

from __future__ import annotations

import subprocess
import sys


def main(argv: list[str]) -> int:
    cmd = [
        sys.executable,
        "-m",
        "pip_audit",
        "--skip-editable",
        "--progress-spinner=off",
        "--strict",
        *argv,
    ]
    print("$", " ".join(cmd[1:]), flush=True)
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
