"""LiveKit's Anthropic plugin takes a ready client; its own model list misses newer models.

Runs in the second CI environment (livekit-plugins-anthropic needs anthropic<2, pinned there to
the lowest anthropic version prefill_guard supports).
"""

from __future__ import annotations

import anthropic
import pytest

from prefill_guard import PrefillErrorHandler, guard
from prefill_guard.testing import DEFAULT_REPLY_TEXT, AnthropicEmulator, Fault

from ..conftest import require

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


async def _chat_with_retries(model: lk_anthropic.LLM) -> None:
    ctx = lk_llm.ChatContext()
    ctx.add_message(role="user", content="Write a haiku.")
    options = APIConnectOptions(max_retry=3, retry_interval=0.01)
    async with model.chat(chat_ctx=ctx, conn_options=options) as stream:
        async for _ in stream:
            pass


async def test_the_recipe_does_not_multiply_retries(anthropic_emulator: AnthropicEmulator) -> None:
    """Under a persistent 529 the recipe's client (max_retries=0: LiveKit owns the retries)
    makes exactly as many requests as a client like the plugin's own (also max_retries=0): 4,
    1 + LiveKit's 3. The old recipe, guard(AsyncAnthropic()) with the SDK's 2 retries, made 12."""
    url = anthropic_emulator.base_url
    counts = []
    async with (
        anthropic.AsyncAnthropic(api_key="k", base_url=url, max_retries=0) as plugins_own,
        anthropic.AsyncAnthropic(api_key="k", base_url=url, max_retries=0) as recipe,
        anthropic.AsyncAnthropic(api_key="k", base_url=url) as old_recipe,
    ):
        for client in (plugins_own, guard(recipe), guard(old_recipe)):
            anthropic_emulator.reset()
            anthropic_emulator.script(*[Fault(529, headers={"retry-after-ms": "1"})] * 20)
            llm = lk_anthropic.LLM(model=MODEL, client=client, api_key="k")
            with pytest.raises(Exception, match=r"(?i)overloaded|529"):
                await _chat_with_retries(llm)
            counts.append(len(anthropic_emulator.message_requests))
    assert counts == [4, 4, 12]
