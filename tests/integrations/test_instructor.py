"""Instructor wraps a ready client: from_anthropic(guard(...)), or install()."""

from __future__ import annotations

from typing import Any

import pytest

from prefill_guard import PrefillErrorHandler, install
from prefill_guard.testing import AnthropicEmulator

from ..conftest import require
from .conftest import assert_repaired

instructor = require("instructor")

import anthropic  # noqa: E402
import pydantic  # noqa: E402

from prefill_guard import guard  # noqa: E402


class CatName(pydantic.BaseModel):
    name: str


HISTORY: list[Any] = [
    {"role": "user", "content": "Name a grey cat."},
    {"role": "assistant", "content": "Here is a name:"},
]


def _name(client: anthropic.Anthropic, emulator: AnthropicEmulator) -> str:
    emulator.reply_with('{"name": "Ash"}')
    patched = instructor.from_anthropic(client, mode=instructor.Mode.ANTHROPIC_JSON)
    result = patched.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=64,
        response_model=CatName,
        max_retries=0,  # Instructor's own validation retries: none, to count requests
        messages=list(HISTORY),
    )
    name: str = result.name
    return name


def test_fails_without_prefill_guard(emulator_env: AnthropicEmulator) -> None:
    """Control: the structured call with a history ending in an assistant turn is rejected."""
    with pytest.raises(Exception, match="assistant message prefill"):
        _name(anthropic.Anthropic(), emulator_env)
    assert len(emulator_env.message_requests) == 1


def test_recovers_with_a_guarded_client(emulator_env: AnthropicEmulator) -> None:
    """from_anthropic(guard(client)): the response model is parsed from the repaired reply."""
    assert _name(guard(anthropic.Anthropic(), [PrefillErrorHandler()]), emulator_env) == "Ash"
    assert_repaired(emulator_env)


def test_recovers_after_install(emulator_env: AnthropicEmulator) -> None:
    """install(), then a client made as usual."""
    install([PrefillErrorHandler()])
    assert _name(anthropic.Anthropic(), emulator_env) == "Ash"
    assert len(emulator_env.message_requests) == 2
