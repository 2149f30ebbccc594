"""DSPy's LM calls LiteLLM (with engine="litellm"): install() reaches it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from prefill_guard import PrefillErrorHandler, install, uninstall
from prefill_guard.testing import DEFAULT_REPLY_TEXT, AnthropicEmulator

from ..conftest import require

dspy = require("dspy")
require("litellm")

MODEL = "anthropic/claude-sonnet-4-6"


@pytest.fixture(autouse=True)
def _always_uninstall() -> Iterator[None]:
    yield
    uninstall()


def _lm(emulator: AnthropicEmulator) -> Any:
    # engine="litellm": DSPy's default engine ("auto") may call providers without LiteLLM.
    # cache=False: every call reaches the emulator.
    return dspy.LM(MODEL, api_base=emulator.base_url, api_key="k", engine="litellm", cache=False)


def _ends_with_assistant() -> Any:
    """A request whose conversation ends with the model's own turn (DSPy's normalized API)."""
    lm15 = dspy.lm15
    turns = (lm15.Message.user("Write a haiku."), lm15.Message.assistant("Here is one"))
    return lm15.Request(model=MODEL, messages=turns)


def test_fails_without_prefill_guard(anthropic_emulator: AnthropicEmulator) -> None:
    """Control: the LM call gets the prefill 400 through LiteLLM."""
    with pytest.raises(Exception, match="assistant message prefill"):
        _lm(anthropic_emulator)(_ends_with_assistant())
    assert len(anthropic_emulator.message_requests) == 1


def test_an_lm_call_recovers_after_install(anthropic_emulator: AnthropicEmulator) -> None:
    """After install() the call is repaired in LiteLLM's transport and DSPy gets the reply."""
    install([PrefillErrorHandler()])
    assert _lm(anthropic_emulator)(_ends_with_assistant()).text == DEFAULT_REPLY_TEXT
    assert len(anthropic_emulator.message_requests) == 2


async def test_an_async_lm_call_recovers_after_install(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """LM.acall goes through litellm.acompletion: the guarded async client."""
    install()
    response = await _lm(anthropic_emulator).acall(_ends_with_assistant())
    assert response.text == DEFAULT_REPLY_TEXT
    assert len(anthropic_emulator.message_requests) == 1
