"""The Agent runner: one model, its default parameters and its processors, run sync or async."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

import anthropic
from anthropic._base_client import AsyncAPIClient, SyncAPIClient

from .messages import MessageList
from .pipeline import AnyProcessor, Pipeline, RunResult
from .processors import RequestParams
from .retries import OnRetry, RetryPolicy, acall_with_retries, call_with_retries
from .streaming import AgentStream, AsyncAgentStream

__all__ = ["Agent", "AnthropicClient"]

SyncClient = anthropic.Anthropic | anthropic.AnthropicBedrock | anthropic.AnthropicVertex
AsyncClient = (
    anthropic.AsyncAnthropic | anthropic.AsyncAnthropicBedrock | anthropic.AsyncAnthropicVertex
)
AnthropicClient = SyncClient | AsyncClient
"""Any anthropic client: ``Anthropic``, ``AsyncAnthropic`` and the Bedrock and Vertex variants."""

MessagesInput = str | MessageList | Iterable[Any]

_RESERVED = ("messages", "stream")


def _client_kind(client: object) -> str:
    if isinstance(client, AsyncAPIClient):
        return "async"
    if isinstance(client, SyncAPIClient):
        return "sync"
    raise TypeError(
        "client must be an anthropic client (Anthropic, AsyncAnthropic, or a Bedrock/Vertex "
        f"variant), got {type(client).__name__}"
    )


class Agent:
    """Runs generations for one model through two retry loops and a pipeline of processors.

    Each attempt's request is rebuilt from the conversation. Transient failures (429, 5xx, 529,
    connection errors) are retried up to ``max_retries`` times, honouring ``retry-after``;
    whatever error is left goes to the ``error_processors``, which may repair the request and
    ask for a retry (up to ``max_processor_retries``). The SDK's own retries are switched off
    on the clients the Agent uses, so the two layers never multiply. ``on_retry`` hooks get a
    :class:`~prefill_guard.RetryDetails` for every retry; ``sleep`` replaces real waiting
    (for tests). An Agent holds no per-call state: one instance is safe to share between
    threads and tasks.
    """

    def __init__(
        self,
        model: str,
        *,
        client: AnthropicClient | None = None,
        instructions: str | None = None,
        name: str | None = None,
        error_processors: Iterable[AnyProcessor] = (),
        max_processor_retries: int = 3,
        max_retries: int = 2,
        max_retry_delay: float = 60.0,
        on_retry: Iterable[OnRetry] = (),
        sleep: Callable[[float], object] | None = None,
        max_tokens: int = 1024,
        **default_params: Any,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise TypeError(f"model must be a non-empty str, got {model!r}")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens must be an int >= 1, got {max_tokens!r}")
        _check_params(default_params, "Agent()")
        self.model = model
        self.instructions = instructions
        self.name = name or model
        self.pipeline = Pipeline(error_processors, max_processor_retries=max_processor_retries)
        self.retry_policy = RetryPolicy(
            max_retries=max_retries, max_retry_delay=max_retry_delay, on_retry=on_retry, sleep=sleep
        )
        self.default_params: RequestParams = {"max_tokens": max_tokens, **default_params}
        self._client_kind = None if client is None else _client_kind(client)
        # Our retry layer replaces the SDK's; with both on, 1 + 2 retries become 9 requests.
        own = None if client is None else client.with_options(max_retries=0)
        self._sync_client = own if self._client_kind == "sync" else None
        self._async_client = own if self._client_kind == "async" else None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        ids = [getattr(p, "id", "?") for p in self.pipeline.processors]
        return f"Agent(model={self.model!r}, name={self.name!r}, error_processors={ids})"

    def generate(self, messages: MessagesInput, **params: Any) -> RunResult:
        """Run one generation synchronously and return its :class:`RunResult`.

        ``messages`` is a str (one user message), a list of message dicts (copied, never
        changed) or a :class:`MessageList` (the conversation itself: extended in place).
        ``params`` override the Agent's defaults for this call. When neither retry layer
        retries, the original SDK exception is raised.
        """
        client = self._get_sync_client()
        self.pipeline.require_sync("Agent.generate()")
        generation = self.pipeline.begin(_as_message_list(messages), self._params(params))
        message = call_with_retries(
            generation, self.retry_policy, lambda request: client.messages.create(**request)
        )
        return generation.succeeded(message)

    async def agenerate(self, messages: MessagesInput, **params: Any) -> RunResult:
        """The async twin of :meth:`generate`; ``async def`` processors are awaited."""
        client = self._get_async_client()
        generation = self.pipeline.begin(_as_message_list(messages), self._params(params))
        message = await acall_with_retries(
            generation, self.retry_policy, lambda request: client.messages.create(**request)
        )
        return generation.succeeded(message)

    def stream(self, messages: MessagesInput, **params: Any) -> AgentStream:
        """Stream one generation: ``with agent.stream(messages) as stream:``.

        The request is sent when the block is entered; failures before any content reaches
        you are retried like :meth:`generate`'s. See :class:`~prefill_guard.AgentStream`.
        """
        client = self._get_sync_client()
        self.pipeline.require_sync("Agent.stream()")
        generation = self.pipeline.begin(_as_message_list(messages), self._params(params))
        return AgentStream(client, generation, self.retry_policy)

    def astream(self, messages: MessagesInput, **params: Any) -> AsyncAgentStream:
        """The async twin of :meth:`stream`: ``async with agent.astream(messages) as stream:``."""
        client = self._get_async_client()
        generation = self.pipeline.begin(_as_message_list(messages), self._params(params))
        return AsyncAgentStream(client, generation, self.retry_policy)

    # -- internals -------------------------------------------------------------------
    def _params(self, params: dict[str, Any]) -> RequestParams:
        _check_params(params, "generate()")
        merged: RequestParams = {"model": self.model, **self.default_params}
        if self.instructions is not None:
            merged["system"] = self.instructions
        merged.update(params)
        return merged

    def _get_sync_client(self) -> anthropic.Anthropic:
        if self._client_kind == "async":
            raise TypeError(
                "Agent.generate() needs a synchronous client, but this Agent was given an async "
                "one; use 'await agent.agenerate(...)' or pass client=anthropic.Anthropic()"
            )
        with self._lock:
            if self._sync_client is None:
                self._sync_client = anthropic.Anthropic(max_retries=0)
            return self._sync_client  # type: ignore[return-value]

    def _get_async_client(self) -> anthropic.AsyncAnthropic:
        if self._client_kind == "sync":
            raise TypeError(
                "Agent.agenerate() needs an async client, but this Agent was given a synchronous "
                "one; use 'agent.generate(...)' or pass client=anthropic.AsyncAnthropic()"
            )
        with self._lock:
            if self._async_client is None:
                self._async_client = anthropic.AsyncAnthropic(max_retries=0)
            return self._async_client  # type: ignore[return-value]


def _check_params(params: dict[str, Any], where: str) -> None:
    for key in _RESERVED:
        if key in params:
            hint = (
                "pass the conversation as the first argument"
                if key == "messages"
                else ("use agent.stream() / agent.astream() to stream")
            )
            raise TypeError(f"{where}: {key!r} is not a request parameter here; {hint}")


def _as_message_list(messages: MessagesInput) -> MessageList:
    if isinstance(messages, MessageList):
        return messages
    if isinstance(messages, str):
        result = MessageList()
        result.add("user", messages)
        return result
    return MessageList(messages)
