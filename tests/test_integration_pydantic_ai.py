"""pydantic-ai takes a ready client: AnthropicProvider(anthropic_client=guard(...))."""

from __future__ import annotations

import anthropic
import pytest

from prefill_guard import PrefillErrorHandler, guard
from prefill_guard.testing import DEFAULT_REPLY_TEXT, AnthropicEmulator

from .conftest import require

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
