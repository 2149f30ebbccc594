"""pydantic-ai takes a ready client: AnthropicProvider(anthropic_client=guard(...))."""

from __future__ import annotations

import anthropic
import pytest

from prefill_guard import PrefillErrorHandler, guard
from prefill_guard.testing import DEFAULT_REPLY_TEXT, AnthropicEmulator, Fault

from ..conftest import require

require("pydantic_ai")

from pydantic_ai.messages import (  # noqa: E402
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    UserPromptPart,
)
from pydantic_ai.models import ModelRequestParameters  # noqa: E402
from pydantic_ai.models.anthropic import AnthropicModel  # noqa: E402
from pydantic_ai.providers.anthropic import AnthropicProvider  # noqa: E402

HISTORY: list[ModelMessage] = [
    ModelRequest(parts=[UserPromptPart("Write a haiku.")]),
    ModelResponse(parts=[TextPart("Here is one")]),
]


async def _request(client: anthropic.AsyncAnthropic) -> ModelResponse:
    provider = AnthropicProvider(anthropic_client=client)
    model = AnthropicModel("claude-opus-4-6", provider=provider)
    return await model.request(list(HISTORY), None, ModelRequestParameters())


async def test_fails_without_prefill_guard(anthropic_emulator: AnthropicEmulator) -> None:
    """Control: a history ending with the model's response is rejected."""
    async with anthropic_emulator.async_client() as client:
        with pytest.raises(Exception, match="assistant message prefill"):
            await _request(client)
    assert len(anthropic_emulator.message_requests) == 1


async def test_recovers_with_a_guarded_client(anthropic_emulator: AnthropicEmulator) -> None:
    """The guarded client repairs the request; pydantic-ai sees a normal response."""
    async with anthropic_emulator.async_client() as client:
        response = await _request(guard(client, [PrefillErrorHandler()]))
    assert response.parts == [TextPart(DEFAULT_REPLY_TEXT)]
    assert len(anthropic_emulator.message_requests) == 2


async def test_the_recipe_does_not_multiply_retries(anthropic_emulator: AnthropicEmulator) -> None:
    """Under a persistent 529 the guarded client makes the SDK's 1 + max_retries requests, as
    the bare client does (pydantic-ai's model request does not retry on its own)."""
    counts = []
    for guarded in (False, True):
        anthropic_emulator.reset()
        anthropic_emulator.script(*[Fault(529, headers={"retry-after-ms": "1"})] * 10)
        async with anthropic_emulator.async_client(max_retries=2) as client:
            with pytest.raises(Exception, match=r"(?i)overloaded"):
                await _request(guard(client) if guarded else client)
        counts.append(len(anthropic_emulator.message_requests))
    assert counts == [3, 3]
