"""One run: the decision core and the loop that sends, in the shape of the SDK's own retry loop.

A run is one call of ``Agent.generate`` (or ``agenerate``, a stream, one Messages request
through a guarded client): its conversation, its parameters and every decision about its
requests. :class:`Run` makes the decisions and does no I/O: :meth:`Run.failed` (and its async
twin :meth:`Run.afailed`, which awaits ``async def`` processors) is told that a request failed
and answers how long to wait before sending again, or ``None`` to give up. The drivers are
:func:`send_with_retries` and :func:`asend_with_retries`: one plain loop each, the same text.
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from anthropic import APIError
from anthropic.types import Message

from .contract import ParamsProcessor, ProcessAPIErrorResult, Processor, RequestParams
from .messages import MessageList, Snapshot
from .retries import RetryDetails, RetryPolicy, TransientBudget

__all__ = [
    "AnyProcessor",
    "Attempt",
    "Pipeline",
    "Run",
    "RunResult",
    "asend_with_retries",
    "send_with_retries",
]

logger = logging.getLogger("prefill_guard")

T = TypeVar("T")
AnyProcessor = Processor | ParamsProcessor


@dataclass(frozen=True)
class Attempt:
    """One request of a run and what came of it.

    ``error`` is ``None`` for the attempt that succeeded. ``retry`` says what followed a failed
    attempt: ``"transient"`` (sent again unchanged after ``wait`` seconds), ``"processor"``
    (repaired by the processor ``retried_by``), or ``None`` (the error went to the caller).
    """

    number: int
    error: BaseException | None
    request_id: str | None
    retry: Literal["transient", "processor"] | None = None
    retried_by: str | None = None
    wait: float = 0.0


@dataclass(frozen=True)
class RunResult:
    """The outcome of one run.

    ``messages`` is the conversation afterwards: the input, any hidden reminders and the reply.
    ``attempts`` records every request made and what followed each failed one.
    """

    message: Message
    messages: MessageList
    attempts: tuple[Attempt, ...]

    @property
    def text(self) -> str:
        """The reply's text blocks, joined."""
        return "".join(block.text for block in self.message.content if block.type == "text")

    @property
    def retried_by(self) -> tuple[str, ...]:
        """The ids of the processors that caused retries, in order."""
        return tuple(a.retried_by for a in self.attempts if a.retried_by is not None)


@dataclass(frozen=True)
class _Entry:
    """One registered processor, with what the run needs to know about its hooks."""

    processor: AnyProcessor
    id: str
    takes_params: bool
    is_async: bool
    before_send: Callable[..., object] | None

    def call(
        self, error: APIError, messages: MessageList, retry_count: int, params: RequestParams
    ) -> object:
        kwargs: dict[str, Any] = {"error": error, "messages": messages, "retry_count": retry_count}
        if self.takes_params:
            kwargs["params"] = params
        return self.processor.process_api_error(**kwargs)


def _accepts_params(hook: Callable[..., object]) -> bool:
    try:
        parameters = inspect.signature(hook).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "params" or p.kind is p.VAR_KEYWORD for p in parameters)


def _register(processor: object, where: str) -> _Entry:
    if isinstance(processor, type):
        raise TypeError(
            f"{where}: got the class {processor.__name__}; pass an instance, "
            f"e.g. {processor.__name__}()"
        )
    hook = getattr(processor, "process_api_error", None)
    if not callable(hook):
        raise TypeError(f"{where}: {processor!r} has no process_api_error() method")
    processor_id = getattr(processor, "id", None)
    if not isinstance(processor_id, str) or not processor_id:
        raise TypeError(f"{where}: {processor!r} needs a non-empty str 'id'")
    before_send = getattr(processor, "before_send", None)
    if before_send is not None and (
        not callable(before_send) or inspect.iscoroutinefunction(before_send)
    ):
        raise TypeError(f"{where}: {processor!r} has a before_send that is not a sync function")
    return _Entry(
        processor=processor,  # type: ignore[arg-type]
        id=processor_id,
        takes_params=_accepts_params(hook),
        is_async=inspect.iscoroutinefunction(hook),
        before_send=before_send,
    )


class Pipeline:
    """The ordered processors and the retry cap: validated once, immutable, safe to share."""

    __slots__ = ("_async_ids", "_before_send", "_entries", "max_processor_retries")

    def __init__(
        self, processors: Iterable[AnyProcessor] = (), *, max_processor_retries: int = 3
    ) -> None:
        if isinstance(processors, (str, bytes)) or not isinstance(processors, Iterable):
            raise TypeError(
                f"error_processors must be a list of processors, got {type(processors).__name__}"
            )
        if (
            not isinstance(max_processor_retries, int)
            or isinstance(max_processor_retries, bool)
            or max_processor_retries < 0
        ):
            raise ValueError(
                f"max_processor_retries must be an int >= 0, got {max_processor_retries!r}"
            )
        entries = tuple(_register(p, f"error_processors[{i}]") for i, p in enumerate(processors))
        seen: dict[str, int] = {}
        for index, entry in enumerate(entries):
            if entry.id in seen:
                raise ValueError(
                    f"error_processors[{index}]: duplicate processor id {entry.id!r} "
                    f"(also at error_processors[{seen[entry.id]}])"
                )
            seen[entry.id] = index
        self._entries = entries
        self._async_ids = tuple(entry.id for entry in entries if entry.is_async)
        self._before_send = tuple(
            (entry.id, entry.before_send) for entry in entries if entry.before_send is not None
        )
        self.max_processor_retries = max_processor_retries

    @property
    def processors(self) -> tuple[AnyProcessor, ...]:
        """The registered processors, in the order they run."""
        return tuple(entry.processor for entry in self._entries)

    @property
    def has_async_processor(self) -> bool:
        """Whether some processor has an ``async def process_api_error`` (see require_sync)."""
        return bool(self._async_ids)

    def require_sync(self, caller: str) -> None:
        """Refuse a synchronous run that would have to skip an ``async def`` processor."""
        if self._async_ids:
            raise TypeError(
                f"processor {self._async_ids[0]!r} has an async process_api_error(); {caller} "
                "is synchronous and cannot await it. Use the async twin (agenerate/astream) "
                "or register a synchronous processor."
            )


class Run:
    """One run's conversation, parameters and decisions; free of I/O, made per call.

    ``messages`` is the run's conversation (changed in place by processors), ``params`` its own
    deep copy of the request parameters. On construction the processors' ``before_send``
    hooks prepare the first request: a hook may append messages and set parameters, and one
    that raises is logged and skipped, what it appended dropped and the parameters put back.
    ``consults`` is the kind of error the processors are asked about (the guarded client asks
    them about error responses only: transport errors are the SDK's to retry).
    """

    def __init__(
        self,
        pipeline: Pipeline,
        policy: RetryPolicy,
        messages: MessageList,
        params: RequestParams,
        *,
        consults: type[APIError] = APIError,
    ) -> None:
        self.messages = messages
        self.params: RequestParams = copy.deepcopy(params)
        self._pipeline = pipeline
        self._policy = policy
        self._consults = consults
        self._attempts: list[Attempt] = []
        self._retry_counts = [0] * len(pipeline._entries)
        self._processor_retries = 0
        self._budget: TransientBudget | None = None  # made by the first transient failure
        for owner, hook in pipeline._before_send:
            self._prepare(owner, hook)

    @property
    def attempts(self) -> tuple[Attempt, ...]:
        """The attempts so far, in order."""
        return tuple(self._attempts)

    @property
    def policy(self) -> RetryPolicy:
        """The transient retry settings, and how the drivers sleep."""
        return self._policy

    def request(self) -> dict[str, Any]:
        """The next attempt's request, rebuilt from the conversation (hidden metadata removed)."""
        return {**self.params, "messages": self.messages.to_api()}

    def succeeded(self, message: Message, request_id: str | None = None) -> RunResult:
        """Record the successful attempt, append the reply to the conversation, sum it up.

        A reply with no content (or only whitespace text) is not appended: such an assistant
        turn would make every later request of the conversation fail with a 400.
        ``request_id`` defaults to the one the SDK set on ``message``.
        """
        if request_id is None:
            request_id = getattr(message, "_request_id", None)
        self._attempts.append(Attempt(len(self._attempts) + 1, None, request_id))
        if any(block.type != "text" or block.text.strip() for block in message.content):
            self.messages.append(message)
        else:
            logger.warning("the reply (request id %s) has no content; not stored", request_id)
        return RunResult(message, self.messages, tuple(self._attempts))

    def failed(self, error: BaseException) -> float | None:
        """After ``error``: the seconds to wait before sending again, or ``None`` to give up.

        A transient error is sent again unchanged while the transient budget lasts; otherwise
        the processors are asked in order, and the first that asks to retry wins and keeps its
        changes (only it: the others' changes are undone). A processor that raises is logged
        and skipped.
        """
        wait = self._transient(error)
        if wait is not None:
            return wait
        if not isinstance(error, self._consults) or not self._below_cap(error):
            return self._give_up(error)
        saved = self._save()
        for index, entry in enumerate(self._pipeline._entries):
            try:
                result = entry.call(error, self.messages, self._retry_counts[index], self.params)
                if inspect.isawaitable(result):
                    _close(result)
                    raise _AwaitableInSyncRun(entry.id)
            except _AwaitableInSyncRun as refused:
                self._undo(saved)
                raise refused.as_type_error() from None
            except Exception:
                self._skip(entry.id, error, saved)
                continue
            except BaseException:  # cancelled or interrupted mid-processor: undo, then let it go
                self._undo(saved)
                raise
            if self._won(index, entry.id, result, error, saved):
                return 0.0
        return self._give_up(error)

    async def afailed(self, error: BaseException) -> float | None:
        """The async twin of :meth:`failed`: ``async def`` processors are awaited."""
        wait = self._transient(error)
        if wait is not None:
            return wait
        if not isinstance(error, self._consults) or not self._below_cap(error):
            return self._give_up(error)
        saved = self._save()
        for index, entry in enumerate(self._pipeline._entries):
            try:
                result = entry.call(error, self.messages, self._retry_counts[index], self.params)
                if inspect.isawaitable(result):
                    result = await result
            except Exception:
                self._skip(entry.id, error, saved)
                continue
            except BaseException:  # cancelled or interrupted mid-processor: undo, then let it go
                self._undo(saved)
                raise
            if self._won(index, entry.id, result, error, saved):
                return 0.0
        return self._give_up(error)

    # -- the parts of a decision ---------------------------------------------------------------

    def _prepare(self, owner: str, hook: Callable[..., object]) -> None:
        length, params = len(self.messages), dict(self.params)
        try:
            hook(messages=self.messages, params=self.params)
        except Exception:
            logger.exception("processor %r raised in before_send; skipped", owner)
            del self.messages[length:]
            self.params.clear()
            self.params.update(params)

    def _transient(self, error: BaseException) -> float | None:
        if self._budget is None:
            self._budget = self._policy.new_budget()
        wait = self._policy.transient_wait(self._budget, error)
        if wait is not None:
            attempt = self._record(error, "transient", wait=wait)
            self._policy.report(
                RetryDetails("transient", attempt.number, error, wait, None, attempt.request_id)
            )
        return wait

    def _below_cap(self, error: APIError) -> bool:
        if self._processor_retries < self._pipeline.max_processor_retries:
            return True
        logger.info(
            "not consulting processors for %s: max_processor_retries=%d reached",
            type(error).__name__,
            self._pipeline.max_processor_retries,
        )
        return False

    def _save(self) -> tuple[Snapshot, RequestParams]:
        """The conversation and parameters as they are, once per failure, for :meth:`_undo`."""
        return self.messages.snapshot(), copy.deepcopy(self.params)

    def _won(
        self,
        index: int,
        owner: str,
        result: object,
        error: BaseException,
        saved: tuple[Snapshot, RequestParams],
    ) -> bool:
        if isinstance(result, ProcessAPIErrorResult) and result.retry:
            self._retry_counts[index] += 1
            self._processor_retries += 1
            self._budget = None  # each repair gets a fresh transient budget
            attempt = self._record(error, "processor", retried_by=owner)
            self._policy.report(
                RetryDetails("processor", attempt.number, error, 0.0, owner, attempt.request_id)
            )
            return True
        if result is not None and not isinstance(result, ProcessAPIErrorResult):
            logger.error(
                "processor %r returned a %s; expected ProcessAPIErrorResult or None; ignored",
                owner,
                type(result).__name__,
            )
        self._undo(saved)  # only the processor that wins keeps its changes
        return False

    def _skip(
        self, owner: str, error: BaseException, saved: tuple[Snapshot, RequestParams]
    ) -> None:
        logger.exception(
            "processor %r raised while handling %s; skipped", owner, type(error).__name__
        )
        self._undo(saved)

    def _undo(self, saved: tuple[Snapshot, RequestParams]) -> None:
        """Put back what a processor that did not win changed (only that: the save stays)."""
        snapshot, params = saved
        self.messages.restore(snapshot)
        if self.params != params:
            self.params.clear()
            self.params.update(copy.deepcopy(params))

    def _give_up(self, error: BaseException) -> float | None:
        self._record(error, None)
        return None

    def _record(
        self,
        error: BaseException,
        retry: Literal["transient", "processor"] | None,
        *,
        retried_by: str | None = None,
        wait: float = 0.0,
    ) -> Attempt:
        attempt = Attempt(
            len(self._attempts) + 1,
            error,
            getattr(error, "request_id", None),
            retry=retry,
            retried_by=retried_by,
            wait=wait,
        )
        self._attempts.append(attempt)
        return attempt


class _AwaitableInSyncRun(Exception):
    """A processor's hook returned an awaitable in a synchronous run."""

    def __init__(self, owner: str) -> None:
        super().__init__(owner)
        self.owner = owner

    def as_type_error(self) -> TypeError:
        return TypeError(
            f"processor {self.owner!r} returned an awaitable in a synchronous run; "
            "use the async twin (agenerate/astream) for async processors"
        )


def _close(awaitable: object) -> None:
    if inspect.iscoroutine(awaitable):
        awaitable.close()


def send_with_retries(run: Run, send: Callable[[dict[str, Any]], T]) -> T:
    """Send the run's request until it succeeds or nothing retries; then the error is raised.

    ``send`` makes one attempt from a request (the SDK's own errors propagate from it). When
    neither a transient retry nor a processor answers a failure, the caller gets that very
    exception object. The SDK's retry loop has the same shape.
    """
    while True:
        try:
            return send(run.request())
        except Exception as error:
            wait = run.failed(error)
            if wait is None:
                raise
        if wait:
            run.policy.sleep_sync(wait)


async def asend_with_retries(run: Run, send: Callable[[dict[str, Any]], Awaitable[T]]) -> T:
    """The async twin of :func:`send_with_retries`; ``async def`` processors are awaited."""
    while True:
        try:
            return await send(run.request())
        except Exception as error:
            wait = await run.afailed(error)
            if wait is None:
                raise
        if wait:
            await run.policy.sleep_async(wait)
