"""The processor contract and the types every module shares: the bottom of the import graph.

A processor is any object with an ``id`` and a ``process_api_error`` hook; no base class is
needed. When a request fails, the run calls each processor's hook in registration order with
keyword arguments ``error=``, ``messages=`` and ``retry_count=`` (and ``params=`` for hooks that
declare it). The first one that returns ``ProcessAPIErrorResult(retry=True)`` wins.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import anthropic
from anthropic import APIError

if TYPE_CHECKING:  # these modules import this one; the types here only name theirs
    from .messages import MessageList
    from .run import RunResult

__all__ = [
    "Abort",
    "AnthropicClient",
    "AsyncClient",
    "ContextProcessor",
    "ParamsProcessor",
    "ProcessAPIErrorResult",
    "Processor",
    "ProcessorReturn",
    "RawMessage",
    "RequestParams",
    "SyncClient",
]

RawMessage = dict[str, Any]
"""One raw message: ``role``, ``content`` (str or block dicts) and optional ``metadata``."""

RequestParams = dict[str, Any]
"""The next attempt's request parameters other than ``messages`` (``model``, ``max_tokens``,
``system``, ``thinking``, ``tool_choice``, ``extra_body``, ...). Processors that declare a
``params`` argument may change this dict in place; the change applies to every later attempt
of the same run."""

SyncClient = anthropic.Anthropic | anthropic.AnthropicBedrock | anthropic.AnthropicVertex
"""A synchronous anthropic client: ``Anthropic`` or its Bedrock and Vertex variants."""

AsyncClient = (
    anthropic.AsyncAnthropic | anthropic.AsyncAnthropicBedrock | anthropic.AsyncAnthropicVertex
)
"""An async anthropic client: ``AsyncAnthropic`` or its Bedrock and Vertex variants."""

AnthropicClient = SyncClient | AsyncClient
"""Any anthropic client the Agent takes."""


class Abort(Exception):
    """Raised by a processor or a tool to stop the run: the caller gets it, not the API's error.

    Unlike any other exception of a processor it is not skipped, and unlike any other exception
    of a tool it does not become the tool's result. What the processor changed is undone first.
    ``result`` is what the run completed before it (a :class:`~prefill_guard.RunResult` of the
    steps done, with ``stop_reason="aborted"``), or ``None`` when no step was.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.result: RunResult | None = None


@dataclass(frozen=True)
class ProcessAPIErrorResult:
    """A processor's answer: ``retry=True`` asks the run to send the request again."""

    retry: bool


ProcessorReturn = ProcessAPIErrorResult | None | Awaitable[ProcessAPIErrorResult | None]


@runtime_checkable
class Processor(Protocol):
    """An error processor: an ``id`` and the ``process_api_error`` hook.

    The hook may repair ``messages`` in place and return ``ProcessAPIErrorResult(retry=True)``
    to ask for a retry, or return ``None`` to pass. It may be ``async def``; only async runs can
    use such a processor. ``retry_count`` is how many retries *this* processor has already
    asked for in the current run.
    """

    @property
    def id(self) -> str: ...

    def process_api_error(
        self, *, error: APIError, messages: MessageList, retry_count: int
    ) -> ProcessorReturn: ...


@runtime_checkable
class ParamsProcessor(Protocol):
    """A processor that also reads and changes the next attempt's request parameters.

    The run passes ``params=`` only to hooks whose signature declares it (or ``**kwargs``), so
    three-argument processors keep working unchanged.
    """

    @property
    def id(self) -> str: ...

    def process_api_error(
        self, *, error: APIError, messages: MessageList, retry_count: int, params: RequestParams
    ) -> ProcessorReturn: ...


@runtime_checkable
class ContextProcessor(Protocol):
    """A processor whose hook also declares some of the run's context: ``params``, ``step``
    (the model call's 0-based index), ``steps`` (the completed step records) and ``state``
    (the run's shared dict). Any combination of them type-checks; the run passes each hook
    only what it declares, and checks the signature when the processors are registered.
    """

    @property
    def id(self) -> str: ...

    @property
    def process_api_error(self) -> Callable[..., ProcessorReturn]: ...
