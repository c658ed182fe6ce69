"""In-process capture: a decorator for model code, and ``current()`` for what
only the model knows (the features it fetched, extra features, the prediction).

    cap = Capturer.from_env()

    @cap.capture                          # sync or async; also @cap.capture(model="ranker")
    def predict(request: dict) -> dict:
        user = online_store.get(request["user_id"])
        capture.current().lookups(user)   # also .features({...}), .prediction(value)
        return {"scores": model.score(request["items"], user)}

Decisions and invariants:

- The sampling decision is made once, at entry. With ``key=`` (a function of
  the call's arguments, e.g. ``lambda req: req["user_id"]``) it is the same
  deterministic decision the proxy makes on that key. Without it, each call is
  an independent draw at the sample rate (equivalent to hashing a fresh random
  event id), and the event id is only generated for calls that are kept.
- A call not sampled pays for one random draw and a context-variable read:
  ``current()`` then returns a shared no-op object. Exceptions and slow calls
  are still recorded when the settings keep errors/slow exchanges, from the
  arguments and the outcome alone.
- The arguments and the return value are captured by reference and turned
  into a record in the background: do not mutate them after the call returns.
  The request is the call's single argument (``self``/``cls`` skipped), or
  ``{"args": [...], **kwargs}``; the response is the return value. Both go
  through the same payload adapters as proxied JSON, so a ranking function
  taking ``{"items": [...]}`` and returning ``{"scores": [...]}`` yields one
  row per item, and a function of a plain feature dict yields one row with
  its return value as the prediction. pandas DataFrames become lists of records.
- Capture never raises into the model code, never changes its return value,
  and re-raises its exceptions untouched (after recording them).
- Context is a ``contextvars.ContextVar``: correct under threads (Flask,
  Django) and asyncio (each task has its own context).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from capture.record import SCHEMA_VERSION, format_time, new_event_id
from capture.types import Exchange

if TYPE_CHECKING:
    from capture.capturer import Capturer

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


class CallContext:
    """What model code adds to the record of the call it is in."""

    __slots__ = ("_features", "_item_lookups", "_lookups", "_prediction", "event_id", "model")

    def __init__(self, event_id: str | None, model: str | None) -> None:
        self.event_id = event_id
        self.model = model
        self._lookups: dict[str, Any] = {}
        self._features: dict[str, Any] = {}
        self._item_lookups: Any = None
        self._prediction: Any = _UNSET

    @property
    def active(self) -> bool:
        """True when this call is being captured."""
        return True

    def lookups(
        self, values: Mapping[str, Any] | None = None, /, *, items: Any = None, **kw: Any
    ) -> None:
        """Features fetched from an online store (request-level), and per item
        (``items``: a list by position or a dict by item id)."""
        if values:
            self._lookups.update(values)
        if kw:
            self._lookups.update(kw)
        if items is not None:
            self._item_lookups = items

    def features(self, values: Mapping[str, Any] | None = None, /, **kw: Any) -> None:
        """Request-level features computed in the model code (land in ``context``)."""
        if values:
            self._features.update(values)
        if kw:
            self._features.update(kw)

    def prediction(self, value: Any) -> None:
        """The prediction, when the return value is not it (or not only it)."""
        self._prediction = value


class _NullContext(CallContext):
    """Returned by ``current()`` outside a captured call: every method is a no-op."""

    __slots__ = ()

    @property
    def active(self) -> bool:
        return False

    def lookups(
        self, values: Mapping[str, Any] | None = None, /, *, items: Any = None, **kw: Any
    ) -> None:
        return None

    def features(self, values: Mapping[str, Any] | None = None, /, **kw: Any) -> None:
        return None

    def prediction(self, value: Any) -> None:
        return None


_UNSET: Any = object()
_NULL = _NullContext(None, None)
_current: contextvars.ContextVar[CallContext] = contextvars.ContextVar(
    "modeltap_call", default=_NULL
)


def current() -> CallContext:
    """The capture context of the call in progress (a no-op one when none is)."""
    return _current.get()


class Call(NamedTuple):
    """A finished call, queued for the background (built on the call path)."""

    ctx: CallContext
    function: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    result: Any
    error: BaseException | None
    start: float
    latency_s: float
    reason: str


def _plain(obj: Any) -> Any:
    if hasattr(obj, "to_dict") and hasattr(obj, "columns"):  # a pandas DataFrame
        try:
            return obj.to_dict(orient="records")
        except Exception:
            return str(obj)
    return obj


def call_record(call: Call, capturer: Capturer) -> dict[str, Any]:
    """The v1 record of a captured call (background)."""
    ctx = call.ctx
    settings = capturer.settings
    request: Any = (
        _plain(call.args[0])
        if len(call.args) == 1 and not call.kwargs
        else {
            "args": [_plain(a) for a in call.args],
            **{k: _plain(v) for k, v in call.kwargs.items()},
        }
    )
    response = _plain(call.result) if call.error is None else None
    status = 500 if call.error is not None else 200
    event_id = ctx.event_id or new_event_id()
    body = settings.capture_bodies
    record: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "event_id": event_id,
        "time": format_time(call.start),
        "model": {
            "name": ctx.model or settings.model,
            "version": settings.model_version,
            "variant": settings.model_variant,
        },
        "request": {
            "function": call.function,
            "headers": {},
            "body": {"encoding": "json", "data": request} if body else None,
        },
        "response": {
            "status": status,
            "headers": {},
            "body": {"encoding": "json", "data": response}
            if body and response is not None
            else None,
        },
        "status": status,
        "latency_ms": round(call.latency_s * 1000.0, 3),
        "error": None
        if call.error is None
        else f"{type(call.error).__name__}: {call.error}"[:1000],
        "context": {},
        "lookups": {},
        "rows": [],
        "parse": {"adapter": None, "error": None},
        "sampling": {"rate": capturer.sampler.rate, "reason": call.reason},
        "source": "decorator",
    }
    exchange = Exchange(
        event_id,
        call.start,
        call.latency_s,
        "CALL",
        call.function,
        "",
        [],
        b"",
        0,
        status,
        [],
        b"",
        0,
        record["error"],
        ctx.model,
    )
    if capturer.extract is not None:
        capturer.extract(record, request, response, exchange)
    if record["parse"]["adapter"] is None and not record["rows"]:
        # A plain function of a feature dict: one row, its return value the prediction.
        record["parse"]["error"] = None
        if isinstance(request, dict) and "args" not in request:
            row: dict[str, Any] = {"features": request}
            if response is not None:
                row["prediction"] = response
            record["rows"] = [row]
    record["context"].update(ctx._features)
    record["lookups"].update(ctx._lookups)
    if ctx._item_lookups is not None:
        from capture.payloads.base import Notes
        from capture.payloads.lookups import apply_item_lookups

        notes = Notes()
        apply_item_lookups(record["rows"], ctx._item_lookups, notes)
        if notes.text():
            record["parse"]["error"] = "; ".join(
                filter(None, [record["parse"]["error"], notes.text()])
            )
    if ctx._prediction is not _UNSET:
        _set_prediction(record, ctx._prediction)
    return record


def _set_prediction(record: dict[str, Any], value: Any) -> None:
    rows = record["rows"]
    if isinstance(value, list) and len(rows) > 1 and len(value) == len(rows):
        for row, v in zip(rows, value, strict=True):
            row["prediction"] = v
    elif len(rows) == 1:
        rows[0]["prediction"] = value
    elif not rows:
        rows.append({"features": dict(record["context"]), "prediction": value})
    else:
        record["context"]["prediction"] = value


def _skip_self(fn: Callable[..., Any]) -> int:
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return 0
    return 1 if params and params[0] in ("self", "cls") else 0


def decorate(
    capturer: Capturer,
    fn: F,
    *,
    model: str | None = None,
    key: Callable[..., Any] | None = None,
) -> F:
    """Wrap ``fn`` (sync or async) so each sampled call becomes a record."""
    sampler = capturer.sampler
    stats = capturer.stats
    name = getattr(fn, "__qualname__", repr(fn))
    skip = _skip_self(fn)
    keep_errors = sampler.keep_errors
    slow_s = sampler.slow_s if sampler.slow_s is not None else float("inf")
    rate = sampler.rate
    rand = random.random
    clock = time.time
    perf = time.perf_counter

    def sampled(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        if rate >= 1.0:
            return True
        if key is None:
            return rand() < rate
        try:
            return sampler.hit(str(key(*args[skip:], **kwargs)))
        except Exception:
            log.warning("capture key function failed for %s; call not sampled", name)
            return False

    def finish(
        ctx: CallContext | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        result: Any,
        error: BaseException | None,
        elapsed: float,
    ) -> None:
        try:
            if ctx is None:  # not sampled: only errors and slow calls are kept
                reason = "error" if error is not None else "slow"
                ctx = CallContext(None, model)
            else:  # an error or slow call says so, as the proxy's (capture.sampler)
                reason = (
                    sampler.kept_anyway(latency_s=elapsed, error=error is not None) or "sampled"
                )
            start = clock() - elapsed
            call = Call(ctx, name, args[skip:], kwargs, result, error, start, elapsed, reason)
            capturer.offer_call(call)
        except Exception:
            log.exception("capture of %s failed; the call itself was not affected", name)

    profile_all = capturer.traffic is not None

    def profile(
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        result: Any,
        error: BaseException | None,
        elapsed: float,
    ) -> None:  # a sampled-out call, for the full-traffic profile only
        try:
            start = clock() - elapsed
            ctx = CallContext(None, model)
            call = Call(ctx, name, args[skip:], kwargs, result, error, start, elapsed, "profile")
            capturer.profile_call(call)
        except Exception:
            log.exception("profiling a call of %s failed; the call itself was not affected", name)

    # The sync and async wrappers are spelled out twice on purpose: folding the
    # unsampled branch into ``finish`` costs ~0.6 us a call, the whole budget.
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = perf()
            if not sampled(args, kwargs):
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as exc:
                    if keep_errors:
                        finish(None, args, kwargs, None, exc, perf() - t0)
                    else:
                        stats.count_unsampled()
                        if profile_all:
                            profile(args, kwargs, None, exc, perf() - t0)
                    raise
                elapsed = perf() - t0
                if elapsed >= slow_s:
                    finish(None, args, kwargs, result, None, elapsed)
                else:
                    stats.count_unsampled()
                    if profile_all:
                        profile(args, kwargs, result, None, elapsed)
                return result
            ctx = CallContext(new_event_id(), model)
            token = _current.set(ctx)
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                _current.reset(token)
                finish(ctx, args, kwargs, None, exc, perf() - t0)
                raise
            _current.reset(token)
            finish(ctx, args, kwargs, result, None, perf() - t0)
            return result

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = perf()
        if not sampled(args, kwargs):
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                if keep_errors:
                    finish(None, args, kwargs, None, exc, perf() - t0)
                else:
                    stats.count_unsampled()
                    if profile_all:
                        profile(args, kwargs, None, exc, perf() - t0)
                raise
            elapsed = perf() - t0
            if elapsed >= slow_s:
                finish(None, args, kwargs, result, None, elapsed)
            else:
                stats.count_unsampled()
                if profile_all:
                    profile(args, kwargs, result, None, elapsed)
            return result
        ctx = CallContext(new_event_id(), model)
        token = _current.set(ctx)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            _current.reset(token)
            finish(ctx, args, kwargs, None, exc, perf() - t0)
            raise
        _current.reset(token)
        finish(ctx, args, kwargs, result, None, perf() - t0)
        return result

    return wrapper  # type: ignore[return-value]
