"""Tests for prefill_guard.testing.transport: the emulator in memory, through the real SDK.

No emulator here is started: every request goes through `AnthropicEmulator.transport` (an
`httpx2.MockTransport` over the same responder as the HTTP server), except where a test
compares the two.
"""

from __future__ import annotations

import re
import time
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types import Message

from prefill_guard import Agent, PrefillErrorHandler, RunResult, api_error_type, api_message
from prefill_guard.testing import DEFAULT_REPLY_TEXT, AnthropicEmulator, Fault, RecordedRequest

from .conftest import (
    PREFILL_TEXT,
    REPLY_CHUNKS,
    USER_HI,
    assert_bad_request,
    assert_error_shape,
    astream_text,
    create,
    stream_text,
)

ENDS_WITH_ASSISTANT: list[Any] = [
    {"role": "user", "content": "Write a haiku."},
    {"role": "assistant", "content": "Here is one"},
]
REMINDER_ON_WIRE = {"role": "user", "content": "<system-reminder>continue</system-reminder>"}


def comparable(requests: list[RecordedRequest]) -> list[tuple[str, str, Any, dict[str, str]]]:
    """Recorded requests without the one field that names the server: the Host header."""
    return [
        (r.method, r.path, r.body, {k: v for k, v in r.headers.items() if k != "host"})
        for r in requests
    ]


def test_sync_reply_needs_no_start_and_is_recorded() -> None:
    """An in-memory client gets the normal reply from an emulator that never started."""
    emu = AnthropicEmulator()
    with emu.client(in_memory=True) as client:
        message = create(client, "claude-haiku-4-5", USER_HI)

    assert not emu.running
    assert isinstance(message, Message)
    assert message.id.startswith("msg_")
    assert message.content[0].type == "text"
    assert message.content[0].text == DEFAULT_REPLY_TEXT
    [recorded] = emu.message_requests
    assert recorded.method == "POST"
    assert recorded.path == "/v1/messages"
    assert recorded.body == {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": USER_HI}
    assert recorded.headers["host"] == "emulator.invalid"


async def test_async_reply_needs_no_start_and_is_recorded() -> None:
    """The async in-memory client gets the same reply, recorded as an async request."""
    emu = AnthropicEmulator()
    async with emu.async_client(in_memory=True) as client:
        message = await client.messages.create(
            model="claude-haiku-4-5", max_tokens=64, messages=USER_HI
        )

    assert message.content[0].type == "text"
    assert message.content[0].text == DEFAULT_REPLY_TEXT
    [recorded] = emu.message_requests
    assert recorded.headers.get("x-stainless-async", "").startswith("async")


def test_prefill_gets_the_api_400() -> None:
    """A trailing assistant turn on a 4.6+ model: the API's exact prefill 400, as over HTTP."""
    with (
        AnthropicEmulator().client(in_memory=True) as client,
        pytest.raises(anthropic.BadRequestError) as info,
    ):
        create(client, "claude-opus-4-6", ENDS_WITH_ASSISTANT)
    assert_bad_request(info.value, PREFILL_TEXT)
    assert info.value.response.headers["request-id"] == info.value.request_id


async def test_async_prefill_gets_the_api_400() -> None:
    """The async in-memory client raises the same BadRequestError."""
    async with AnthropicEmulator().async_client(in_memory=True) as client:
        with pytest.raises(anthropic.BadRequestError) as info:
            await client.messages.create(
                model="claude-opus-4-7", max_tokens=8, messages=ENDS_WITH_ASSISTANT
            )
    assert_bad_request(info.value, PREFILL_TEXT)


def test_stream_gives_the_reply_in_deltas_and_a_final_message() -> None:
    """messages.stream: one text delta per word, and the same final message as create()."""
    emu = AnthropicEmulator()
    received: list[str] = []
    with emu.client(in_memory=True) as client:
        stream_text(client, received)
        with client.messages.stream(
            model="claude-haiku-4-5", max_tokens=64, messages=USER_HI
        ) as stream:
            types = [event.type for event in stream]
            final = stream.get_final_message()
    assert received == REPLY_CHUNKS
    assert types[0] == "message_start"
    assert types[-1] == "message_stop"
    assert final.content[0].type == "text"
    assert final.content[0].text == DEFAULT_REPLY_TEXT
    assert final.stop_reason == "end_turn"
    assert [r.body.get("stream") for r in emu.message_requests] == [True, True]


async def test_async_stream_gives_the_reply_in_deltas() -> None:
    """The async stream gives the same deltas."""
    received: list[str] = []
    async with AnthropicEmulator().async_client(in_memory=True) as client:
        await astream_text(client, received)
    assert received == REPLY_CHUNKS


def test_scripted_529_then_success() -> None:
    """A scripted 529 (with its headers) is answered once, then the normal reply."""
    emu = AnthropicEmulator()
    emu.script(Fault(529, headers={"retry-after": "2"}))
    with emu.client(in_memory=True) as client:
        with pytest.raises(anthropic.OverloadedError) as info:
            create(client, "claude-haiku-4-5", USER_HI)
        assert create(client, "claude-haiku-4-5", USER_HI).content[0].type == "text"
    assert info.value.status_code == 529
    assert info.value.response.headers["retry-after"] == "2"
    assert info.value.response.reason_phrase == "Overloaded"
    assert_error_shape(info.value.body, "overloaded_error", "Overloaded")
    assert len(emu.message_requests) == 2
    assert emu.pending_faults == []


def test_sse_error_fault_raises_status_200_after_the_chosen_deltas() -> None:
    """Fault.sse_error(after_deltas=2): two text chunks, then the SDK's APIStatusError 200."""
    emu = AnthropicEmulator()
    emu.script(Fault.sse_error(after_deltas=2))
    received: list[str] = []
    with emu.client(in_memory=True) as client, pytest.raises(anthropic.APIStatusError) as info:
        stream_text(client, received)
    assert type(info.value) is anthropic.APIStatusError
    assert info.value.status_code == 200
    assert api_error_type(info.value) == "overloaded_error"
    assert api_message(info.value) == "Overloaded"
    assert received == REPLY_CHUNKS[:2]


def test_disconnect_mid_stream_raises_remote_protocol_error() -> None:
    """A stream cut after one delta: one chunk, then httpx2.RemoteProtocolError, as over HTTP."""
    emu = AnthropicEmulator()
    emu.script(Fault.disconnect(after_deltas=1))
    received: list[str] = []
    with emu.client(in_memory=True) as client:
        with pytest.raises(httpx2.RemoteProtocolError, match="incomplete chunked read"):
            stream_text(client, received)
        assert received == REPLY_CHUNKS[:1]
        after: list[str] = []
        stream_text(client, after)
    assert after == REPLY_CHUNKS


async def test_async_disconnect_mid_stream_raises_remote_protocol_error() -> None:
    """The async SDK also sees the RemoteProtocolError after the one chunk."""
    emu = AnthropicEmulator()
    emu.script(Fault.disconnect(after_deltas=1))
    received: list[str] = []
    async with emu.async_client(in_memory=True) as client:
        with pytest.raises(httpx2.RemoteProtocolError, match="incomplete chunked read"):
            await astream_text(client, received)
    assert received == REPLY_CHUNKS[:1]


def test_disconnect_of_a_plain_body_raises_api_connection_error() -> None:
    """Half a JSON body, then the dropped connection: APIConnectionError from the protocol error."""
    emu = AnthropicEmulator()
    emu.script(Fault.disconnect())
    with (
        emu.client(in_memory=True) as client,
        pytest.raises(anthropic.APIConnectionError) as info,
    ):
        create(client, "claude-haiku-4-5", USER_HI)
    assert type(info.value) is anthropic.APIConnectionError
    assert isinstance(info.value.__cause__, httpx2.RemoteProtocolError)
    assert re.search(r"\(received \d+ bytes, expected \d+\)$", str(info.value.__cause__))


def test_clean_disconnect_ends_a_stream_early_without_an_error() -> None:
    """Fault.disconnect(clean=True): the stream just ends, before message_stop."""
    emu = AnthropicEmulator()
    emu.script(Fault.disconnect(after_deltas=1, clean=True))
    with (
        emu.client(in_memory=True) as client,
        client.messages.stream(model="claude-haiku-4-5", max_tokens=8, messages=USER_HI) as stream,
    ):
        types = [event.type for event in stream]
    assert "message_stop" not in types
    assert types.count("content_block_delta") == 1


def test_a_stall_sleeps_its_seconds_whatever_the_client_timeout() -> None:
    """In memory a stall is a plain sleep: a shorter client timeout does not end it early."""
    emu = AnthropicEmulator()
    emu.script(Fault.stall(0.2))
    started = time.monotonic()
    with emu.client(in_memory=True, timeout=0.05) as client:
        message = create(client, "claude-haiku-4-5", USER_HI)
    assert time.monotonic() - started >= 0.2
    assert message.content[0].type == "text"


def http_and_memory_calls(client: anthropic.Anthropic, emu: AnthropicEmulator) -> None:
    """The same calls for both transports: a reply, a stream, a 400, a fault, a dropped stream."""
    create(client, "claude-haiku-4-5", USER_HI)
    stream_text(client, [])
    with pytest.raises(anthropic.BadRequestError):
        create(client, "claude-opus-4-6", ENDS_WITH_ASSISTANT)
    emu.script(Fault(529), Fault.disconnect(after_deltas=1))
    with pytest.raises(anthropic.OverloadedError):
        client.messages.create(
            model="claude-haiku-4-5",
            max_tokens=64,
            messages=USER_HI,
            extra_headers={"x-conversation": "c1"},
        )
    with pytest.raises(httpx2.RemoteProtocolError):
        stream_text(client, [])


def test_recorded_requests_equal_what_the_http_emulator_records() -> None:
    """The same calls are recorded alike over HTTP and in memory (the Host header aside)."""
    with AnthropicEmulator() as over_http, over_http.client() as client:
        http_and_memory_calls(client, over_http)
    in_memory = AnthropicEmulator()
    with in_memory.client(in_memory=True) as client:
        http_and_memory_calls(client, in_memory)

    assert len(in_memory.requests) == 5
    assert comparable(in_memory.requests) == comparable(over_http.requests)


def test_http_and_memory_share_one_emulator() -> None:
    """A started emulator answers both ways from one record and one queue of faults."""
    with AnthropicEmulator() as emu:
        emu.script(Fault(529))
        with emu.client(in_memory=True) as memory, emu.client() as http:
            with pytest.raises(anthropic.OverloadedError):
                create(memory, "claude-haiku-4-5", USER_HI)
            assert create(http, "claude-haiku-4-5", USER_HI).content[0].type == "text"
    assert [r.headers["host"] for r in emu.message_requests] == [
        "emulator.invalid",
        f"127.0.0.1:{emu.port}",
    ]


def test_framing_matches_the_server() -> None:
    """A chunked (streamed) request body gets the server's 411, unrecorded; HEAD has no body;
    an unknown path gets 404."""
    emu = AnthropicEmulator()
    with httpx2.Client(transport=emu.transport(), base_url="http://emulator.invalid") as http:
        chunked = http.post("/v1/messages", content=iter([b"{}"]), headers={"x-api-key": "k"})
        head = http.head("/v1/messages")
        missing = http.get("/v1/files")
    assert chunked.status_code == 411
    assert_error_shape(
        chunked.json(),
        "invalid_request_error",
        "chunked request bodies are not accepted: send the body with a Content-Length header",
    )
    assert (head.status_code, head.content) == (404, b"")
    assert missing.status_code == 404
    assert_error_shape(missing.json(), "not_found_error", "Not Found")
    assert [(r.method, r.path) for r in emu.requests] == [
        ("HEAD", "/v1/messages"),
        ("GET", "/v1/files"),
    ]


def assert_recovered(result: RunResult, emu: AnthropicEmulator) -> None:
    wire = [r.body["messages"] for r in emu.message_requests]
    assert wire == [ENDS_WITH_ASSISTANT, [*ENDS_WITH_ASSISTANT, REMINDER_ON_WIRE]]
    assert result.text == DEFAULT_REPLY_TEXT
    assert result.retried_by == ("prefill-error-handler",)


def test_agent_recovers_a_prefill_in_two_requests() -> None:
    """An Agent with PrefillErrorHandler: the 400, the reminder, the retry; two requests."""
    emu = AnthropicEmulator()
    with emu.client(in_memory=True) as client:
        agent = Agent("claude-opus-4-6", client=client, error_processors=[PrefillErrorHandler()])
        result = agent.generate(ENDS_WITH_ASSISTANT)
    assert_recovered(result, emu)


async def test_async_agent_recovers_a_prefill_in_two_requests() -> None:
    """The async twin takes the same two requests in memory."""
    emu = AnthropicEmulator()
    async with emu.async_client(in_memory=True) as client:
        agent = Agent("claude-opus-4-6", client=client, error_processors=[PrefillErrorHandler()])
        result = await agent.agenerate(ENDS_WITH_ASSISTANT)
    assert_recovered(result, emu)
