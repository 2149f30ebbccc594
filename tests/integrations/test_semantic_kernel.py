"""Semantic Kernel's AnthropicChatCompletion takes a ready async client, or builds one."""

from __future__ import annotations

import pytest

from prefill_guard import PrefillErrorHandler, install
from prefill_guard.testing import DEFAULT_REPLY_TEXT, AnthropicEmulator

from ..conftest import require
from .conftest import assert_repaired

require("semantic_kernel")

import anthropic  # noqa: E402
from semantic_kernel.connectors.ai.anthropic import (  # noqa: E402
    AnthropicChatCompletion,
    AnthropicChatPromptExecutionSettings,
)
from semantic_kernel.contents import ChatHistory  # noqa: E402

from prefill_guard import guard  # noqa: E402


async def _reply(service: AnthropicChatCompletion) -> str:
    history = ChatHistory()
    history.add_user_message("Write a haiku.")
    history.add_assistant_message("Here is one")
    settings = AnthropicChatPromptExecutionSettings(max_tokens=64)
    replies = await service.get_chat_message_contents(history, settings)
    return str(replies[0])


async def test_fails_without_prefill_guard(emulator_env: AnthropicEmulator) -> None:
    """Control: a chat history ending with the assistant's message is rejected."""
    service = AnthropicChatCompletion(ai_model_id="claude-sonnet-4-6", api_key="test-key")
    with pytest.raises(Exception) as failed:  # noqa: PT011 - SK wraps the SDK's error
        await _reply(service)
    assert "assistant message prefill" in repr(failed.value.__cause__)
    assert len(emulator_env.message_requests) == 1


async def test_recovers_with_a_guarded_client(emulator_env: AnthropicEmulator) -> None:
    """async_client=guard(AsyncAnthropic()): the reply comes back."""
    client = guard(anthropic.AsyncAnthropic(), [PrefillErrorHandler()])
    service = AnthropicChatCompletion(ai_model_id="claude-sonnet-4-6", async_client=client)
    assert await _reply(service) == DEFAULT_REPLY_TEXT
    assert_repaired(emulator_env)


async def test_recovers_after_install(emulator_env: AnthropicEmulator) -> None:
    """install() first, and the service builds its own client."""
    install([PrefillErrorHandler()])
    service = AnthropicChatCompletion(ai_model_id="claude-sonnet-4-6", api_key="test-key")
    assert await _reply(service) == DEFAULT_REPLY_TEXT
    assert len(emulator_env.message_requests) == 2
