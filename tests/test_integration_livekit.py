"""LiveKit's Anthropic plugin takes a ready client; its own model list misses newer models.

Runs in the second CI environment (livekit-plugins-anthropic needs anthropic<2, pinned there to
the lowest anthropic version prefill_guard supports).
"""

from __future__ import annotations

import anthropic
import pytest

from prefill_guard import PrefillErrorHandler, guard
from prefill_guard.testing import DEFAULT_REPLY_TEXT, AnthropicEmulator

from .conftest import require

require("livekit.plugins.anthropic")

from livekit.agents import APIConnectOptions  # noqa: E402
from livekit.agents import llm as lk_llm  # noqa: E402
from livekit.plugins import anthropic as lk_anthropic  # noqa: E402

MODEL = "claude-opus-4-7"  # a no-prefill model that LiveKit's own list does not cover


async def _chat(client: anthropic.AsyncAnthropic) -> str:
    ctx = lk_llm.ChatContext()
    ctx.add_message(role="user", content="Write a haiku.")
    ctx.add_message(role="assistant", content="Here is one")
    model = lk_anthropic.LLM(model=MODEL, client=client, api_key="k")
    pieces = []
    async with model.chat(chat_ctx=ctx, conn_options=APIConnectOptions(max_retry=0)) as stream:
        async for chunk in stream:
            if chunk.delta and chunk.delta.content:
                pieces.append(chunk.delta.content)
    return "".join(pieces)


async def test_fails_without_prefill_guard(anthropic_emulator: AnthropicEmulator) -> None:
    """Control: LiveKit sends the trailing assistant turn for claude-opus-4-7 and gets a 400."""
    async with anthropic_emulator.async_client() as client:
        with pytest.raises(Exception, match="assistant message prefill"):
            await _chat(client)
    assert len(anthropic_emulator.message_requests) == 1


async def test_recovers_with_a_guarded_client(anthropic_emulator: AnthropicEmulator) -> None:
    """LLM(client=guard(...)) streams the reply after the reactive repair."""
    async with anthropic_emulator.async_client() as client:
        assert await _chat(guard(client, [PrefillErrorHandler()])) == DEFAULT_REPLY_TEXT
    assert len(anthropic_emulator.message_requests) == 2
