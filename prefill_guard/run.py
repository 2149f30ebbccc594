"""A run of steps, the decision core of one step, and the loops that send, in the SDK's shape.

A *run* is one call of ``Agent.generate`` (or ``agenerate``, a stream): one conversation, its
parameters and a ``state`` dict, over one or more *steps*. A step is one model call, with its
retries (its *attempts*); between steps the Agent runs the tools the reply asked for. One
Messages request through a guarded client is a run of one step.

:class:`Step` makes the decisions of one model call and does no I/O: :meth:`Step.failed` (and
its async twin :meth:`Step.afailed`, which awaits ``async def`` processors) is told that a
request failed and answers how long to wait before sending again, or ``None`` to give up.
:func:`send_with_retries` and :func:`asend_with_retries` send one step: one plain loop each,
the same text. :func:`run_steps` and :func:`arun_steps` go from step to step.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from anthropic import APIError
from anthropic.types import Message, ToolUseBlock

from .contract import (
    Abort,
    ContextProcessor,
    ParamsProcessor,
    ProcessAPIErrorResult,
    Processor,
    RawMessage,
    RequestParams,
)
from .messages import MessageList, Snapshot
from .retries import RetryDetails, RetryPolicy, TransientBudget
from .telemetry import RunTrace, record_attempts, record_event
from .tools import Toolbox, ToolCall

__all__ = [
    "AnyProcessor",
    "Attempt",
    "Pipeline",
    "Run",
    "RunResult",
    "Step",
    "StepResult",
    "all_calls",
    "arun_steps",
    "asend_with_retries",
    "run_steps",
    "send_with_retries",
]

logger = logging.getLogger("prefill_guard")

T = TypeVar("T")
AnyProcessor = Processor | ParamsProcessor | ContextProcessor


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
class StepResult:
    """One completed step: the reply, the tool calls the Agent answered, the attempts."""

    number: int
    message: Message
    tool_calls: tuple[ToolCall, ...]
    attempts: tuple[Attempt, ...]


RunStopReason = Literal[
    "end_turn",
    "tool_use",
    "max_tokens",
    "stop_sequence",
    "pause_turn",
    "refusal",
    "max_steps",
    "aborted",
]


@dataclass(frozen=True)
class RunResult:
    """The outcome of one run.

    ``message`` is the final reply, ``messages`` the conversation afterwards (the input, any
    hidden reminders, every reply and tool result). ``steps`` has one record per model call.
    ``stop_reason`` is the final reply's (``end_turn``; ``tool_use`` for a tool the caller
    must answer), or ``max_steps`` when the run stopped at the step bound with tool calls
    answered but no reply after them, or ``aborted`` (on :attr:`Abort.result`). ``state`` is
    the dict the run's processors shared, as they left it.
    """

    message: Message
    messages: MessageList
    steps: tuple[StepResult, ...]
    stop_reason: str
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The final reply's text blocks, joined."""
        return "".join(block.text for block in self.message.content if block.type == "text")

    @property
    def attempts(self) -> tuple[Attempt, ...]:
        """Every request of the run, step after step, numbered within each step."""
        return tuple(attempt for step in self.steps for attempt in step.attempts)

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        """Every tool call the Agent answered, in order."""
        return tuple(call for step in self.steps for call in step.tool_calls)

    @property
    def retried_by(self) -> tuple[str, ...]:
        """The ids of the processors that caused retries, in order."""
        return tuple(a.retried_by for a in self.attempts if a.retried_by is not None)


_CONTEXT = ("params", "step", "steps", "state")
"""What a processor's hook gets when its signature declares it by name."""


@dataclass(frozen=True)
class _Entry:
    """One registered processor, with what the run needs to know about its hooks."""

    processor: AnyProcessor
    id: str
    takes: frozenset[str]
    is_async: bool
    before_send: Callable[..., object] | None
    before_send_takes: frozenset[str]


def _declared(hook: Callable[..., object]) -> frozenset[str]:
    """Which of the optional context arguments (:data:`_CONTEXT`) ``hook`` declares by name; a
    hook that takes ``**kwargs`` gets ``params`` (as it always has), the rest only by name."""
    try:
        parameters = inspect.signature(hook).parameters.values()
    except (TypeError, ValueError):
        return frozenset()
    named = {p.name for p in parameters if p.name in _CONTEXT}
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        named.add("params")
    return frozenset(named)


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
        takes=_declared(hook),
        is_async=inspect.iscoroutinefunction(hook),
        before_send=before_send,
        before_send_takes=_declared(before_send) if before_send is not None else frozenset(),
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
        self._before_send = tuple(entry for entry in entries if entry.before_send is not None)
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


class Step:
    """One model call's decisions, over its run's conversation and parameters; free of I/O.

    ``messages`` and ``params`` are the run's, changed in place by processors: a repair made in
    one step holds for the rest of the run. On construction the processors' ``before_send``
    hooks prepare the step's first request: a hook may append messages and set parameters, and
    one that raises is logged and skipped, what it appended dropped and the parameters put
    back. ``consults`` is the kind of error the processors are asked about (the guarded client
    asks them about error responses only: transport errors are the SDK's to retry).
    ``captures_content`` puts the messages about to be sent on the retry and repair events.
    Per-step: the attempts, each processor's ``retry_count``, the cap, the transient budget.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        policy: RetryPolicy,
        messages: MessageList,
        params: RequestParams,
        *,
        number: int = 0,
        steps: tuple[StepResult, ...] = (),
        state: dict[str, Any] | None = None,
        consults: type[APIError] = APIError,
        captures_content: bool = False,
    ) -> None:
        self.messages = messages
        self.params = params
        self.number = number
        self._context: dict[str, Any] = {
            "params": params,
            "step": number,
            "steps": steps,
            "state": {} if state is None else state,
        }
        self._pipeline = pipeline
        self._policy = policy
        self._consults = consults
        self._captures_content = captures_content
        self._sent = 0
        self.hands_back = False
        """Set when the step's last response goes back to the SDK, which retries it itself
        (the guarded client): the model call is not over, so its attempts are not recorded."""
        self.stored_reply: RawMessage | None = None
        """The reply as the conversation holds it, once :meth:`succeeded` appended it."""
        self._attempts: list[Attempt] = []
        self._retry_counts = [0] * len(pipeline._entries)
        self._processor_retries = 0
        self._budget: TransientBudget | None = None  # made by the first transient failure
        for entry in pipeline._before_send:
            self._prepare(entry)

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
        self._sent += 1
        return {**self.params, "messages": self.messages.to_api()}

    def report_attempts(self, error: BaseException | None) -> None:
        """Record how many requests the step sent, and the error that ended it, if one did
        (the ``prefill_guard.attempts`` histogram)."""
        if not self.hands_back:
            record_attempts(self._sent, str(self.params.get("model")), error)

    def succeeded(self, message: Message, request_id: str | None = None) -> None:
        """Record the successful attempt and append the reply to the conversation.

        A reply with no content (or only whitespace text) is not appended: such an assistant
        turn would make every later request of the conversation fail with a 400.
        ``request_id`` defaults to the one the SDK set on ``message``.
        """
        if request_id is None:
            request_id = getattr(message, "_request_id", None)
        self._attempts.append(Attempt(len(self._attempts) + 1, None, request_id))
        if any(block.type != "text" or block.text.strip() for block in message.content):
            self.messages.append(message)
            self.stored_reply = self.messages[-1]
        else:
            logger.warning("the reply (request id %s) has no content; not stored", request_id)

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
                result = self._call(entry, index, error)
                if inspect.isawaitable(result):
                    _close(result)
                    raise _AwaitableInSyncRun(entry.id)
            except _AwaitableInSyncRun as refused:
                self._undo(saved)
                raise refused.as_type_error() from None
            except Abort:
                self._undo(saved)
                raise
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
                result = self._call(entry, index, error)
                if inspect.isawaitable(result):
                    result = await result
            except Abort:
                self._undo(saved)
                raise
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

    def _call(self, entry: _Entry, index: int, error: APIError) -> object:
        context = {name: self._context[name] for name in entry.takes}
        return entry.processor.process_api_error(
            error=error, messages=self.messages, retry_count=self._retry_counts[index], **context
        )

    def _prepare(self, entry: _Entry) -> None:
        assert entry.before_send is not None
        messages, params = list(self.messages), dict(self.params)
        context = {name: self._context[name] for name in entry.before_send_takes}
        context["params"] = self.params  # every before_send gets them
        try:
            entry.before_send(messages=self.messages, **context)
            content = self.messages.to_api() if self._captures_content else None
            _log_repair(entry.id, messages, list(self.messages), params, self.params, content)
        except BaseException as error:
            # the messages as they were, the same objects: what the hook appended, inserted,
            # replaced or removed is undone (an edit inside a message dict is not)
            self.messages.restore(Snapshot(messages, messages))
            self.params.clear()
            self.params.update(params)
            if not isinstance(error, Exception) or isinstance(error, Abort):
                raise
            logger.exception("processor %r raised in before_send; skipped", entry.id)

    def _transient(self, error: BaseException) -> float | None:
        if self._budget is None:
            self._budget = self._policy.new_budget()
        wait = self._policy.transient_wait(self._budget, error)
        if wait is not None:
            attempt = self._record(error, "transient", wait=wait)
            self._policy.report(
                RetryDetails("transient", attempt.number, error, wait, None, attempt.request_id),
                model=self.params.get("model"),
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
                RetryDetails("processor", attempt.number, error, 0.0, owner, attempt.request_id),
                model=self.params.get("model"),
                content=self.messages.to_api() if self._captures_content else None,
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


def send_with_retries(step: Step, send: Callable[[dict[str, Any]], T]) -> T:
    """Send the step's request until it succeeds or nothing retries; then the error is raised.

    ``send`` makes one attempt from a request (the SDK's own errors propagate from it). When
    neither a transient retry nor a processor answers a failure, the caller gets that very
    exception object. The SDK's retry loop has the same shape. However it ends, the number of
    requests it sent is recorded, with what ended it (:meth:`Step.report_attempts`).
    """
    ended_by: BaseException | None = None
    try:
        while True:
            try:
                return send(step.request())
            except Exception as error:
                wait = step.failed(error)
                if wait is None:
                    raise
            if wait:
                step.policy.sleep_sync(wait)
    except BaseException as error:
        ended_by = error
        raise
    finally:
        step.report_attempts(ended_by)


async def asend_with_retries(step: Step, send: Callable[[dict[str, Any]], Awaitable[T]]) -> T:
    """The async twin of :func:`send_with_retries`; ``async def`` processors are awaited."""
    ended_by: BaseException | None = None
    try:
        while True:
            try:
                return await send(step.request())
            except Exception as error:
                wait = await step.afailed(error)
                if wait is None:
                    raise
            if wait:
                await step.policy.sleep_async(wait)
    except BaseException as error:
        ended_by = error
        raise
    finally:
        step.report_attempts(ended_by)


class Run:
    """One run: the conversation, the run's own deep copy of the parameters, a ``state`` dict
    shared by every processor, the steps so far, and the tools the replies may call.

    The loops (:func:`run_steps`, :func:`arun_steps`) make a :class:`Step` per model call with
    :meth:`next_step`, and report each reply with :meth:`step_done`. They call ``on_step``
    after each completed step (a thread saves it), and in async code ``aon_step``, its twin
    (by default ``on_step`` in a worker thread);
    ``max_steps`` bounds the model calls. ``trace`` makes the run's OpenTelemetry spans.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        policy: RetryPolicy,
        messages: MessageList,
        params: RequestParams,
        *,
        toolbox: Toolbox | None = None,
        max_steps: int = 1,
        on_step: Callable[[], None] | None = None,
        aon_step: Callable[[], Awaitable[None]] | None = None,
        trace: RunTrace | None = None,
    ) -> None:
        self.messages = messages
        self.params: RequestParams = copy.deepcopy(params)
        self.state: dict[str, Any] = {}
        self.toolbox = toolbox if toolbox is not None else Toolbox()
        self.on_step = on_step
        self.aon_step = aon_step
        self.trace = trace if trace is not None else RunTrace.off()
        if aon_step is None and on_step is not None:  # a store may block: off the event loop
            self.aon_step = functools.partial(asyncio.to_thread, on_step)
        self._pipeline = pipeline
        self._policy = policy
        self._max_steps = max_steps
        self._steps: list[StepResult] = []
        self._stop_reason: str | None = None
        self._current: Step | None = None
        """The step under way: made, and not yet done."""

    @property
    def steps(self) -> tuple[StepResult, ...]:
        """The completed steps, in order."""
        return tuple(self._steps)

    @property
    def finished(self) -> bool:
        """Whether the last reply ended the run (no tool call to answer, or the step bound)."""
        return self._stop_reason is not None

    def next_step(self) -> Step:
        """The next model call's decision core (its ``before_send`` hooks have run)."""
        self._current = Step(
            self._pipeline,
            self._policy,
            self.messages,
            self.params,
            number=len(self._steps),
            steps=self.steps,
            state=self.state,
            captures_content=self.trace.captures_content,
        )
        return self._current

    def tool_uses(self, message: Message) -> list[ToolUseBlock]:
        """The reply's tool calls the Agent answers before the next step; none when the reply
        ends the run (it calls no tool, or one the caller must answer)."""
        return self.toolbox.calls(message) or []

    def call(self, use: ToolUseBlock) -> ToolCall:
        """Run one tool call (:meth:`Toolbox.call`), in its ``execute_tool`` span."""
        with self.trace.tool(use) as answered:
            call = self.toolbox.call(use)
            answered(call.is_error)
        return call

    async def acall(self, use: ToolUseBlock) -> ToolCall:
        """The async twin of :meth:`call`."""
        with self.trace.tool(use) as answered:
            call = await self.toolbox.acall(use)
            answered(call.is_error)
        return call

    def step_done(self, step: Step, message: Message, calls: list[ToolCall]) -> None:
        """Record a completed step: its reply (appended by the step) and the tool calls it
        answered, whose results go into the conversation as the next user turn."""
        if calls:
            self.messages.append({"role": "user", "content": [call.result for call in calls]})
        self._current = None
        self._steps.append(StepResult(step.number, message, tuple(calls), step.attempts))
        if not calls:
            self._stop_reason = message.stop_reason or "end_turn"
        elif len(self._steps) >= self._max_steps:
            self._stop_reason = "max_steps"

    def result(self) -> RunResult:
        """The finished run's result."""
        assert self._stop_reason is not None
        self.trace.finished(self._stop_reason, len(self._steps))
        return RunResult(
            self._steps[-1].message, self.messages, self.steps, self._stop_reason, self.state
        )

    def unanswered(self) -> None:
        """Take out the step's reply if its tool calls were not all answered (a tool's Abort,
        an interrupt, a cancellation, a stream left before its tools ran): no ``tool_use``
        is left without its result, so the conversation can be sent again. The reply is found
        by identity, wherever processors moved it; nothing else is touched."""
        reply = None if self._current is None else self._current.stored_reply
        if reply is None or self.finished:
            return
        for index in range(len(self.messages) - 1, -1, -1):
            if self.messages[index] is reply:
                del self.messages[index]
                return

    def aborted(self, abort: Abort) -> Abort:
        """``abort``, with what the run completed before it on ``abort.result`` (a reply
        whose tools did not all run is taken out first: :meth:`unanswered`)."""
        self.unanswered()
        if self._steps:
            last = self._steps[-1].message
            abort.result = RunResult(last, self.messages, self.steps, "aborted", self.state)
        return abort


def _log_repair(
    owner: str,
    messages_before: list[RawMessage],
    messages_after: list[RawMessage],
    before: RequestParams,
    after: RequestParams,
    content: Sequence[Mapping[str, Any]] | None = None,
) -> None:
    """Log what a ``before_send`` hook changed at INFO, the fields in ``extra``: the number of
    messages before and after it if it appended, inserted, replaced or removed any (a message
    replaced by an equal one is no change), and the names of the parameters it set or
    removed; never their contents. The same is an event on the current span, with
    ``content`` (the messages to be sent, when content capture is on)."""
    if messages_after == messages_before and after == before:
        return
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    fields = {
        "prefill_guard.event": "prefill_guard.repair",
        "prefill_guard.processor.id": owner,
        "prefill_guard.repair.messages_before": len(messages_before),
        "prefill_guard.repair.messages_after": len(messages_after),
        "prefill_guard.repair.params": changed,
    }
    logger.info(
        "processor %r changed the request before sending: messages %d -> %d, parameters %s",
        owner,
        len(messages_before),
        len(messages_after),
        changed or "unchanged",
        extra=fields,
    )
    record_event("prefill_guard.repair", fields, content)


def run_steps(run: Run, send: Callable[[dict[str, Any]], Message]) -> RunResult:
    """Step after step: a model call (:func:`send_with_retries`), then the tools its reply
    asks for, until a reply asks for none the Agent answers, the step bound, or an Abort.
    The run's span is current throughout."""
    with run.trace.whole():
        send = run.trace.sender(send)
        try:
            while True:
                step = run.next_step()
                message = send_with_retries(step, send)
                step.succeeded(message)
                calls = [run.call(use) for use in run.tool_uses(message)]
                run.step_done(step, message, calls)
                if run.on_step is not None:
                    run.on_step()
                if run.finished:
                    return run.result()
        except Abort as abort:
            raise run.aborted(abort) from None
        except BaseException:
            run.unanswered()
            raise


async def arun_steps(run: Run, send: Callable[[dict[str, Any]], Awaitable[Message]]) -> RunResult:
    """The async twin of :func:`run_steps`: the tool calls of one reply run at the same time."""
    with run.trace.whole():
        send = run.trace.async_sender(send)
        try:
            while True:
                step = run.next_step()
                message = await asend_with_retries(step, send)
                step.succeeded(message)
                calls = await all_calls([run.acall(use) for use in run.tool_uses(message)])
                run.step_done(step, message, calls)
                if run.aon_step is not None:
                    await run.aon_step()
                if run.finished:
                    return run.result()
        except Abort as abort:
            raise run.aborted(abort) from None
        except BaseException:
            run.unanswered()
            raise


async def all_calls(calls: list[Awaitable[ToolCall]]) -> list[ToolCall]:
    """Await the calls at the same time; if one raises, the others are cancelled first."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
