"""The transient retry policy: which failures are worth sending again, how often, how long.

Transient failures (408, 409, 429, 5xx, 529, connection errors and timeouts, SSE
``overloaded_error``/``api_error`` events) are retried up to ``max_retries`` times, honouring
``retry-after-ms`` and ``retry-after`` and otherwise backing off exponentially with jitter.
Tenacity's stop and wait strategies compute the budget and the waits; the loop that sends is
the run's (:mod:`prefill_guard.run`). Whatever a transient retry does not answer goes to the
processors. tenacity's types stay inside this module.
"""

from __future__ import annotations

import asyncio
import email.utils
import inspect
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import anthropic
import httpx2
from tenacity import RetryCallState, Retrying, stop_after_attempt, wait_exponential, wait_random

from .errors import api_error_type
from .telemetry import record_retry

__all__ = [
    "OnRetry",
    "RetryDetails",
    "RetryPolicy",
    "TransientBudget",
    "is_transient",
    "retry_after",
]

logger = logging.getLogger("prefill_guard")

_TRANSIENT_STATUSES = frozenset((408, 409, 429))
_TRANSIENT_STREAM_ERRORS = frozenset(("overloaded_error", "api_error"))
_BACKOFF_INITIAL = 0.5
_BACKOFF_MAX = 8.0


@dataclass(frozen=True)
class RetryDetails:
    """What an ``on_retry`` hook is told about one retry, just before it happens.

    ``kind`` is ``"transient"`` (the API was overloaded, rate-limited, unreachable, ...) or
    ``"processor"`` (a processor repaired the request); ``processor_id`` names the processor
    for the latter. ``attempt`` is the number of the attempt that failed (1-based, counted over
    the whole generation) and ``wait`` the seconds slept before the next one.
    """

    kind: Literal["transient", "processor"]
    attempt: int
    error: BaseException
    wait: float
    processor_id: str | None = None
    request_id: str | None = None


class OnRetry(Protocol):
    """A hook called with the :class:`RetryDetails` of every retry, for metrics or logging."""

    def __call__(self, details: RetryDetails, /) -> None: ...


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` is worth retrying unchanged: it says nothing about the request itself.

    400-class validation errors are never transient; they belong to the processors. A
    ``x-should-retry: false`` header from the API vetoes a retry.
    """
    if isinstance(error, anthropic.APIStatusError):
        if error.response.headers.get("x-should-retry") == "false":
            return False
        status = error.status_code
        if status == 200:  # an SSE `error` event inside a successful stream
            return api_error_type(error) in _TRANSIENT_STREAM_ERRORS
        return status in _TRANSIENT_STATUSES or status >= 500
    # APIConnectionError covers timeouts; raw transport errors escape mid-stream.
    return isinstance(error, (anthropic.APIConnectionError, httpx2.TransportError))


def retry_after(error: BaseException) -> float | None:
    """The delay the API asked for: ``retry-after-ms``, else ``retry-after`` (seconds or date)."""
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    milliseconds = _finite(headers.get("retry-after-ms"))
    if milliseconds is not None:
        return max(milliseconds / 1000.0, 0.0)
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _finite(value)
    if seconds is not None:
        return max(seconds, 0.0)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _finite(text: str | None) -> float | None:
    """A header's number, or None when absent, unreadable, infinite or NaN."""
    if text is None:
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


TransientBudget = RetryCallState
"""One round of transient retries (tenacity's state: the attempt number and the last failure);
a processor's retry starts a fresh one."""


class RetryPolicy:
    """The Agent's retry settings: the transient budget, the cap on waits, hooks, sleeping.

    ``sleep`` replaces real sleeping (tests pass a recorder); in async runs an awaitable
    result is awaited. Immutable after construction and safe to share: the state of one run's
    transient retries is a :data:`TransientBudget` of its own.
    """

    __slots__ = (
        "_backoff",
        "_controller",
        "_stop",
        "max_retries",
        "max_retry_delay",
        "on_retry",
        "sleep",
    )

    def __init__(
        self,
        *,
        max_retries: int = 2,
        max_retry_delay: float = 60.0,
        on_retry: Iterable[OnRetry] = (),
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")
        if (
            not isinstance(max_retry_delay, (int, float))
            or isinstance(max_retry_delay, bool)
            or not math.isfinite(max_retry_delay)
            or max_retry_delay < 0
        ):
            raise ValueError(
                f"max_retry_delay must be >= 0 seconds (a finite number), got {max_retry_delay!r}"
            )
        hooks = tuple(on_retry)
        for index, hook in enumerate(hooks):
            if not callable(hook):
                raise TypeError(f"on_retry[{index}]: {hook!r} is not callable")
            if inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(
                getattr(hook, "__call__", None)  # noqa: B004 - async callable objects too
            ):
                raise TypeError(
                    f"on_retry[{index}]: {hook!r} is async; on_retry hooks must be plain "
                    "functions (they run inside the retry loop and must not block)"
                )
        if sleep is not None and not callable(sleep):
            raise TypeError(f"sleep must be callable, got {sleep!r}")
        self.max_retries = max_retries
        self.max_retry_delay = float(max_retry_delay)
        self.on_retry = hooks
        self.sleep = sleep
        # 0.5 s, 1 s, 2 s, ... up to 8 s, plus up to 0.5 s of jitter (tenacity >= 9.0 spelling).
        self._backoff = wait_exponential(
            multiplier=_BACKOFF_INITIAL, max=min(_BACKOFF_MAX, self.max_retry_delay)
        ) + wait_random(0, _BACKOFF_INITIAL)
        self._stop = stop_after_attempt(max_retries + 1)
        # Owns the states only (their repr names it); it never runs anything.
        self._controller = Retrying(stop=self._stop, wait=self._backoff)

    def new_budget(self) -> TransientBudget:
        """A fresh round of transient retries."""
        return RetryCallState(self._controller, None, (), {})

    def transient_wait(self, budget: TransientBudget, error: BaseException) -> float | None:
        """The seconds to wait before sending again after ``error``, or ``None``: the error is
        not transient, or ``budget`` has no retry left. A retry-after from the API wins over
        the backoff; either is capped at ``max_retry_delay``."""
        if not is_transient(error):
            return None
        budget.set_exception((type(error), error, error.__traceback__))
        if self._stop(budget):
            return None
        asked = retry_after(error)
        delay = asked if asked is not None else float(self._backoff(budget))
        budget.prepare_for_next_attempt()
        return min(delay, self.max_retry_delay)

    def report(
        self,
        details: RetryDetails,
        *,
        model: str | None = None,
        content: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Log the retry at INFO (no message contents, no key; the fields in ``extra``, for
        structured logging), record it for OpenTelemetry (an event on the current span, with
        ``content``, the messages about to be sent, if content capture is on; the retries
        counter), and call every hook."""
        fields = {
            "prefill_guard.event": "prefill_guard.retry",
            "prefill_guard.retry.kind": details.kind,
            "prefill_guard.processor.id": details.processor_id,
            "prefill_guard.attempt": details.attempt,
            "prefill_guard.retry.wait": details.wait,
            "prefill_guard.request_id": details.request_id,
            "gen_ai.request.model": model,
            "error.type": type(details.error).__name__,
            "http.response.status_code": getattr(details.error, "status_code", None),
        }
        logger.info(
            "retrying (%s%s) after %s%s, request id %s, attempt %d failed; waiting %.2fs",
            details.kind,
            f" by processor {details.processor_id!r}" if details.processor_id else "",
            type(details.error).__name__,
            _status_text(details.error),
            details.request_id,
            details.attempt,
            details.wait,
            extra=fields,
        )
        record_retry(fields, content)
        for hook in self.on_retry:
            try:
                hook(details)
            except Exception:
                logger.exception("on_retry hook %r raised; ignored", hook)

    def sleep_sync(self, seconds: float) -> None:
        """Wait ``seconds`` in a synchronous run (with ``sleep`` if one was given)."""
        if self.sleep is None:
            time.sleep(seconds)
            return
        result = self.sleep(seconds)
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise TypeError("an async sleep function cannot be used by a synchronous run")

    async def sleep_async(self, seconds: float) -> None:
        """Wait ``seconds`` in an async run (awaiting ``sleep``'s result if it is awaitable)."""
        if self.sleep is None:
            await asyncio.sleep(seconds)
            return
        result = self.sleep(seconds)
        if inspect.isawaitable(result):
            await result


def _status_text(error: BaseException) -> str:
    status = getattr(error, "status_code", None)
    return f" ({status})" if status is not None else ""
