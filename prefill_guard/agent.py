"""The Agent runner: one model, its default parameters and its processors, run sync or async."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import anthropic
from anthropic._base_client import AsyncAPIClient, SyncAPIClient
from anthropic.types import Message

from .messages import MessageList
from .pipeline import AnyProcessor, Attempt, Pipeline
from .processors import RequestParams
from .retries import acall_with_retries, call_with_retries

__all__ = ["Agent", "AnthropicClient", "RunResult"]

AnthropicClient = SyncAPIClient | AsyncAPIClient
"""Any anthropic client: ``Anthropic``, ``AsyncAnthropic`` and the Bedrock and Vertex variants."""

MessagesInput = str | MessageList | Iterable[Any]

_RESERVED = ("messages", "stream")


@dataclass(frozen=True)
class RunResult:
    """The outcome of one generation.

    ``messages`` is the conversation afterwards: the input, any hidden reminders and the reply.
    ``attempts`` records every request made, with the processor that caused each retry.
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
    """Runs generations for one model through an ordered pipeline of error processors.

    ``generate``/``agenerate`` build each attempt's request from the conversation, and when an
    attempt fails they let the processors repair it and ask for a retry. An Agent holds no
    per-call state, so one instance is safe to share between threads and tasks.
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
        self.default_params: RequestParams = {"max_tokens": max_tokens, **default_params}
        self._client_kind = None if client is None else _client_kind(client)
        self._sync_client = client if self._client_kind == "sync" else None
        self._async_client = client if self._client_kind == "async" else None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        ids = [getattr(p, "id", "?") for p in self.pipeline.processors]
        return f"Agent(model={self.model!r}, name={self.name!r}, error_processors={ids})"

    def generate(self, messages: MessagesInput, **params: Any) -> RunResult:
        """Run one generation synchronously and return its :class:`RunResult`.

        ``messages`` is a str (one user message), a list of message dicts (copied, never
        changed) or a :class:`MessageList` (the conversation itself: extended in place).
        ``params`` override the Agent's defaults for this call. When no processor asks to
        retry, the original SDK exception is raised.
        """
        client = self._get_sync_client()
        self.pipeline.require_sync("Agent.generate()")
        generation = self.pipeline.begin(_as_message_list(messages), self._params(params))
        message = call_with_retries(generation, lambda request: client.messages.create(**request))
        generation.succeeded(message)
        return RunResult(message, generation.messages, generation.attempts)

    async def agenerate(self, messages: MessagesInput, **params: Any) -> RunResult:
        """The async twin of :meth:`generate`; ``async def`` processors are awaited."""
        client = self._get_async_client()
        generation = self.pipeline.begin(_as_message_list(messages), self._params(params))
        message = await acall_with_retries(
            generation, lambda request: client.messages.create(**request)
        )
        generation.succeeded(message)
        return RunResult(message, generation.messages, generation.attempts)

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
                self._sync_client = anthropic.Anthropic()
            return self._sync_client  # type: ignore[return-value]

    def _get_async_client(self) -> anthropic.AsyncAnthropic:
        if self._client_kind == "sync":
            raise TypeError(
                "Agent.agenerate() needs an async client, but this Agent was given a synchronous "
                "one; use 'agent.generate(...)' or pass client=anthropic.AsyncAnthropic()"
            )
        with self._lock:
            if self._async_client is None:
                self._async_client = anthropic.AsyncAnthropic()
            return self._async_client  # type: ignore[return-value]


def _check_params(params: dict[str, Any], where: str) -> None:
    for key in _RESERVED:
        if key in params:
            hint = (
                "pass the conversation as the first argument"
                if key == "messages"
                else ("streaming is not part of generate(); call the SDK's stream helpers")
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
