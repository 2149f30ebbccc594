"""The retry loop of one generation, built on tenacity.

tenacity owns the loop; the decision core (:class:`~prefill_guard.pipeline.Generation`) is its
retry predicate, so the loop itself holds no policy. A controller is built per call and never
shared: tenacity's controllers keep per-call state. tenacity's types stay inside this module.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tenacity import AsyncRetrying, RetryCallState, Retrying, stop_never, wait_none

from .pipeline import Generation, run_async, run_sync

__all__ = ["acall_with_retries", "call_with_retries"]

T = TypeVar("T")


def _failure(state: RetryCallState) -> BaseException | None:
    outcome = state.outcome
    if outcome is None or not outcome.failed:
        return None
    return outcome.exception()


def call_with_retries(generation: Generation, send: Callable[[dict[str, Any]], T]) -> T:
    """Call ``send`` with the generation's request until it succeeds or nobody retries.

    On give-up the original exception object is raised unchanged.
    """

    def should_retry(state: RetryCallState) -> bool:
        error = _failure(state)
        return error is not None and run_sync(generation.failed(error))

    retrying = Retrying(retry=should_retry, stop=stop_never, wait=wait_none(), reraise=True)
    return retrying(lambda: send(generation.request()))


async def acall_with_retries(
    generation: Generation, send: Callable[[dict[str, Any]], Awaitable[T]]
) -> T:
    """The async twin of :func:`call_with_retries`; ``async def`` processors are awaited."""

    async def should_retry(state: RetryCallState) -> bool:
        error = _failure(state)
        return error is not None and await run_async(generation.failed(error))

    async def attempt() -> T:  # a coroutine function, so tenacity awaits it
        return await send(generation.request())

    retrying = AsyncRetrying(retry=should_retry, stop=stop_never, wait=wait_none(), reraise=True)
    return await retrying(attempt)
