"""Streamed runs: ``Agent.stream()`` / ``Agent.astream()``, step after step, through the same loop.

Each step's stream is opened by the run's loop (:func:`~prefill_guard.run.send_with_retries`):
opening is one *attempt*, the request sent and the events read up to the first content event,
so everything that fails before content reaches the consumer (a 400 when the stream opens, a
529, an SSE ``error`` event, a dropped connection) is retried like ``generate``'s. Once content
has reached the consumer there is no silent retry: the original error is raised with the text
the step had delivered on it as ``partial_text``, and no partial assistant message is put into
the conversation. A step is complete at its ``message_stop`` event; then the Agent runs the
tools its reply asked for and opens the next step's stream. A new SDK stream manager is made
per attempt.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeAlias

import anthropic
import httpx2
from anthropic.lib.streaming import (
    AsyncMessageStream,
    AsyncMessageStreamManager,
    MessageStream,
    MessageStreamManager,
    ParsedMessageStreamEvent,
)
from anthropic.types import Message, ToolUseBlock

from .contract import Abort, AsyncClient, SyncClient
from .errors import set_partial_text
from .run import (
    Run,
    RunResult,
    Step,
    StepResult,
    all_calls,
    asend_with_retries,
    send_with_retries,
)
from .telemetry import ChatSpan, RunTrace
from .tools import ToolCall

__all__ = [
    "AgentStream",
    "AsyncAgentStream",
    "RunEvent",
    "StepEvent",
    "TextEvent",
    "ToolCallEvent",
    "ToolResultEvent",
]

logger = logging.getLogger("prefill_guard")

if TYPE_CHECKING:  # the SDK's alias is only subscriptable for type checkers
    StreamEvent: TypeAlias = ParsedMessageStreamEvent[Any]


@dataclass(frozen=True)
class TextEvent:
    """A piece of a step's reply text, as it arrives."""

    step: int
    text: str


@dataclass(frozen=True)
class ToolCallEvent:
    """A tool the Agent is about to run, for a step's reply."""

    step: int
    call: ToolUseBlock


@dataclass(frozen=True)
class ToolResultEvent:
    """A tool the Agent ran, with its result."""

    step: int
    call: ToolCall


@dataclass(frozen=True)
class StepEvent:
    """A step finished: its reply is complete and its tool calls answered."""

    step: StepResult


RunEvent = TextEvent | ToolCallEvent | ToolResultEvent | StepEvent
"""What :meth:`AgentStream.events` yields, so a UI can show text and tools as they come."""


def _is_content(event: StreamEvent) -> bool:
    return event.type == "content_block_delta"


def _text_of(event: StreamEvent) -> str | None:
    if event.type == "content_block_delta" and event.delta.type == "text_delta":
        return event.delta.text
    return None


def _api_error(error: BaseException, response: httpx2.Response) -> BaseException:
    """The SDK's own error for a failure it leaves raw inside a stream.

    As for the same fault outside a stream: a transport or content-decoding failure is the
    SDK's ``APIConnectionError`` (``APITimeoutError`` for a timeout), retried as transient; a
    body that is not valid JSON or UTF-8 is an ``APIResponseValidationError``.
    """
    if isinstance(error, httpx2.TimeoutException):
        return anthropic.APITimeoutError(request=response.request)
    if isinstance(error, (httpx2.TransportError, httpx2.DecodingError)):
        return anthropic.APIConnectionError(request=response.request)
    if isinstance(error, (UnicodeDecodeError, json.JSONDecodeError)):
        return anthropic.APIResponseValidationError(
            response, None, message=f"the stream's events are not valid JSON text: {error}"
        )
    return error


_RAW_ERRORS = (
    httpx2.TransportError,
    httpx2.DecodingError,
    UnicodeDecodeError,
    json.JSONDecodeError,
)
"""What the SDK lets escape from a stream's events unconverted (see :func:`_api_error`)."""


def _cut_short(request: httpx2.Request) -> anthropic.APIConnectionError:
    return anthropic.APIConnectionError(
        message="the stream ended before message_stop", request=request
    )


def _stopped(events: list[StreamEvent]) -> bool:
    return any(event.type == "message_stop" for event in events)


_Opened: TypeAlias = "tuple[MessageStreamManager, MessageStream, list[StreamEvent], ChatSpan]"
_AsyncOpened: TypeAlias = (
    "tuple[AsyncMessageStreamManager, AsyncMessageStream, list[StreamEvent], ChatSpan]"
)


def _open(client: SyncClient, trace: RunTrace, request: dict[str, Any]) -> _Opened:
    """One attempt: send the request and read events up to the first content event; the
    attempt's ``chat`` span goes on until the step's stream ends."""
    chat = trace.chat(request)
    try:
        manager = client.messages.stream(**request)
        stream = manager.__enter__()
    except BaseException as error:
        chat.end(error=error)
        raise
    head: list[StreamEvent] = []
    try:
        try:
            while not head or not _is_content(head[-1]):
                head.append(next(stream))
        except StopIteration:
            if not _stopped(head):
                raise _cut_short(stream.response.request) from None
        except _RAW_ERRORS as exc:
            raise _api_error(exc, stream.response) from exc
    except BaseException as error:
        chat.end(error=error)
        manager.__exit__(*sys.exc_info())
        raise
    return manager, stream, head, chat


async def _aopen(client: AsyncClient, trace: RunTrace, request: dict[str, Any]) -> _AsyncOpened:
    """The async twin of :func:`_open`."""
    chat = trace.chat(request)
    try:
        manager = client.messages.stream(**request)
        stream = await manager.__aenter__()
    except BaseException as error:
        chat.end(error=error)
        raise
    head: list[StreamEvent] = []
    try:
        try:
            while not head or not _is_content(head[-1]):
                head.append(await stream.__anext__())
        except StopAsyncIteration:
            if not _stopped(head):
                raise _cut_short(stream.response.request) from None
        except _RAW_ERRORS as exc:
            raise _api_error(exc, stream.response) from exc
    except BaseException as error:
        chat.end(error=error)
        await manager.__aexit__(*sys.exc_info())
        raise
    return manager, stream, head, chat


class _StepStream:
    """One step's open stream: its events not yet delivered, the text that has been, and the
    attempt's ``chat`` span (ended with the reply, the interruption, or the stream's close)."""

    def __init__(
        self,
        step: Step,
        stream: MessageStream | AsyncMessageStream,
        head: list[Any],
        chat: ChatSpan,
    ) -> None:
        self.step = step
        self.stream = stream
        self.pending: deque[StreamEvent] = deque(head)
        self.texts: list[str] = []
        self.chat = chat
        self.stopped = _stopped(head)

    def delivered(self, event: StreamEvent) -> StreamEvent:
        text = _text_of(event)
        if text is not None:
            self.texts.append(text)
        return event

    def seen(self, event: StreamEvent) -> StreamEvent:
        if event.type == "message_stop":
            self.stopped = True
        return event

    def interrupted(self, error: BaseException) -> BaseException:
        """``error`` as the SDK's own, with the step's delivered text on it (it is raised)."""
        converted = _api_error(error, self.stream.response)
        self.chat.end(error=converted)
        received = "".join(self.texts)
        set_partial_text(converted, received)
        logger.warning(
            "stream interrupted by %s after %d characters reached the consumer; not retried",
            type(converted).__name__,
            len(received),
        )
        return converted

    def reply(self) -> Message:
        """The step's complete reply (its ``message_stop`` has arrived)."""
        message = self.stream.current_message_snapshot
        self.chat.end(message)
        return message


def _read(opened: _StepStream) -> Iterator[StreamEvent]:
    """A step's events not yet delivered, to ``message_stop``; a failure on the way is raised
    as the SDK's own error with the text delivered so far on it."""
    stream = opened.stream
    assert isinstance(stream, MessageStream)
    try:
        while opened.pending:
            yield opened.pending.popleft()
        for event in stream:
            yield opened.seen(event)
            if opened.stopped:
                return
        if not opened.stopped:
            raise _cut_short(stream.response.request)
    except Exception as error:
        converted = opened.interrupted(error)
        if converted is error:
            raise
        raise converted from error


async def _aread(opened: _StepStream) -> AsyncIterator[StreamEvent]:
    """The async twin of :func:`_read`."""
    stream = opened.stream
    assert isinstance(stream, AsyncMessageStream)
    try:
        while opened.pending:
            yield opened.pending.popleft()
        async for event in stream:
            yield opened.seen(event)
            if opened.stopped:
                return
        if not opened.stopped:
            raise _cut_short(stream.response.request)
    except Exception as error:
        converted = opened.interrupted(error)
        if converted is error:
            raise
        raise converted from error


class _State:
    """What both twins track: entered, closed, the result, the step being read."""

    def __init__(self, run: Run | None) -> None:
        self._run = run
        self.entered = False
        self.closed = False
        self.result: RunResult | None = None
        self.current: _StepStream | None = None

    @property
    def run(self) -> Run:
        """The stream's run (an async stream's starts when it is entered)."""
        if self._run is None:
            raise RuntimeError("enter the stream first: 'async with agent.astream(...) as stream:'")
        return self._run

    @run.setter
    def run(self, run: Run) -> None:
        self._run = run

    def check_open(self) -> bool:
        """Whether there is anything left to give; raises if the stream cannot be read."""
        if self.result is not None:
            return False
        if self.closed:
            raise RuntimeError("the stream was closed before it finished; nothing more was stored")
        if not self.entered:
            raise RuntimeError("enter the stream first: 'with agent.stream(...) as stream:'")
        return True

    def require_result(self) -> RunResult:
        if self.result is None:
            raise RuntimeError(
                "the stream has not finished: iterate it or call get_final_message() first"
            )
        return self.result


class AgentStream:
    """A streamed run: ``with agent.stream(messages) as stream:``.

    Iterate it for the SDK's stream events of every step, use ``text_stream`` for the text,
    or :meth:`events` for typed events (text, tool calls and results, finished steps); then
    ``get_final_message()`` and ``result`` (a :class:`~prefill_guard.RunResult`, as
    ``generate`` returns). The first request is sent when the ``with`` block is entered.
    """

    def __init__(self, client: SyncClient, run: Run) -> None:
        self._client = client
        self._state = _State(run)
        self._manager: MessageStreamManager | None = None

    def __enter__(self) -> AgentStream:
        if self._state.entered:
            raise RuntimeError("this stream was already entered; call agent.stream() again")
        self._state.entered = True
        try:
            self._open_step()
        except BaseException as error:
            self._state.run.trace.end(error)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        state = self._state
        state.closed = True
        state.run.unanswered()  # left before a reply's tools ran: the reply goes
        try:
            if self._manager is not None:
                self._manager.__exit__(exc_type, exc, traceback)
        finally:  # the SDK's call span has ended with the stream: now the run's spans
            if state.current is not None:
                state.current.chat.end(error=exc)
            state.run.trace.end(exc)

    def _open_step(self) -> None:
        run = self._state.run
        try:
            with run.trace.current():
                step = run.next_step()
                opened = send_with_retries(step, functools.partial(_open, self._client, run.trace))
        except Abort as abort:
            raise run.aborted(abort) from None
        manager, stream, head, chat = opened
        if self._manager is not None:
            self._manager.__exit__(None, None, None)
        self._manager = manager
        self._state.current = _StepStream(step, stream, head, chat)

    def _drive(self) -> Iterator[StreamEvent | RunEvent]:
        """Every step's SDK events and the run's own events, in order, to the run's end."""
        state = self._state
        if not state.check_open():
            return
        run = state.run
        while True:
            opened = state.current
            assert opened is not None
            uses: list[ToolUseBlock] = []
            for event in _read(opened):
                if event.type == "message_stop":  # complete: kept however the consumer goes on
                    opened.step.succeeded(opened.reply(), opened.stream.request_id)
                    uses = run.tool_uses(opened.reply())
                    if not uses:
                        state.result = self._finish(opened, [])
                yield opened.delivered(event)
            if state.result is not None:
                yield StepEvent(state.result.steps[-1])
                return
            calls = []
            try:
                for use in uses:
                    yield ToolCallEvent(opened.step.number, use)
                    call = run.call(use)
                    calls.append(call)
                    yield ToolResultEvent(opened.step.number, call)
            except Abort as abort:
                raise run.aborted(abort) from None
            result = self._finish(opened, calls)
            yield StepEvent(run.steps[-1])
            if result is not None:
                state.result = result
                return
            self._open_step()

    def _finish(self, opened: _StepStream, calls: list[ToolCall]) -> RunResult | None:
        """Record the step (and save it); the run's result if it ended with it."""
        run = self._state.run
        run.step_done(opened.step, opened.reply(), calls)
        if run.on_step is not None:
            run.on_step()
        if not run.finished:
            return None
        result = run.result()
        if self._manager is not None:  # the last stream is done: closed inside the run's span
            manager, self._manager = self._manager, None
            manager.__exit__(None, None, None)
        run.trace.end()
        return result

    def __iter__(self) -> Iterator[StreamEvent]:
        for item in self._drive():
            if not isinstance(item, (TextEvent, ToolCallEvent, ToolResultEvent, StepEvent)):
                yield item

    def events(self) -> Iterator[RunEvent]:
        """The run as typed events: text as it arrives, tool calls and results, finished steps."""
        state = self._state
        for item in self._drive():
            if isinstance(item, (TextEvent, ToolCallEvent, ToolResultEvent, StepEvent)):
                yield item
            elif (text := _text_of(item)) is not None:
                assert state.current is not None
                yield TextEvent(state.current.step.number, text)

    @property
    def text_stream(self) -> Iterator[str]:
        """The replies' text, delta by delta, step after step."""
        return (text for event in self if (text := _text_of(event)) is not None)

    def get_final_message(self) -> Message:
        """Read the run to the end and return the final reply."""
        for _ in self._drive():
            pass
        return self._state.require_result().message

    @property
    def result(self) -> RunResult:
        """The :class:`~prefill_guard.RunResult`, once the run has been read to the end."""
        return self._state.require_result()


class AsyncAgentStream:
    """The async twin of :class:`AgentStream`: ``async with agent.astream(messages) as s:``.

    The tool calls of one reply run at the same time; a completed step is saved off the event
    loop.
    """

    def __init__(self, client: AsyncClient, start: Callable[[], Awaitable[Run]]) -> None:
        self._client = client
        self._start: Callable[[], Awaitable[Run]] | None = start
        self._state = _State(None)
        self._manager: AsyncMessageStreamManager | None = None

    async def __aenter__(self) -> AsyncAgentStream:
        if self._start is None:
            raise RuntimeError("this stream was already entered; call agent.astream() again")
        start, self._start = self._start, None
        self._state.run = await start()  # with a thread, its history is read here
        self._state.entered = True
        try:
            await self._open_step()
        except BaseException as error:
            self._state.run.trace.end(error)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        state = self._state
        state.closed = True
        state.run.unanswered()  # left before a reply's tools ran: the reply goes
        try:
            if self._manager is not None:
                await self._manager.__aexit__(exc_type, exc, traceback)
        finally:  # the SDK's call span has ended with the stream: now the run's spans
            if state.current is not None:
                state.current.chat.end(error=exc)
            state.run.trace.end(exc)

    async def _open_step(self) -> None:
        run = self._state.run
        try:
            with run.trace.current():
                step = run.next_step()
                opener = functools.partial(_aopen, self._client, run.trace)
                opened = await asend_with_retries(step, opener)
        except Abort as abort:
            raise run.aborted(abort) from None
        manager, stream, head, chat = opened
        if self._manager is not None:
            await self._manager.__aexit__(None, None, None)
        self._manager = manager
        self._state.current = _StepStream(step, stream, head, chat)

    async def _drive(self) -> AsyncIterator[StreamEvent | RunEvent]:
        """The async twin of :meth:`AgentStream._drive`."""
        state = self._state
        if not state.check_open():
            return
        run = state.run
        while True:
            opened = state.current
            assert opened is not None
            uses: list[ToolUseBlock] = []
            async for event in _aread(opened):
                if event.type == "message_stop":  # complete: kept however the consumer goes on
                    opened.step.succeeded(opened.reply(), opened.stream.request_id)
                    uses = run.tool_uses(opened.reply())
                    if not uses:
                        state.result = await self._finish(opened, [])
                yield opened.delivered(event)
            if state.result is not None:
                yield StepEvent(state.result.steps[-1])
                return
            for use in uses:
                yield ToolCallEvent(opened.step.number, use)
            try:
                calls = await all_calls([run.acall(use) for use in uses])
            except Abort as abort:
                raise run.aborted(abort) from None
            for call in calls:
                yield ToolResultEvent(opened.step.number, call)
            result = await self._finish(opened, calls)
            yield StepEvent(run.steps[-1])
            if result is not None:
                state.result = result
                return
            await self._open_step()

    async def _finish(self, opened: _StepStream, calls: list[ToolCall]) -> RunResult | None:
        run = self._state.run
        run.step_done(opened.step, opened.reply(), calls)
        if run.aon_step is not None:
            await run.aon_step()
        if not run.finished:
            return None
        result = run.result()
        if self._manager is not None:  # the last stream is done: closed inside the run's span
            manager, self._manager = self._manager, None
            await manager.__aexit__(None, None, None)
        run.trace.end()
        return result

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        async for item in self._drive():
            if not isinstance(item, (TextEvent, ToolCallEvent, ToolResultEvent, StepEvent)):
                yield item

    async def events(self) -> AsyncIterator[RunEvent]:
        """The async twin of :meth:`AgentStream.events`."""
        state = self._state
        async for item in self._drive():
            if isinstance(item, (TextEvent, ToolCallEvent, ToolResultEvent, StepEvent)):
                yield item
            elif (text := _text_of(item)) is not None:
                assert state.current is not None
                yield TextEvent(state.current.step.number, text)

    @property
    def text_stream(self) -> AsyncIterator[str]:
        """The replies' text, delta by delta, step after step."""
        return (text async for event in self if (text := _text_of(event)) is not None)

    async def get_final_message(self) -> Message:
        """Read the run to the end and return the final reply."""
        async for _ in self._drive():
            pass
        return self._state.require_result().message

    @property
    def result(self) -> RunResult:
        """The :class:`~prefill_guard.RunResult`, once the run has been read to the end."""
        return self._state.require_result()
