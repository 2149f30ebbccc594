"""The decision core: which processor runs, the per-processor counts, the cap, the next request.

Everything here is free of I/O. A :class:`Generation` is told "this attempt failed with E" and
answers, through :meth:`Generation.failed`, whether to retry. That method is a generator which
*yields* each processor call instead of making it, so one piece of code serves the synchronous
driver (:func:`run_sync`) and the asynchronous one (:func:`run_async`), and they cannot drift.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

from anthropic import APIError
from anthropic.types import Message

from .messages import MessageList, RawMessage, Snapshot, deep_copy
from .processors import (
    _APPENDS_ONLY,
    _CHANGES_ONLY_ON_RETRY,
    _ONLY_ON_PREFILL,
    ParamsProcessor,
    ProcessAPIErrorResult,
    Processor,
    RequestParams,
)
from .processors import appends_only as appends_only  # where it was first documented

__all__ = [
    "Attempt",
    "Generation",
    "Pipeline",
    "RunResult",
    "finish_run",
    "run_async",
    "run_sync",
]

logger = logging.getLogger("prefill_guard")

T = TypeVar("T")
AnyProcessor = Processor | ParamsProcessor


@dataclass(frozen=True, init=False)
class Attempt:
    """One request of a generation and what came of it.

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

    def __init__(
        self,
        number: int,
        error: BaseException | None,
        request_id: str | None,
        retry: Literal["transient", "processor"] | None = None,
        retried_by: str | None = None,
        wait: float = 0.0,
    ) -> None:
        # Every request makes one of these; the generated frozen __init__ calls
        # object.__setattr__ once per field, which takes twice as long as filling __dict__.
        fields = self.__dict__
        fields["number"] = number
        fields["error"] = error
        fields["request_id"] = request_id
        fields["retry"] = retry
        fields["retried_by"] = retried_by
        fields["wait"] = wait


@dataclass(frozen=True, init=False)
class RunResult:
    """The outcome of one generation.

    ``messages`` is the conversation afterwards: the input, any hidden reminders and the reply.
    ``attempts`` records every request made and what followed each failed one.
    """

    message: Message
    messages: MessageList
    attempts: tuple[Attempt, ...]

    def __init__(
        self, message: Message, messages: MessageList, attempts: tuple[Attempt, ...]
    ) -> None:
        fields = self.__dict__  # as Attempt's: one per request
        fields["message"] = message
        fields["messages"] = messages
        fields["attempts"] = attempts

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
    processor: AnyProcessor
    id: str
    takes_params: bool
    is_async: bool
    before_send: Callable[..., object] | None
    before_send_appends_only: bool
    before_send_only_on_prefill: bool
    changes_only_on_retry: bool


@dataclass(frozen=True)
class Step:
    """One processor call that the core asks its driver to make."""

    processor_id: str
    hook: Callable[..., object]
    kwargs: dict[str, Any]

    def __call__(self) -> object:
        return self.hook(**self.kwargs)


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
        before_send_appends_only=getattr(before_send, "__func__", before_send) in _APPENDS_ONLY,
        before_send_only_on_prefill=getattr(before_send, "__func__", before_send)
        in _ONLY_ON_PREFILL,
        changes_only_on_retry=getattr(hook, "__func__", hook) in _CHANGES_ONLY_ON_RETRY,
    )


def _is_prefill(conversation: list[RawMessage]) -> bool:
    """Whether a request over ``conversation`` is a prefill: it ends with an assistant turn."""
    return bool(conversation) and conversation[-1]["role"] == "assistant"


class Pipeline:
    """The ordered processors and the retry cap: validated once, immutable, safe to share."""

    __slots__ = (
        "_async_entry",
        "_before_send",
        "_entries",
        "appends_only_before_send",
        "before_send_only_on_prefill",
        "has_async_processor",
        "max_processor_retries",
    )

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
        self.max_processor_retries = max_processor_retries
        # Looked up on every request, so worked out once here.
        self._before_send = tuple(
            (
                entry.id,
                entry.before_send,
                entry.before_send_appends_only,
                entry.before_send_only_on_prefill,
            )
            for entry in entries
            if entry.before_send is not None
        )
        self._async_entry = next((entry for entry in entries if entry.is_async), None)
        self.has_async_processor = self._async_entry is not None
        """Whether some processor has an ``async def process_api_error`` (see require_sync)."""
        self.appends_only_before_send = all(flag for _, _, flag, _ in self._before_send)
        """Whether every ``before_send`` hook is marked :func:`appends_only` (or there is none):
        then no hook can change a message, and a borrowed conversation stays unchanged."""
        self.before_send_only_on_prefill = all(flag for _, _, _, flag in self._before_send)
        """Whether every ``before_send`` hook is marked :func:`only_on_prefill` (or there is
        none): then a conversation that does not end with an assistant turn calls no hook."""

    @property
    def processors(self) -> tuple[AnyProcessor, ...]:
        """The registered processors, in the order they run."""
        return tuple(entry.processor for entry in self._entries)

    def require_sync(self, caller: str) -> None:
        """Refuse a synchronous run that would have to skip an ``async def`` processor."""
        entry = self._async_entry
        if entry is not None:
            raise TypeError(
                f"processor {entry.id!r} has an async process_api_error(); {caller} is "
                "synchronous and cannot await it. Use the async twin (agenerate/astream) "
                "or register a synchronous processor."
            )

    def begin(
        self, messages: MessageList, params: RequestParams, *, borrowed: bool = False
    ) -> Generation:
        """Start one generation over ``messages`` with request ``params``.

        Processors with an optional ``before_send(*, messages, params)`` hook (such as the
        adaptive prefill guard) may prepare the request before its first attempt. A hook that
        raises is logged and skipped, and what it changed is undone. A hook marked
        :func:`~prefill_guard.processors.only_on_prefill` is called only when the conversation
        ends with an assistant turn.

        ``params`` is the generation's own dict, but the values in it may be shared with the
        caller: they are deep-copied before any code that may change them runs (a processor,
        or a ``before_send`` hook not marked :func:`appends_only`), so that the happy path
        copies nothing. ``borrowed`` says the same of the message dicts in ``messages``.
        """
        generation = Generation(self, messages, params, borrowed=borrowed)
        if self.appends_only_before_send:
            self.run_appending_hooks(messages, params)
        else:  # each hook on the generation's own copies, saved first so it can be undone
            for processor_id, hook, _, on_prefill in self._before_send:
                if not on_prefill or _is_prefill(generation.messages._messages):
                    generation.run_before_send(processor_id, hook)
        return generation

    def run_appending_hooks(self, messages: MessageList, params: RequestParams) -> bool:
        """Run the ``before_send`` hooks of a pipeline whose hooks all only append (see
        :attr:`appends_only_before_send`); whether any of them appended a message.

        This is :meth:`begin` without the :class:`Generation`, for a driver that needs one only
        once a request has failed (the Agent's ``generate`` and ``agenerate``, the middleware),
        since most requests succeed. A generation made afterwards over the same ``messages``
        and ``params`` starts where :meth:`begin` would have left it. Undoing an append-only
        hook that raises is dropping what it appended, so nothing is copied.
        """
        if not self.appends_only_before_send:
            raise TypeError(
                "run_appending_hooks() needs before_send hooks that are all marked "
                "appends_only; use begin(), which can undo any change"
            )
        conversation = messages._messages  # MessageList.__len__ is a Python call
        length = start = len(conversation)
        for processor_id, hook, _, on_prefill in self._before_send:
            # _is_prefill, inline: this runs before every request
            if on_prefill and not (length and conversation[-1]["role"] == "assistant"):
                continue
            try:
                hook(messages=messages, params=params)
            except Exception:
                logger.exception("processor %r raised in before_send; skipped", processor_id)
                del conversation[length:]
            except BaseException:
                del conversation[length:]
                raise
            length = len(conversation)
        return length != start


def finish_run(
    messages: MessageList,
    message: Message,
    attempts: list[Attempt],
    request_id: str | None = None,
) -> RunResult:
    """Record the successful attempt in ``attempts``, append the reply to ``messages``, sum up.

    A reply with no content (or only whitespace text) is not appended: such an assistant turn
    would make every later request of the conversation fail with a 400. ``request_id``
    defaults to the one the SDK set on ``message``. Shared by :meth:`Generation.succeeded`
    and a driver that sends a first request without a generation (the Agent).
    """
    if request_id is None:
        request_id = getattr(message, "_request_id", None)
    attempts.append(Attempt(len(attempts) + 1, None, request_id))
    for block in message.content:
        if block.type != "text" or block.text.strip():
            messages._append_reply(message)
            break
    else:
        logger.warning("the reply (request id %s) has no content; not stored", request_id)
    return RunResult(message, messages, tuple(attempts))


class Generation:
    """One generation's mutable state: the conversation, the parameters, counts and attempts.

    Made per call and never shared, which is what keeps an Agent safe across threads and tasks.
    Thousands may be in flight at once, so it holds as few objects as it can: the per-processor
    retry counts exist only once a processor has been consulted.
    """

    __slots__ = (
        "_attempts",
        "_borrowed",
        "_owns_params",
        "_pipeline",
        "_processor_retries",
        "_retry_counts",
        "messages",
        "params",
    )

    def __init__(
        self,
        pipeline: Pipeline,
        messages: MessageList,
        params: RequestParams,
        *,
        borrowed: bool = False,
    ) -> None:
        self.messages = messages
        self.params = params
        self._borrowed = borrowed
        self._owns_params = False
        self._pipeline = pipeline
        self._retry_counts: list[int] | None = None
        self._processor_retries = 0
        self._attempts: list[Attempt] = []

    @property
    def borrowed(self) -> bool:
        """Whether ``messages`` still shares its message dicts with the caller (see
        :meth:`Pipeline.begin`): nothing has run yet that could change them."""
        return self._borrowed

    def _own(self) -> None:
        """Take private copies of what may be shared before code that may change it runs."""
        if not self._owns_params:
            self.params = deep_copy(self.params)
            self._owns_params = True
        if self._borrowed:
            self.messages = self.messages.copy()
            self._borrowed = False

    @property
    def attempts(self) -> tuple[Attempt, ...]:
        """The attempts so far, in order."""
        return tuple(self._attempts)

    def request(self) -> dict[str, Any]:
        """The next attempt's request, rebuilt from the conversation (hidden metadata removed)."""
        return {**self.params, "messages": self.messages.to_api()}

    def succeeded(self, message: Message, request_id: str | None = None) -> RunResult:
        """Record the successful attempt, append the reply to the conversation, sum it up
        (see :func:`finish_run`)."""
        return finish_run(self.messages, message, self._attempts, request_id)

    def run_before_send(self, owner: str, hook: Callable[..., object]) -> None:
        """Call ``hook(messages=..., params=...)``; on an exception log it and undo its changes.

        The conversation and parameters are saved first (a deep copy), so that whatever the
        hook changed before it raised can be put back. A pipeline whose hooks all only append
        needs no copy and does not come here; see :meth:`Pipeline.run_appending_hooks`.
        """
        self._own()
        saved = self._save()
        try:
            hook(messages=self.messages, params=self.params)
        except Exception:
            logger.exception("processor %r raised in before_send; skipped", owner)
            self._restore(saved)
        except BaseException:
            self._restore(saved)
            raise

    def _save(self) -> tuple[Snapshot, RequestParams]:
        return self.messages.snapshot(), deep_copy(self.params)

    def _restore(self, saved: tuple[Snapshot, RequestParams]) -> None:
        snapshot, params = saved
        self.messages.restore(snapshot)
        self.params.clear()
        self.params.update(params)

    def transient_failed(self, error: BaseException, wait: float) -> Attempt:
        """Record an attempt that failed transiently and is sent again after ``wait`` seconds."""
        attempt = Attempt(
            len(self._attempts) + 1,
            error,
            getattr(error, "request_id", None),
            retry="transient",
            wait=wait,
        )
        self._attempts.append(attempt)
        return attempt

    def failed(self, error: BaseException) -> Generator[Step, object, bool]:
        """Decide whether to retry after ``error``; yields processor calls for a driver to make.

        Returns ``True`` when a processor asked for a retry within the cap. Only the winning
        processor keeps its changes: what any other changed in the list or params (because it
        raised, passed, or returned something invalid) is undone from a save taken before it
        ran. A processor that raises is logged and skipped. After a processor marked
        :func:`~prefill_guard.processors.changes_only_on_retry` declines, there is nothing to
        undo, and its save serves the next processor.
        """
        retried_by: str | None = None
        try:
            if not isinstance(error, APIError) or not self._entries_allowed(error):
                return False
            self._own()
            entries = self._pipeline._entries
            if self._retry_counts is None:
                self._retry_counts = [0] * len(entries)
            retry_counts = self._retry_counts
            saved: tuple[Snapshot, RequestParams] | None = None
            for index, entry in enumerate(entries):
                kwargs: dict[str, Any] = {
                    "error": error,
                    "messages": self.messages,
                    "retry_count": retry_counts[index],
                }
                if entry.takes_params:
                    kwargs["params"] = self.params
                if saved is None:
                    saved = self._save()
                try:
                    result = yield Step(entry.id, entry.processor.process_api_error, kwargs)
                except Exception:
                    logger.exception(
                        "processor %r raised while handling %s; skipped",
                        entry.id,
                        type(error).__name__,
                    )
                    self._restore(saved)
                    saved = None  # the restored values are the save's own: save again
                    continue
                except BaseException:  # cancelled mid-processor: undo, then let it through
                    self._restore(saved)
                    raise
                if result is not None and not isinstance(result, ProcessAPIErrorResult):
                    logger.error(
                        "processor %r returned a %s; expected ProcessAPIErrorResult or None; "
                        "ignored",
                        entry.id,
                        type(result).__name__,
                    )
                elif result is not None and result.retry:
                    retry_counts[index] += 1
                    self._processor_retries += 1
                    retried_by = entry.id
                    return True
                elif entry.changes_only_on_retry:
                    continue  # it declined, so it changed nothing: the save still holds
                self._restore(saved)  # only the processor that wins keeps its changes
                saved = None
            return False
        finally:
            self._attempts.append(
                Attempt(
                    len(self._attempts) + 1,
                    error,
                    getattr(error, "request_id", None),
                    retry=None if retried_by is None else "processor",
                    retried_by=retried_by,
                )
            )

    def _entries_allowed(self, error: APIError) -> bool:
        if self._processor_retries < self._pipeline.max_processor_retries:
            return True
        logger.info(
            "not consulting processors for %s: max_processor_retries=%d reached",
            type(error).__name__,
            self._pipeline.max_processor_retries,
        )
        return False


def _refuse_awaitable(step: Step, result: object) -> TypeError:
    if inspect.iscoroutine(result):
        result.close()
    return TypeError(
        f"processor {step.processor_id!r} returned an awaitable in a synchronous run; "
        "use the async twin (agenerate/astream) for async processors"
    )


def run_sync(steps: Generator[Step, object, T]) -> T:
    """Drive the core synchronously: make each yielded processor call and send back its result."""
    try:
        step = next(steps)
        while True:
            try:
                result = step()
            except BaseException as exc:  # the core logs and skips, or undoes and re-raises
                step = steps.throw(exc)
                continue
            if inspect.isawaitable(result):
                steps.close()
                raise _refuse_awaitable(step, result)
            step = steps.send(result)
    except StopIteration as stop:
        return cast(T, stop.value)


async def run_async(steps: Generator[Step, object, T]) -> T:
    """Drive the core asynchronously: like :func:`run_sync`, awaiting ``async def`` hooks."""
    try:
        step = next(steps)
        while True:
            try:
                result = step()
                if inspect.isawaitable(result):
                    result = await result
            except BaseException as exc:  # the core logs and skips, or undoes and re-raises
                step = steps.throw(exc)
                continue
            step = steps.send(result)
    except StopIteration as stop:
        return cast(T, stop.value)
