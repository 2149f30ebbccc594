"""openai-agents' LitellmModel calls litellm.acompletion: install() reaches it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from prefill_guard import PrefillErrorHandler, install, uninstall
from prefill_guard.testing import DEFAULT_REPLY_TEXT, AnthropicEmulator

from ..conftest import require

agents = require("agents")
require("litellm")

from agents.extensions.models.litellm_model import LitellmModel  # noqa: E402

# A history that ends with the agent's own turn, as a resumed or handed-off run has it.
HISTORY: list[Any] = [
    {"role": "user", "content": "Write a haiku."},
    {"role": "assistant", "content": "Here is one"},
]


@pytest.fixture(autouse=True)
def _setup() -> Iterator[None]:
    agents.set_tracing_disabled(True)  # offline: no traces sent to OpenAI
    yield
    uninstall()


def _agent(emulator: AnthropicEmulator) -> Any:
    model = LitellmModel("anthropic/claude-sonnet-4-6", base_url=emulator.base_url, api_key="k")
    return agents.Agent(name="poet", instructions="Write short poems.", model=model)


async def test_fails_without_prefill_guard(anthropic_emulator: AnthropicEmulator) -> None:
    """Control: Runner.run with the history gets the prefill 400 through LiteLLM."""
    with pytest.raises(Exception, match="assistant message prefill"):
        await agents.Runner.run(_agent(anthropic_emulator), list(HISTORY))
    assert len(anthropic_emulator.message_requests) == 1


async def test_runner_run_recovers_after_install(anthropic_emulator: AnthropicEmulator) -> None:
    """After install() the run's model call is repaired and the agent answers."""
    install([PrefillErrorHandler()])
    result = await agents.Runner.run(_agent(anthropic_emulator), list(HISTORY))
    assert result.final_output == DEFAULT_REPLY_TEXT
    assert len(anthropic_emulator.message_requests) == 2


async def test_a_streamed_run_recovers_after_install(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """Runner.run_streamed: the streamed model call goes through the same guarded client."""
    install()
    result = agents.Runner.run_streamed(_agent(anthropic_emulator), list(HISTORY))
    async for _ in result.stream_events():
        pass
    assert result.final_output == DEFAULT_REPLY_TEXT
    assert len(anthropic_emulator.message_requests) == 1
