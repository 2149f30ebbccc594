"""Haystack's AnthropicChatGenerator builds its own client: install() before it is made."""

from __future__ import annotations

import pytest

from prefill_guard import PrefillErrorHandler, install
from prefill_guard.testing import DEFAULT_REPLY_TEXT, AnthropicEmulator

from ..conftest import require
from .conftest import assert_repaired

require("haystack_integrations.components.generators.anthropic")

from haystack.dataclasses import ChatMessage  # noqa: E402
from haystack_integrations.components.generators.anthropic import (  # noqa: E402
    AnthropicChatGenerator,
)

HISTORY = [ChatMessage.from_user("Write a haiku."), ChatMessage.from_assistant("Here is one")]


def _reply() -> str:
    generator = AnthropicChatGenerator(model="claude-sonnet-4-6")
    text: str = generator.run(list(HISTORY))["replies"][0].text
    return text


def test_fails_without_prefill_guard(emulator_env: AnthropicEmulator) -> None:
    """Control: a chat history ending with the assistant's message is rejected."""
    with pytest.raises(Exception, match="assistant message prefill"):
        _reply()
    assert len(emulator_env.message_requests) == 1


def test_recovers_after_install(emulator_env: AnthropicEmulator) -> None:
    """install() first: the generator's client is guarded and the reply comes back."""
    install([PrefillErrorHandler()])
    assert _reply() == DEFAULT_REPLY_TEXT
    assert_repaired(emulator_env)
