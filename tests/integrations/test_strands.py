"""Strands' AnthropicModel builds its own async client: install() before it is made."""

from __future__ import annotations

from typing import Any

import pytest

from prefill_guard import PrefillErrorHandler, install
from prefill_guard.testing import DEFAULT_REPLY_TEXT, AnthropicEmulator

from ..conftest import require
from .conftest import assert_repaired

strands = require("strands")

from strands.models.anthropic import AnthropicModel  # noqa: E402

HISTORY: list[Any] = [
    {"role": "user", "content": [{"text": "Write a haiku."}]},
    {"role": "assistant", "content": [{"text": "Here is one"}]},
]


async def _reply() -> Any:
    model = AnthropicModel(model_id="claude-sonnet-4-6", max_tokens=64)
    agent = strands.Agent(model=model, messages=list(HISTORY), callback_handler=None)
    result = await agent.invoke_async()
    return result.message["content"][0]["text"]


async def test_fails_without_prefill_guard(emulator_env: AnthropicEmulator) -> None:
    """Control: an agent resumed on a history ending with its own turn is rejected."""
    with pytest.raises(Exception, match="assistant message prefill"):
        await _reply()
    assert len(emulator_env.message_requests) == 1


async def test_recovers_after_install(emulator_env: AnthropicEmulator) -> None:
    """install() first: the agent answers."""
    install([PrefillErrorHandler()])
    assert await _reply() == DEFAULT_REPLY_TEXT
    assert_repaired(emulator_env)
