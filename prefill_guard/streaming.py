"""Streaming generations: ``Agent.stream()`` / ``Agent.astream()`` through the same retry loops.

Opening a stream is one *attempt*: send the request and read events up to the first content
event. Everything that fails before content reaches the consumer (a 400 when the stream opens,
a 529, an SSE ``error`` event, a dropped connection) is retried by the same two loops as
``generate``. Once content has reached the consumer there is no silent retry: the original
error is raised with the text received so far on it as ``partial_text``, and no partial
assistant message is put into the conversation. A new SDK stream manager is made per attempt.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections import deque
from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeAlias

import anthropic
from anthropic.lib.streaming import (
    AsyncMessageStream,
    AsyncMessageStreamManager,
    MessageStream,
    MessageStreamManager,
    ParsedMessageStreamEvent,
)
from anthropic.types import Message

from .pipeline import Generation, RunResult
from .retries import RetryPolicy, acall_with_retries, call_with_retries

__all__ = ["AgentStream", "AsyncAgentStream", "partial_text"]

logger = logging.getLogger("prefill_guard")

_PARTIAL_TEXT = "partial_text"

if TYPE_CHECKING:  # the SDK's alias is only subscriptable for type checkers
    StreamEvent: TypeAlias = ParsedMessageStreamEvent[Any]


def partial_text(error: BaseException) -> str | None:
    """The text a stream had delivered before ``error`` interrupted it, or ``None``."""
    value = getattr(error, _PARTIAL_TEXT, None)
    return value if isinstance(value, str) else None


def _is_content(event: StreamEvent) -> bool:
    return event.type == "content_block_delta"


def _text_of(event: StreamEvent) -> str | None:
    if event.type == "content_block_delta" and event.delta.type == "text_delta":
        return event.delta.text
    return None


class _Tracker:
    """The I/O-free part shared by both twins: pending events, partial text, the result."""

    def __init__(self, generation: Generation) -> None:
        self.generation = generation
        self.pending: deque[StreamEvent] = deque()
        self.texts: list[str] = []
        self.result: RunResult | None = None

    def delivered(self, event: StreamEvent) -> StreamEvent:
        text = _text_of(event)
        if text is not None:
            self.texts.append(text)
        return event

    def interrupted(self, error: BaseException) -> None:
        received = "".join(self.texts)
        with contextlib.suppress(AttributeError):  # a __slots__ exception has no room for it
            setattr(error, _PARTIAL_TEXT, received)
        logger.warning(
            "stream interrupted by %s after %d characters reached the consumer; not retried",
            type(error).__name__,
            len(received),
        )

    def finish(self, message: Message) -> RunResult:
        self.result = self.generation.succeeded(message)
        return self.result

    def require_result(self) -> RunResult:
        if self.result is None:
            raise RuntimeError(
                "the stream has not finished: iterate it or call get_final_message() first"
            )
        return self.result


def _open(
    client: anthropic.Anthropic, request: dict[str, Any]
) -> tuple[MessageStreamManager, MessageStream, list[StreamEvent]]:
    manager = client.messages.stream(**request)
    stream = manager.__enter__()
    head: list[StreamEvent] = []
    try:
        while not head or not _is_content(head[-1]):
            try:
                head.append(next(stream))
            except StopIteration:
                break
    except BaseException:
        manager.__exit__(*sys.exc_info())
        raise
    return manager, stream, head


async def _aopen(
    client: anthropic.AsyncAnthropic, request: dict[str, Any]
) -> tuple[AsyncMessageStreamManager, AsyncMessageStream, list[StreamEvent]]:
    manager = client.messages.stream(**request)
    stream = await manager.__aenter__()
    head: list[StreamEvent] = []
    try:
        while not head or not _is_content(head[-1]):
            try:
                head.append(await stream.__anext__())
            except StopAsyncIteration:
                break
    except BaseException:
        await manager.__aexit__(*sys.exc_info())
        raise
    return manager, stream, head


class AgentStream:
    """A streamed generation: ``with agent.stream(messages) as stream:``.

    Iterate it for the SDK's stream events or use ``text_stream`` for the text; then
    ``get_final_message()`` and ``result`` (a :class:`RunResult`, as ``generate`` returns).
    The request is sent when the ``with`` block is entered.
    """

    def __init__(
        self, client: anthropic.Anthropic, generation: Generation, policy: RetryPolicy
    ) -> None:
        self._client = client
        self._policy = policy
        self._tracker = _Tracker(generation)
        self._manager: MessageStreamManager | None = None
        self._stream: MessageStream | None = None

    def __enter__(self) -> AgentStream:
        if self._manager is not None:
            raise RuntimeError("this stream was already entered; call agent.stream() again")
        self._manager, self._stream, head = call_with_retries(
            self._tracker.generation, self._policy, lambda request: _open(self._client, request)
        )
        self._tracker.pending.extend(head)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._manager is not None:
            self._manager.__exit__(exc_type, exc, traceback)

    def __iter__(self) -> Iterator[StreamEvent]:
        tracker = self._tracker
        if tracker.result is not None:
            return
        if self._stream is None:
            raise RuntimeError("enter the stream first: 'with agent.stream(...) as stream:'")
        try:
            while tracker.pending:
                yield tracker.delivered(tracker.pending.popleft())
            for event in self._stream:
                yield tracker.delivered(event)
        except Exception as error:
            tracker.interrupted(error)
            raise
        tracker.finish(self._stream.get_final_message())

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
        self, client: anthropic.AsyncAnthropic, generation: Generation, policy: RetryPolicy
    ) -> None:
        self._client = client
        self._policy = policy
        self._tracker = _Tracker(generation)
        self._manager: AsyncMessageStreamManager | None = None
        self._stream: AsyncMessageStream | None = None

    async def __aenter__(self) -> AsyncAgentStream:
        if self._manager is not None:
            raise RuntimeError("this stream was already entered; call agent.astream() again")
        self._manager, self._stream, head = await acall_with_retries(
            self._tracker.generation, self._policy, lambda request: _aopen(self._client, request)
        )
        self._tracker.pending.extend(head)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._manager is not None:
            await self._manager.__aexit__(exc_type, exc, traceback)

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        tracker = self._tracker
        if tracker.result is not None:
            return
        if self._stream is None:
            raise RuntimeError("enter the stream first: 'async with agent.astream(...) as s:'")
        try:
            while tracker.pending:
                yield tracker.delivered(tracker.pending.popleft())
            async for event in self._stream:
                yield tracker.delivered(event)
        except Exception as error:
            tracker.interrupted(error)
            raise
        tracker.finish(await self._stream.get_final_message())

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
