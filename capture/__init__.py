"""capture: record what a model saw and said, in the proxy or in model code.

import capture

cap = capture.Capturer.from_env()       # MODELTAP_* settings; or Capturer(sink=..., model=...)

@cap.capture                            # sync or async
def predict(request: dict) -> dict:
    capture.current().lookups({"user_ltv": 12.5})
    return {"scores": [...]}

cap.close()
"""

from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

from capture.capturer import Capturer
from capture.decorator import CallContext, current
from capture.settings import CaptureSettings
from capture.types import Exchange

__all__ = ["CallContext", "CaptureSettings", "Capturer", "Exchange", "compiled_modules", "current"]


def compiled_modules() -> list[str]:
    """The modules of ``capture`` and ``server`` installed as mypyc-compiled
    extensions (``setup.py``), sorted; empty when they run as interpreted
    Python (no C compiler at install, or ``MODELTAP_PURE_PYTHON=1``)."""
    root = Path(__file__).resolve().parent.parent
    found = set()
    for package in ("capture", "server"):
        for path in (root / package).rglob("*"):
            # the first suffix that fits: EXTENSION_SUFFIXES goes from the
            # most specific (".cpython-311-x86_64-linux-gnu.so") to ".so"
            suffix = next((s for s in EXTENSION_SUFFIXES if path.name.endswith(s)), None)
            if suffix is not None:
                parts = path.relative_to(root).with_name(path.name[: -len(suffix)]).parts
                found.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(found)
