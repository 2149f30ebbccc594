"""Agno's Claude model, with its own visible "continue" workaround turned off."""

from __future__ import annotations

from typing import Any

import pytest

from prefill_guard import PrefillErrorHandler, install
from prefill_guard.testing import DEFAULT_REPLY_TEXT, AnthropicEmulator

from ..conftest import require
from .conftest import roles_sent

require("agno")

from agno.models.anthropic import Claude  # noqa: E402
from agno.models.message import Message  # noqa: E402


def _reply(**options: Any) -> Any:
    history = [
        Message(role="user", content="Write a haiku."),
        Message(role="assistant", content="Here is one"),
    ]
    return Claude(id="claude-sonnet-4-6", **options).response(messages=history).content


def test_fails_without_prefill_guard(emulator_env: AnthropicEmulator) -> None:
    """Control: with append_trailing_user_message=False the history is rejected."""
    with pytest.raises(Exception, match="assistant message prefill"):
        _reply(append_trailing_user_message=False)
    assert len(emulator_env.message_requests) == 1


def test_recovers_after_install(emulator_env: AnthropicEmulator) -> None:
    """install() first: the hidden reminder instead of Agno's workaround."""
    install([PrefillErrorHandler()])
    assert _reply(append_trailing_user_message=False) == DEFAULT_REPLY_TEXT
    assert roles_sent(emulator_env) == ["user", "assistant", "user"]
    reminder = emulator_env.message_requests[-1].body["messages"][-1]["content"]
    assert "<system-reminder>" in str(reminder)
    assert len(emulator_env.message_requests) == 2


def test_agnos_own_workaround_sends_a_plain_continue(emulator_env: AnthropicEmulator) -> None:
    """What the hidden reminder replaces: by default Agno sends the user turn "continue",
    which the model cannot tell from the user's own words."""
    assert _reply() == DEFAULT_REPLY_TEXT
    last = emulator_env.message_requests[-1].body["messages"][-1]
    assert last["role"] == "user"
    assert "continue" in str(last["content"])
    assert "<system-reminder>" not in str(last["content"])
