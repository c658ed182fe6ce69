"""capture: record what a model saw and said, in the proxy or in model code.

import capture

cap = capture.Capturer.from_env()       # MODELTAP_* settings; or Capturer(sink=..., model=...)

@cap.capture                            # sync or async
def predict(request: dict) -> dict:
    capture.current().lookups({"user_ltv": 12.5})
    return {"scores": [...]}

cap.close()
"""

from capture.capturer import Capturer
from capture.decorator import CallContext, current
from capture.settings import CaptureSettings
from capture.types import Exchange

__all__ = ["CallContext", "CaptureSettings", "Capturer", "Exchange", "current"]
