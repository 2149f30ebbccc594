"""Google ADK's AnthropicLlm makes its own AsyncAnthropic client: install() before it calls."""

from __future__ import annotations

from typing import Any

import pytest

from prefill_guard import PrefillErrorHandler, install
from prefill_guard.testing import DEFAULT_REPLY_TEXT, AnthropicEmulator

from ..conftest import require
from .conftest import assert_repaired

require("google.adk")

from google.adk.models.anthropic_llm import AnthropicLlm  # noqa: E402
from google.adk.models.llm_request import LlmRequest  # noqa: E402
from google.genai import types  # noqa: E402

HISTORY = [
    types.Content(role="user", parts=[types.Part(text="Write a haiku.")]),
    types.Content(role="model", parts=[types.Part(text="Here is one")]),
]


async def _reply() -> Any:
    llm = AnthropicLlm(model="claude-sonnet-4-6")
    request = LlmRequest(model="claude-sonnet-4-6", contents=list(HISTORY))
    responses = [response async for response in llm.generate_content_async(request)]
    return responses[-1].content.parts[0].text


async def test_fails_without_prefill_guard(emulator_env: AnthropicEmulator) -> None:
    """Control: contents ending with the model's turn are rejected."""
    with pytest.raises(Exception, match="assistant message prefill"):
        await _reply()
    assert len(emulator_env.message_requests) == 1


async def test_recovers_after_install(emulator_env: AnthropicEmulator) -> None:
    """install() first: the model's response comes back."""
    install([PrefillErrorHandler()])
    assert await _reply() == DEFAULT_REPLY_TEXT
    assert_repaired(emulator_env)
