"""Agent.stream() / Agent.astream(): the stream API itself (the fault matrix is elsewhere)."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest

from prefill_guard import (
    Agent,
    MessageList,
    PrefillErrorHandler,
    ProcessAPIErrorResult,
    partial_text,
)
from prefill_guard.testing import DEFAULT_REPLY_TEXT, AnthropicEmulator, Fault

from .conftest import AsyncPrefillRepair

MODEL = "claude-opus-4-6"
ENDS_WITH_ASSISTANT = [
    {"role": "user", "content": "Write a haiku."},
    {"role": "assistant", "content": "Here is one"},
]
EVENT_ORDER = [
    "message_start",
    "content_block_start",
    *["content_block_delta", "text"] * len(DEFAULT_REPLY_TEXT.split()),
    "content_block_stop",
    "message_delta",
    "message_stop",
]


def test_events_text_and_result(anthropic_emulator: AnthropicEmulator) -> None:
    """Events come in the API's order (with the SDK's text events); result is a RunResult."""
    conversation = MessageList(ENDS_WITH_ASSISTANT)
    with anthropic_emulator.client() as client:
        agent = Agent(MODEL, client=client, error_processors=[PrefillErrorHandler()])
        with agent.stream(conversation) as stream:
            types = [event.type for event in stream]
            final = stream.get_final_message()
            result = stream.result
    assert types == EVENT_ORDER
    assert final.content[0].type == "text"
    assert result.text == DEFAULT_REPLY_TEXT
    assert result.message is final
    assert result.messages is conversation
    assert conversation[-1]["content"] == [{"type": "text", "text": DEFAULT_REPLY_TEXT}]
    assert result.retried_by == ("prefill-error-handler",)


async def test_async_text_stream_and_final_message(anthropic_emulator: AnthropicEmulator) -> None:
    """The async twin yields the text and the final message; nothing is sent before entry."""
    async with anthropic_emulator.async_client() as client:
        agent = Agent(MODEL, client=client, error_processors=[PrefillErrorHandler()])
        manager = agent.astream(ENDS_WITH_ASSISTANT)
        assert anthropic_emulator.message_requests == []
        async with manager as stream:
            text = "".join([t async for t in stream.text_stream])
            final = await stream.get_final_message()
    assert text == DEFAULT_REPLY_TEXT
    assert final.content[0].type == "text"
    assert len(anthropic_emulator.message_requests) == 2
    assert all(r.body["stream"] is True for r in anthropic_emulator.message_requests)


def test_get_final_message_without_iterating(anthropic_emulator: AnthropicEmulator) -> None:
    """get_final_message() alone reads the stream to the end."""
    with anthropic_emulator.client() as client, Agent(MODEL, client=client).stream("hi") as stream:
        assert stream.get_final_message().content[0].type == "text"
        assert stream.result.text == DEFAULT_REPLY_TEXT
        assert list(stream) == []  # already finished: nothing more to give


def test_result_before_the_end_is_a_clear_error(anthropic_emulator: AnthropicEmulator) -> None:
    """Asking for the result too early says what to do."""
    with anthropic_emulator.client() as client, Agent(MODEL, client=client).stream("hi") as stream:
        with pytest.raises(RuntimeError, match="has not finished"):
            _ = stream.result
        stream.get_final_message()


def test_misuse_is_a_clear_error(anthropic_emulator: AnthropicEmulator) -> None:
    """Iterating before entering, or entering twice, raises RuntimeError with the fix."""
    with anthropic_emulator.client() as client:
        stream = Agent(MODEL, client=client).stream("hi")
        with pytest.raises(RuntimeError, match="enter the stream first"):
            next(iter(stream))
        with stream:
            stream.get_final_message()
            with pytest.raises(RuntimeError, match="already entered"):
                stream.__enter__()


def test_sse_error_before_content_is_invisible_to_the_consumer(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """An overloaded event before any text: the consumer sees one clean stream of events."""
    anthropic_emulator.script(Fault.sse_error())
    with anthropic_emulator.client() as client:
        agent = Agent(MODEL, client=client, sleep=lambda seconds: None)
        with agent.stream("hi") as stream:
            types = [event.type for event in stream]
    assert types.count("message_start") == 1
    assert len(anthropic_emulator.message_requests) == 2


async def test_async_processor_runs_in_astream(anthropic_emulator: AnthropicEmulator) -> None:
    """astream awaits async def processors, like agenerate."""

    async with anthropic_emulator.async_client() as client:
        agent = Agent(MODEL, client=client, error_processors=[AsyncPrefillRepair()])
        async with agent.astream(ENDS_WITH_ASSISTANT) as stream:
            await stream.get_final_message()
    assert stream.result.retried_by == ("async-repair",)


def test_sync_stream_refuses_async_processors(anthropic_emulator: AnthropicEmulator) -> None:
    """stream() is synchronous: an async processor is refused before anything is sent."""

    class AsyncOnly:
        id = "async-only"

        async def process_api_error(self, **kwargs: Any) -> ProcessAPIErrorResult | None:
            return None

    with anthropic_emulator.client() as client:
        agent = Agent(MODEL, client=client, error_processors=[AsyncOnly()])
        with pytest.raises(TypeError, match=r"Agent.stream\(\) is synchronous"):
            agent.stream("hi")
    assert anthropic_emulator.message_requests == []


def test_stream_with_a_wrong_client_kind(anthropic_emulator: AnthropicEmulator) -> None:
    """stream() needs a sync client, astream() an async one."""
    with anthropic_emulator.client() as client, pytest.raises(TypeError, match="async client"):
        Agent(MODEL, client=client).astream("hi")
    aclient = anthropic.AsyncAnthropic(api_key="k", base_url=anthropic_emulator.base_url)
    with pytest.raises(TypeError, match="synchronous client"):
        Agent(MODEL, client=aclient).stream("hi")


def test_using_a_stream_after_its_block_is_a_clear_error(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """After the with block closed it, an unfinished stream raises and stores nothing."""
    conversation = MessageList([{"role": "user", "content": "hi"}])
    with anthropic_emulator.client() as client:
        with Agent(MODEL, client=client).stream(conversation) as stream:
            pass
        with pytest.raises(RuntimeError, match="closed before it finished; nothing more was"):
            stream.get_final_message()
    assert len(conversation) == 1


async def test_breaking_out_early_stores_nothing(anthropic_emulator: AnthropicEmulator) -> None:
    """A consumer that stops after the first text: no reply stored, the stream is closed."""
    conversation = MessageList([{"role": "user", "content": "hi"}])
    async with anthropic_emulator.async_client() as client:
        async with Agent(MODEL, client=client).astream(conversation) as stream:
            async for _ in stream.text_stream:
                break
        with pytest.raises(RuntimeError, match="closed before it finished"):
            await stream.get_final_message()
    assert len(conversation) == 1


def test_final_message_after_partial_iteration(anthropic_emulator: AnthropicEmulator) -> None:
    """Reading some text, then get_final_message(): the whole reply, stored once."""
    conversation = MessageList([{"role": "user", "content": "hi"}])
    with (
        anthropic_emulator.client() as client,
        Agent(MODEL, client=client).stream(conversation) as stream,
    ):
        first = next(iter(stream.text_stream))
        final = stream.get_final_message()
    assert DEFAULT_REPLY_TEXT.startswith(first)
    assert final.content[0].type == "text"
    assert final.content[0].text == DEFAULT_REPLY_TEXT
    assert len(conversation) == 2


def test_streamed_attempts_record_the_request_id(anthropic_emulator: AnthropicEmulator) -> None:
    """The successful streamed attempt carries the response's request-id, like generate's."""
    with anthropic_emulator.client() as client, Agent(MODEL, client=client).stream("hi") as stream:
        stream.get_final_message()
    request_id = stream.result.attempts[-1].request_id
    assert request_id is not None
    assert request_id.startswith("req_")


def _sse(*events: dict[str, Any]) -> bytes:
    return b"".join(
        f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode() for event in events
    )


_START = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    },
}
_BLOCK = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
_DELTA = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}
SSE = {"content-type": "text/event-stream"}
_BAD_BODIES = {
    "malformed-json": _sse(_START) + b"event: content_block_start\ndata: {oops\n\n",
    "invalid-utf8": _sse(_START) + b'event: ping\ndata: {"type": "ping", "x": "\xff"}\n\n',
}


async def _stream_text(emulator: AnthropicEmulator, driver: str, **kwargs: Any) -> str:
    if driver == "stream":
        with emulator.client() as client:
            agent = Agent(MODEL, client=client, **kwargs)
            with agent.stream("hi") as stream:
                return "".join(stream.text_stream)
    async with (
        emulator.async_client() as aclient,
        Agent(MODEL, client=aclient, **kwargs).astream("hi") as astream,
    ):
        return "".join([text async for text in astream.text_stream])


@pytest.mark.parametrize("driver", ["stream", "astream"])
async def test_a_content_encoding_failure_before_content_is_retried(
    anthropic_emulator: AnthropicEmulator, driver: str
) -> None:
    """A body that lies about being gzip: an APIConnectionError (raw httpx2.DecodingError
    before), retried as generate retries it; the consumer sees only the good reply."""
    anthropic_emulator.script(
        Fault(200, body=_sse(_START), headers={**SSE, "content-encoding": "gzip"})
    )
    text = await _stream_text(anthropic_emulator, driver, sleep=lambda _: None)
    assert text == DEFAULT_REPLY_TEXT
    assert len(anthropic_emulator.message_requests) == 2


@pytest.mark.parametrize("driver", ["stream", "astream"])
@pytest.mark.parametrize("fault", sorted(_BAD_BODIES))
async def test_events_that_are_not_json_text_are_the_sdks_validation_error(
    anthropic_emulator: AnthropicEmulator, driver: str, fault: str
) -> None:
    """Malformed JSON or invalid UTF-8 in an event: APIResponseValidationError (raw
    JSONDecodeError / UnicodeDecodeError before), as for the same body without a stream."""
    anthropic_emulator.script(Fault(200, body=_BAD_BODIES[fault], headers=SSE))
    with pytest.raises(anthropic.APIResponseValidationError, match="not valid JSON text"):
        await _stream_text(anthropic_emulator, driver)
    assert len(anthropic_emulator.message_requests) == 1


async def test_a_bad_event_after_content_keeps_the_partial_text_on_the_error(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """After content has reached the consumer: the converted error, the text so far on it."""
    body = _sse(_START, _BLOCK, _DELTA) + b"event: content_block_delta\ndata: {oops\n\n"
    anthropic_emulator.script(Fault(200, body=body, headers=SSE))
    with pytest.raises(anthropic.APIResponseValidationError) as info:
        await _stream_text(anthropic_emulator, "stream")
    assert partial_text(info.value) == "Hi"
