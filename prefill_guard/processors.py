"""The processor contract and the built-in :class:`PrefillErrorHandler`.

A processor is any object with an ``id`` and a ``process_api_error`` hook; no base class is
needed. When an API call fails, the pipeline calls each processor's hook in registration order
with keyword arguments ``error=``, ``messages=`` and ``retry_count=`` (and ``params=`` for hooks
that declare it). The first one that returns ``ProcessAPIErrorResult(retry=True)`` wins.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from anthropic import APIError

from .errors import api_message
from .messages import MessageList, system_reminder

__all__ = [
    "PREFILL_REMINDER_TYPE",
    "ParamsProcessor",
    "PrefillErrorHandler",
    "ProcessAPIErrorResult",
    "Processor",
    "RequestParams",
    "is_prefill_rejection",
]

RequestParams = dict[str, Any]
"""The next attempt's request parameters other than ``messages`` (``model``, ``max_tokens``,
``system``, ``temperature``, ``thinking``, ``tool_choice``, ...). Processors that declare a
``params`` argument may change this dict in place; the change applies to every later attempt
of the same generation."""

PREFILL_REMINDER_TYPE = "anthropic-prefill-processor-retry"
"""The ``systemReminder`` type that tags the reminder :class:`PrefillErrorHandler` appends."""

_PREFILL_PHRASES = ("assistant message prefill", "conversation must end with a user message")


@dataclass(frozen=True)
class ProcessAPIErrorResult:
    """A processor's answer: ``retry=True`` asks the runner to send the request again."""

    retry: bool


ProcessorReturn = ProcessAPIErrorResult | None | Awaitable[ProcessAPIErrorResult | None]


@runtime_checkable
class Processor(Protocol):
    """An error processor: ``id``, an optional ``name``, and the ``process_api_error`` hook.

    The hook may repair ``messages`` in place and return ``ProcessAPIErrorResult(retry=True)``
    to ask for a retry, or return ``None`` to pass. It may be ``async def``; only async runs can
    use such a processor. ``retry_count`` is how many retries *this* processor has already
    asked for in the current generation.
    """

    @property
    def id(self) -> str: ...

    def process_api_error(
        self, *, error: APIError, messages: MessageList, retry_count: int
    ) -> ProcessorReturn: ...


@runtime_checkable
class ParamsProcessor(Protocol):
    """A processor that also reads and changes the next attempt's request parameters.

    The pipeline passes ``params=`` only to hooks whose signature declares it (or ``**kwargs``),
    so three-argument processors keep working unchanged.
    """

    @property
    def id(self) -> str: ...

    def process_api_error(
        self, *, error: APIError, messages: MessageList, retry_count: int, params: RequestParams
    ) -> ProcessorReturn: ...


def _error_chain(error: BaseException) -> Iterator[BaseException]:
    """The error and every exception in its ``__cause__``/``__context__`` chain, once each."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def _strings(value: object, depth: int = 0) -> Iterator[str]:
    """Every string inside a body of any shape (dict, list, str), to a bounded depth."""
    if isinstance(value, str):
        yield value
    elif depth < 8 and isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item, depth + 1)
    elif depth < 8 and isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item, depth + 1)


def _mentions_prefill(text: str) -> bool:
    lowered = text.lower()
    return any(phrase in lowered for phrase in _PREFILL_PHRASES)


def is_prefill_rejection(error: BaseException) -> bool:
    """Whether ``error`` is the API's "assistant message prefill" rejection.

    Looks case-insensitively in the API message, the body (any shape), ``str(error)`` and the
    cause/context chain, so the direct API, Vertex, Bedrock's ``ValidationException``, proxies'
    flat bodies and an SSE ``error`` event are all recognised.
    """
    for exc in _error_chain(error):
        candidates = [api_message(exc), getattr(exc, "message", None), str(exc)]
        if any(isinstance(text, str) and _mentions_prefill(text) for text in candidates):
            return True
        if any(_mentions_prefill(text) for text in _strings(getattr(exc, "body", None))):
            return True
    return False


class PrefillErrorHandler:
    """Repairs the "assistant message prefill" 400 by appending a hidden ``continue`` reminder.

    Purely reactive: it matches the API's error text, never a list of model names, and acts on
    the first attempt only (``retry_count == 0``), so a persistent rejection costs exactly one
    extra request.
    """

    id = "prefill-error-handler"
    name = "Prefill Error Handler"

    def process_api_error(
        self, *, error: APIError, messages: MessageList, retry_count: int
    ) -> ProcessAPIErrorResult | None:
        """Append ``<system-reminder>continue</system-reminder>`` and ask for a retry, once."""
        if retry_count != 0 or not is_prefill_rejection(error):
            return None
        messages.append(system_reminder("continue", PREFILL_REMINDER_TYPE))
        return ProcessAPIErrorResult(retry=True)

    def __repr__(self) -> str:
        return "PrefillErrorHandler()"
