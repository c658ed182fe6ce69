"""Build hook: the capture's per-record modules compiled with mypyc.

Everything else about the package is in ``pyproject.toml``; this file only
adds the extension modules. Why: on the proxy's 2-core benchmark, building a
record in the encoder helper cost ~16 µs of CPU per ``predict`` exchange as
interpreted Python and ~10.5 µs compiled, and the proxy's own request path
(``server.proxy``, sampling, the buffer) got cheaper too: capture on went
from 12,500 to 13,500 requests/s at 16 connections. Capture off got faster
as well, so capture on / off only moved from ~0.80 to 0.80-0.85
(BENCHMARKS.md, "Compiled with mypyc").

The source stays plain, type-checked Python: mypyc compiles the same files
that ``mypy`` checks, and each compiled module sits beside its ``.py`` as a
``.so`` that the import system prefers. Without a C compiler, or with
``MODELTAP_PURE_PYTHON=1`` at install time, the extensions are skipped and
the package runs as interpreted Python with the same behaviour (the tests
pass both ways; ``capture.compiled_modules()`` says which ones are native).

Modules compiled: those that run once per exchange or record. Not compiled:
modules with long loops on a background thread of the capturing process
(compiled code holds the GIL until it returns to the interpreter, so a loop
over a batch there would stall the request path: see ``capture.buffer``'s
``GIL_YIELD_EVERY``, which makes ``encode_items`` safe); ``server.upstream``,
whose async generator mypyc does not compile; and ``server.metrics``, whose
``PredictionTally`` crosses to the helper by pickle, which a mypyc native
class does not survive (it is rebuilt through ``__init__``).
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

GROUP = "modeltap_native"

#: Compiled modules, as paths from the project root. tests/test_build.py
#: checks that each exists and that the list matches the installed build.
COMPILED = [
    "capture/buffer.py",
    "capture/capturer.py",
    "capture/encoding.py",
    "capture/record.py",
    "capture/redaction.py",
    "capture/sampler.py",
    "capture/payloads/__init__.py",
    "capture/payloads/base.py",
    "capture/payloads/csv_body.py",
    "capture/payloads/kserve_v1.py",
    "capture/payloads/lookups.py",
    "capture/payloads/mapping.py",
    "capture/payloads/mlflow.py",
    "capture/payloads/oip_v2.py",
    "capture/payloads/ranking.py",
    "capture/payloads/tfserving.py",
    "server/proxy.py",
]


def ext_modules() -> list[Extension]:
    if os.environ.get("MODELTAP_PURE_PYTHON", "") not in ("", "0"):
        return []
    if sys.implementation.name != "cpython":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:  # built without the build-system requirements
        return []
    # mypy's own settings for the compile, not the project's strict checking
    # (that is `mypy` in ./dev test). Third-party packages count as Any,
    # whether or not they are installed where the build runs (a fresh venv
    # builds before it installs the dependencies), so every build compiles
    # the same code; only the compiled modules' own errors stop it.
    options = [
        f"--config-file={os.devnull}",
        "--no-site-packages",
        "--ignore-missing-imports",
        "--follow-imports=silent",
    ]
    exts = mypycify(options + COMPILED, opt_level="3", group_name=GROUP)
    for ext in exts:
        ext.optional = True  # no C compiler: install as interpreted Python
    return exts


class AllOrNone(build_ext):
    """Each compiled module's own small extension imports the shared one
    (``modeltap_native__mypyc``, mypyc's group). If that one failed to build
    (say the compiler ran out of memory on its large C file) while the small
    ones built, those modules could not be imported at all: then drop every
    extension, and the package installs as interpreted Python."""

    def run(self) -> None:
        super().run()
        built = [self.get_ext_fullpath(ext.name) for ext in self.extensions]
        shared = [
            p for ext, p in zip(self.extensions, built, strict=True) if ext.name.startswith(GROUP)
        ]
        if built and not all(os.path.exists(p) for p in shared):
            for path in built:
                if os.path.exists(path):
                    os.remove(path)
            print("modeltap: the shared compiled module failed to build: installing interpreted")


setup(ext_modules=ext_modules(), cmdclass={"build_ext": AllOrNone})
