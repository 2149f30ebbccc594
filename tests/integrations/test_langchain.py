"""LangChain's ChatAnthropic builds its own client: fixed with install(), no code change."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from prefill_guard import PrefillErrorHandler, install, uninstall
from prefill_guard.testing import DEFAULT_REPLY_TEXT, AnthropicEmulator, Fault

from ..conftest import require

require("langchain_anthropic")

from langchain_anthropic import ChatAnthropic  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage  # noqa: E402
from pydantic import SecretStr  # noqa: E402

CONVERSATION = [HumanMessage("Write a haiku."), AIMessage("Here is one")]


@pytest.fixture(autouse=True)
def _uninstall_after() -> Iterator[None]:
    yield
    uninstall()


def _chat(emulator: AnthropicEmulator, model: str = "claude-opus-4-6") -> Any:
    return ChatAnthropic(  # type: ignore[call-arg]
        model=model,
        api_key=SecretStr("k"),
        base_url=emulator.base_url,
        max_retries=0,
        max_tokens=64,
    )


def test_fails_without_prefill_guard(anthropic_emulator: AnthropicEmulator) -> None:
    """Control: ChatAnthropic on a 4.6 model with a trailing AI message gets the 400."""
    with pytest.raises(Exception, match="assistant message prefill"):
        _chat(anthropic_emulator).invoke(CONVERSATION)
    assert len(anthropic_emulator.message_requests) == 1


def test_invoke_recovers_with_install(anthropic_emulator: AnthropicEmulator) -> None:
    """install() before the model is made: invoke() succeeds with the reactive repair."""
    install([PrefillErrorHandler()])
    assert _chat(anthropic_emulator).invoke(CONVERSATION).content == DEFAULT_REPLY_TEXT
    wire = [r.body["messages"][-1] for r in anthropic_emulator.message_requests]
    assert wire[-1] == {"role": "user", "content": "<system-reminder>continue</system-reminder>"}
    assert len(wire) == 2


async def test_ainvoke_and_astream_recover(anthropic_emulator: AnthropicEmulator) -> None:
    """The async client LangChain makes is guarded too, streaming or not."""
    install([PrefillErrorHandler()])
    chat = _chat(anthropic_emulator)
    assert (await chat.ainvoke(CONVERSATION)).content == DEFAULT_REPLY_TEXT
    chunks = [chunk.content async for chunk in chat.astream(CONVERSATION)]
    assert "".join(str(c) for c in chunks) == DEFAULT_REPLY_TEXT
    assert len(anthropic_emulator.message_requests) == 4


def test_stream_recovers_with_the_default_stack(anthropic_emulator: AnthropicEmulator) -> None:
    """With the recommended stack, a known 4.6 model needs one request per conversation."""
    install()
    text = "".join(str(chunk.content) for chunk in _chat(anthropic_emulator).stream(CONVERSATION))
    assert text == DEFAULT_REPLY_TEXT
    assert len(anthropic_emulator.message_requests) == 1


def test_install_does_not_multiply_retries(anthropic_emulator: AnthropicEmulator) -> None:
    """Under a persistent 529, ChatAnthropic(max_retries=2) makes 3 requests with or without
    the guard: the middleware leaves transient errors to the SDK's own retry loop."""
    counts = []
    for guarded in (False, True):
        if guarded:
            install()
        anthropic_emulator.reset()
        anthropic_emulator.script(*[Fault(529, headers={"retry-after-ms": "1"})] * 10)
        chat = ChatAnthropic(  # type: ignore[call-arg]
            model="claude-opus-4-6",
            api_key=SecretStr("k"),
            base_url=anthropic_emulator.base_url,
            max_retries=2,
            max_tokens=64,
        )
        with pytest.raises(Exception, match=r"(?i)overloaded"):
            chat.invoke(CONVERSATION)
        counts.append(len(anthropic_emulator.message_requests))
    assert counts == [3, 3]
