"""smolagents' LiteLLMModel calls litellm.completion: install() reaches it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from prefill_guard import PrefillErrorHandler, install, uninstall
from prefill_guard.testing import DEFAULT_REPLY_TEXT, AnthropicEmulator

from ..conftest import require

require("smolagents")
require("litellm")

from smolagents import LiteLLMModel  # noqa: E402
from smolagents.models import ChatMessage, MessageRole  # noqa: E402


@pytest.fixture(autouse=True)
def _always_uninstall() -> Iterator[None]:
    yield
    uninstall()


def _reply(emulator: AnthropicEmulator) -> Any:
    model = LiteLLMModel(
        model_id="anthropic/claude-sonnet-4-6", api_base=emulator.base_url, api_key="k"
    )
    history = [
        ChatMessage(role=MessageRole.USER, content=[{"type": "text", "text": "Write a haiku."}]),
        ChatMessage(role=MessageRole.ASSISTANT, content=[{"type": "text", "text": "Here is one"}]),
    ]
    return model.generate(history).content


def test_fails_without_prefill_guard(anthropic_emulator: AnthropicEmulator) -> None:
    """Control: a history ending with the model's turn gets the 400 through LiteLLM."""
    with pytest.raises(Exception, match="assistant message prefill"):
        _reply(anthropic_emulator)
    assert len(anthropic_emulator.message_requests) == 1


def test_recovers_after_install(anthropic_emulator: AnthropicEmulator) -> None:
    """After install() the call is repaired in LiteLLM's transport."""
    install([PrefillErrorHandler()])
    assert _reply(anthropic_emulator) == DEFAULT_REPLY_TEXT
    roles = [m["role"] for m in anthropic_emulator.message_requests[-1].body["messages"]]
    assert roles == ["user", "assistant", "user"]
    assert len(anthropic_emulator.message_requests) == 2
