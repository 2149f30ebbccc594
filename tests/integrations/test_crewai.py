"""CrewAI's native Anthropic provider (crewai.LLM("anthropic/...")) builds its own client."""

from __future__ import annotations

from typing import Any

import pytest

from prefill_guard import PrefillErrorHandler, install
from prefill_guard.testing import DEFAULT_REPLY_TEXT, AnthropicEmulator

from ..conftest import require
from .conftest import assert_repaired

crewai = require("crewai")

HISTORY: list[Any] = [
    {"role": "user", "content": "Write a haiku."},
    {"role": "assistant", "content": "Here is one"},
]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREWAI_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")


def _reply() -> Any:
    llm = crewai.LLM(model="anthropic/claude-sonnet-4-6", max_tokens=64)
    assert type(llm).__name__ == "AnthropicCompletion"  # the native provider, not LiteLLM
    return llm.call(list(HISTORY))


def test_fails_without_prefill_guard(emulator_env: AnthropicEmulator) -> None:
    """Control: the call with a history ending in an assistant turn is rejected."""
    with pytest.raises(Exception, match="assistant message prefill"):
        _reply()
    assert len(emulator_env.message_requests) == 1


def test_recovers_after_install(emulator_env: AnthropicEmulator) -> None:
    """install() first: the native provider's client is guarded."""
    install([PrefillErrorHandler()])
    assert _reply() == DEFAULT_REPLY_TEXT
    assert_repaired(emulator_env)
