"""The two retry loops of one generation, both built on tenacity.

The *inner* loop retries transient failures (408, 409, 429, 5xx, 529, connection errors and
timeouts, SSE ``overloaded_error``/``api_error`` events) up to ``max_retries`` times, honouring
``retry-after-ms`` and ``retry-after`` and otherwise backing off exponentially with jitter.
The *outer* loop hands whatever error is left to the processor pipeline
(:class:`~prefill_guard.pipeline.Generation`), which decides whether to retry. Controllers are
built per call and never shared; tenacity's types stay inside this module.
"""

from __future__ import annotations

import asyncio
import email.utils
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import anthropic
import httpx2
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_never,
    wait_exponential,
    wait_none,
    wait_random,
)

from .errors import api_error_type
from .pipeline import Generation, run_async, run_sync

__all__ = [
    "OnRetry",
    "RetryDetails",
    "RetryPolicy",
    "acall_with_retries",
    "aresume_with_retries",
    "call_with_retries",
    "is_transient",
    "resume_with_retries",
    "retry_after",
]

logger = logging.getLogger("prefill_guard")

T = TypeVar("T")

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


class RetryPolicy:
    """The Agent's retry settings: the transient budget, the cap on waits, hooks, sleeping.

    ``sleep`` replaces real sleeping (tests pass a recorder); in async runs an awaitable
    result is awaited. Immutable after construction and safe to share.
    """

    __slots__ = ("_backoff", "max_retries", "max_retry_delay", "on_retry", "sleep")

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

    def wait(self, state: RetryCallState) -> float:
        """A tenacity wait: the API's retry-after when given, else backoff; capped either way."""
        error = _failure(state)
        asked = retry_after(error) if error is not None else None
        delay = asked if asked is not None else float(self._backoff(state))
        return min(delay, self.max_retry_delay)

    def report(self, details: RetryDetails) -> None:
        """Log the retry at INFO (no message contents, no key) and call every hook."""
        logger.info(
            "retrying (%s%s) after %s%s, request id %s, attempt %d failed; waiting %.2fs",
            details.kind,
            f" by processor {details.processor_id!r}" if details.processor_id else "",
            type(details.error).__name__,
            _status_text(details.error),
            details.request_id,
            details.attempt,
            details.wait,
        )
        for hook in self.on_retry:
            try:
                hook(details)
            except Exception:
                logger.exception("on_retry hook %r raised; ignored", hook)

    def _sync_sleep(self, seconds: float) -> None:
        if self.sleep is None:
            time.sleep(seconds)
            return
        result = self.sleep(seconds)
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise TypeError("an async sleep function cannot be used by a synchronous run")

    async def _async_sleep(self, seconds: float) -> None:
        if self.sleep is None:
            await asyncio.sleep(seconds)
            return
        result = self.sleep(seconds)
        if inspect.isawaitable(result):
            await result


def _status_text(error: BaseException) -> str:
    status = getattr(error, "status_code", None)
    return f" ({status})" if status is not None else ""


def _failure(state: RetryCallState) -> BaseException | None:
    outcome = state.outcome
    if outcome is None or not outcome.failed:
        return None
    return outcome.exception()


def _transient_retry_hook(
    generation: Generation, policy: RetryPolicy
) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        error = _failure(state)
        assert error is not None  # tenacity only sleeps after a failed attempt
        wait = float(state.upcoming_sleep)
        attempt = generation.transient_failed(error, wait)
        policy.report(
            RetryDetails("transient", attempt.number, error, wait, None, attempt.request_id)
        )

    return before_sleep


def _transient_loop(
    generation: Generation, policy: RetryPolicy, sleep: Callable[[float], None]
) -> Retrying:
    """The controller of the transient loop: which failures are retried, how often, how long."""
    return Retrying(
        retry=retry_if_exception(is_transient),
        stop=stop_after_attempt(policy.max_retries + 1),
        wait=policy.wait,
        sleep=sleep,
        before_sleep=_transient_retry_hook(generation, policy),
        reraise=True,
    )


async def _aretry_transient(
    generation: Generation,
    policy: RetryPolicy,
    send: Callable[[dict[str, Any]], Awaitable[T]],
    replay: list[BaseException],
) -> T:
    """The transient loop of an async run; ``replay`` holds a failure already seen, if any.

    Tenacity's synchronous controller decides every retry and wait through its documented
    ``for attempt in`` protocol; its ``sleep`` only notes the wait, which is awaited here
    before the next attempt. ``AsyncRetrying`` makes the same decisions at several times the
    CPU cost per attempt (it checks every callback for being a coroutine function on every
    step), which thousands of concurrent conversations meeting a 529 pay in throughput.
    """
    waits: list[float] = []
    for attempt in _transient_loop(generation, policy, waits.append):
        if waits:
            await policy._async_sleep(waits.pop())
        with attempt:
            if replay:
                raise replay.pop()
            result = await send(generation.request())
    return result


def _report_processor_retry(generation: Generation, policy: RetryPolicy) -> None:
    attempt = generation.attempts[-1]
    assert attempt.error is not None
    policy.report(
        RetryDetails(
            "processor", attempt.number, attempt.error, 0.0, attempt.retried_by, attempt.request_id
        )
    )


def call_with_retries(
    generation: Generation, policy: RetryPolicy, send: Callable[[dict[str, Any]], T]
) -> T:
    """Send the generation's request until it succeeds or neither loop retries.

    On give-up the original exception object is raised unchanged.

    The loops are entered only as far as they are needed: building and driving tenacity's
    controllers costs more than the rest of the library's work per request. The first request
    is sent before any controller exists (most succeed); if it fails, the loops take over as
    :func:`resume_with_retries` describes.
    """
    try:
        return send(generation.request())
    except BaseException as error:  # everything tenacity would catch goes on to the loops
        failure = error
    return resume_with_retries(generation, policy, send, failure)


def resume_with_retries(
    generation: Generation,
    policy: RetryPolicy,
    send: Callable[[dict[str, Any]], T],
    failure: BaseException,
) -> T:
    """Carry on a generation whose first request, sent without the loops, failed with ``failure``.

    If the failure is transient, the transient loop takes over with it as its first attempt (a
    529 that succeeds on the retry never builds the processor loop); otherwise, or if the
    transient loop gives up, the processor loop takes over with the error as the outcome of its
    first attempt. Every hook, wait, record and decision is the same as if the loops had made
    the first request themselves. ``generation`` must have no attempts yet: it is the state the
    first request was built from (:meth:`Pipeline.begin`, or a generation made after
    :meth:`Pipeline.run_appending_hooks`).
    """
    replay: list[BaseException] = []  # an outcome already seen, given to a loop as an attempt's

    def send_once() -> T:
        if replay:
            raise replay.pop()
        return send(generation.request())

    transient = _transient_loop(generation, policy, policy._sync_sleep)
    if is_transient(failure):  # else the transient loop would re-raise it at once
        replay.append(failure)
        try:
            return transient(send_once)
        except BaseException as error:
            failure = error

    def should_retry(state: RetryCallState) -> bool:
        error = _failure(state)
        if error is None or not run_sync(generation.failed(error)):
            return False
        _report_processor_retry(generation, policy)
        return True

    def attempt() -> T:
        if replay:
            raise replay.pop()
        return transient(send_once)

    replay.append(failure)
    processors = Retrying(retry=should_retry, stop=stop_never, wait=wait_none(), reraise=True)
    return processors(attempt)


async def acall_with_retries(
    generation: Generation, policy: RetryPolicy, send: Callable[[dict[str, Any]], Awaitable[T]]
) -> T:
    """The async twin of :func:`call_with_retries`; ``async def`` processors are awaited."""
    try:
        return await send(generation.request())
    except BaseException as error:  # cancellation too: the loops below see it as tenacity would
        failure = error
    return await aresume_with_retries(generation, policy, send, failure)


async def aresume_with_retries(
    generation: Generation,
    policy: RetryPolicy,
    send: Callable[[dict[str, Any]], Awaitable[T]],
    failure: BaseException,
) -> T:
    """The async twin of :func:`resume_with_retries`."""
    replay: list[BaseException] = []
    if is_transient(failure):
        replay.append(failure)
        try:
            return await _aretry_transient(generation, policy, send, replay)
        except BaseException as error:
            failure = error

    async def should_retry(state: RetryCallState) -> bool:
        error = _failure(state)
        if error is None or not await run_async(generation.failed(error)):
            return False
        _report_processor_retry(generation, policy)
        return True

    async def attempt() -> T:
        if replay:
            raise replay.pop()
        return await _aretry_transient(generation, policy, send, replay)

    replay.append(failure)
    processors = AsyncRetrying(retry=should_retry, stop=stop_never, wait=wait_none(), reraise=True)
    return await processors(attempt)
