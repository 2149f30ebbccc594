"""Streamed runs: ``Agent.stream()`` / ``Agent.astream()`` through the same retry loop.

Opening a stream is one *attempt*: send the request and read events up to the first content
event. Everything that fails before content reaches the consumer (a 400 when the stream opens,
a 529, an SSE ``error`` event, a dropped connection) is retried by the same loop as
``generate`` (:func:`~prefill_guard.run.send_with_retries`). Once content has reached the
consumer there is no silent retry: the original error is raised with the text received so far
on it as ``partial_text``, and no partial assistant message is put into the conversation. A
new SDK stream manager is made per attempt.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
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
from anthropic.types import Message

from .contract import AsyncClient, SyncClient
from .errors import set_partial_text
from .run import Run, RunResult, asend_with_retries, send_with_retries

__all__ = ["AgentStream", "AsyncAgentStream"]

logger = logging.getLogger("prefill_guard")

if TYPE_CHECKING:  # the SDK's alias is only subscriptable for type checkers
    StreamEvent: TypeAlias = ParsedMessageStreamEvent[Any]


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


class _Tracker:
    """The I/O-free part shared by both twins: pending events, partial text, the result."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.pending: deque[StreamEvent] = deque()
        self.texts: list[str] = []
        self.stopped = False
        self.closed = False
        self.result: RunResult | None = None

    def seen(self, event: StreamEvent) -> StreamEvent:
        if event.type == "message_stop":
            self.stopped = True
        return event

    def delivered(self, event: StreamEvent) -> StreamEvent:
        text = _text_of(event)
        if text is not None:
            self.texts.append(text)
        return event

    def check_open(self, entered: bool) -> bool:
        """Whether there is anything left to give; raises if the stream cannot be read."""
        if self.result is not None:
            return False
        if self.closed:
            raise RuntimeError("the stream was closed before it finished; nothing was stored")
        if not entered:
            raise RuntimeError("enter the stream first: 'with agent.stream(...) as stream:'")
        return True

    def interrupted(self, error: BaseException) -> None:
        received = "".join(self.texts)
        set_partial_text(error, received)
        logger.warning(
            "stream interrupted by %s after %d characters reached the consumer; not retried",
            type(error).__name__,
            len(received),
        )

    def finish(self, message: Message, request_id: str | None) -> RunResult:
        self.result = self.run.succeeded(message, request_id)
        return self.result

    def require_result(self) -> RunResult:
        if self.result is None:
            raise RuntimeError(
                "the stream has not finished: iterate it or call get_final_message() first"
            )
        return self.result


def _open(
    client: SyncClient, request: dict[str, Any], tracker: _Tracker
) -> tuple[MessageStreamManager, MessageStream, list[StreamEvent]]:
    """One attempt: send the request and read events up to the first content event."""
    manager = client.messages.stream(**request)
    stream = manager.__enter__()
    head: list[StreamEvent] = []
    try:
        try:
            while not head or not _is_content(head[-1]):
                head.append(tracker.seen(next(stream)))
        except StopIteration:
            if not tracker.stopped:
                raise _cut_short(stream.response.request) from None
        except _RAW_ERRORS as exc:
            raise _api_error(exc, stream.response) from exc
    except BaseException:
        manager.__exit__(*sys.exc_info())
        raise
    return manager, stream, head


async def _aopen(
    client: AsyncClient, request: dict[str, Any], tracker: _Tracker
) -> tuple[AsyncMessageStreamManager, AsyncMessageStream, list[StreamEvent]]:
    """The async twin of :func:`_open`."""
    manager = client.messages.stream(**request)
    stream = await manager.__aenter__()
    head: list[StreamEvent] = []
    try:
        try:
            while not head or not _is_content(head[-1]):
                head.append(tracker.seen(await stream.__anext__()))
        except StopAsyncIteration:
            if not tracker.stopped:
                raise _cut_short(stream.response.request) from None
        except _RAW_ERRORS as exc:
            raise _api_error(exc, stream.response) from exc
    except BaseException:
        await manager.__aexit__(*sys.exc_info())
        raise
    return manager, stream, head


def _read(tracker: _Tracker, stream: MessageStream) -> Iterator[StreamEvent]:
    """The events not yet delivered, to ``message_stop``; a failure on the way is raised as
    the SDK's own error (:func:`_api_error`) with the text delivered so far on it."""
    try:
        while tracker.pending:
            yield tracker.pending.popleft()
        for event in stream:
            yield tracker.seen(event)
        if not tracker.stopped:
            raise _cut_short(stream.response.request)
    except Exception as error:
        converted = _api_error(error, stream.response)
        tracker.interrupted(converted)
        if converted is error:
            raise
        raise converted from error


async def _aread(tracker: _Tracker, stream: AsyncMessageStream) -> AsyncIterator[StreamEvent]:
    """The async twin of :func:`_read`."""
    try:
        while tracker.pending:
            yield tracker.pending.popleft()
        async for event in stream:
            yield tracker.seen(event)
        if not tracker.stopped:
            raise _cut_short(stream.response.request)
    except Exception as error:
        converted = _api_error(error, stream.response)
        tracker.interrupted(converted)
        if converted is error:
            raise
        raise converted from error


class AgentStream:
    """A streamed generation: ``with agent.stream(messages) as stream:``.

    Iterate it for the SDK's stream events or use ``text_stream`` for the text; then
    ``get_final_message()`` and ``result`` (a :class:`RunResult`, as ``generate`` returns).
    The request is sent when the ``with`` block is entered.
    """

    def __init__(
        self, client: SyncClient, run: Run, *, on_finish: Callable[[], None] | None = None
    ) -> None:
        self._client = client
        self._on_finish = on_finish
        self._tracker = _Tracker(run)
        self._manager: MessageStreamManager | None = None
        self._stream: MessageStream | None = None

    def __enter__(self) -> AgentStream:
        if self._manager is not None:
            raise RuntimeError("this stream was already entered; call agent.stream() again")
        self._manager, self._stream, head = send_with_retries(
            self._tracker.run, lambda request: _open(self._client, request, self._tracker)
        )
        self._tracker.pending.extend(head)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._tracker.closed = True
        if self._manager is not None:
            self._manager.__exit__(exc_type, exc, traceback)

    def __iter__(self) -> Iterator[StreamEvent]:
        tracker = self._tracker
        if not tracker.check_open(self._stream is not None):
            return
        stream = self._stream
        assert stream is not None
        for event in _read(tracker, stream):
            if event.type == "message_stop":  # complete: kept however the consumer goes on
                tracker.finish(stream.current_message_snapshot, stream.request_id)
                if self._on_finish is not None:
                    self._on_finish()
            yield tracker.delivered(event)

    @property
    def text_stream(self) -> Iterator[str]:
        """The reply's text, delta by delta."""
        return (text for event in self if (text := _text_of(event)) is not None)

    def get_final_message(self) -> Message:
        """Read the stream to the end and return the complete reply."""
        for _ in self:
            pass
        return self._tracker.require_result().message

    @property
    def result(self) -> RunResult:
        """The :class:`RunResult`, once the stream has been read to the end."""
        return self._tracker.require_result()


class AsyncAgentStream:
    """The async twin of :class:`AgentStream`: ``async with agent.astream(messages) as s:``."""

    def __init__(
        self, client: AsyncClient, run: Run, *, on_finish: Callable[[], None] | None = None
    ) -> None:
        self._client = client
        self._on_finish = on_finish
        self._tracker = _Tracker(run)
        self._manager: AsyncMessageStreamManager | None = None
        self._stream: AsyncMessageStream | None = None

    async def __aenter__(self) -> AsyncAgentStream:
        if self._manager is not None:
            raise RuntimeError("this stream was already entered; call agent.astream() again")
        self._manager, self._stream, head = await asend_with_retries(
            self._tracker.run, lambda request: _aopen(self._client, request, self._tracker)
        )
        self._tracker.pending.extend(head)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._tracker.closed = True
        if self._manager is not None:
            await self._manager.__aexit__(exc_type, exc, traceback)

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        tracker = self._tracker
        if not tracker.check_open(self._stream is not None):
            return
        stream = self._stream
        assert stream is not None
        async for event in _aread(tracker, stream):
            if event.type == "message_stop":  # complete: kept however the consumer goes on
                tracker.finish(stream.current_message_snapshot, stream.request_id)
                if self._on_finish is not None:
                    await asyncio.to_thread(self._on_finish)  # a store may block the loop
            yield tracker.delivered(event)

    @property
    def text_stream(self) -> AsyncIterator[str]:
        """The reply's text, delta by delta."""
        return (text async for event in self if (text := _text_of(event)) is not None)

    async def get_final_message(self) -> Message:
        """Read the stream to the end and return the complete reply."""
        async for _ in self:
            pass
        return self._tracker.require_result().message

    @property
    def result(self) -> RunResult:
        """The :class:`RunResult`, once the stream has been read to the end."""
        return self._tracker.require_result()
