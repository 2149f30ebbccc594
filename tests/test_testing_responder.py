"""Tests for prefill_guard.testing.responder: the replies, streams and recorded requests, through
the real SDK over HTTP."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types import Message, ToolUseBlock

from prefill_guard import api_message, models
from prefill_guard.testing import (
    DEFAULT_REPLY_TEXT,
    AnthropicEmulator,
    Fault,
    RecordedRequest,
    tool_use,
)

from .conftest import (
    REPLY_CHUNKS,
    USER_HI,
    assert_error_shape,
    astream_text,
    create,
    raw_post,
    stream_text,
)

SDK_STREAM_EVENT_TYPES = [
    "message_start",
    "content_block_start",
    *["content_block_delta", "text"] * len(REPLY_CHUNKS),  # the SDK adds a `text` event per delta
    "content_block_stop",
    "message_delta",
    "message_stop",
]


def text_blocks(message: Message) -> list[tuple[str, str | None]]:
    """A message's content as (type, text) pairs, comparable across TextBlock subclasses."""
    return [(block.type, getattr(block, "text", None)) for block in message.content]


def test_sync_create_returns_message_with_reply_text(
    emu: AnthropicEmulator, client: anthropic.Anthropic
) -> None:
    """Sync SDK round trip: a plain user turn yields a Message with the default reply."""
    message = create(client, "claude-haiku-4-5", USER_HI)

    assert isinstance(message, Message)
    assert message.id.startswith("msg_")
    assert message.role == "assistant"
    assert message.model == "claude-haiku-4-5"
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert len(message.content) == 1
    block = message.content[0]
    assert block.type == "text"
    assert block.text == DEFAULT_REPLY_TEXT
    assert message.usage.input_tokens >= 1
    assert message.usage.output_tokens >= 1


def test_sync_request_is_recorded_with_body_and_lowercased_headers(
    emu: AnthropicEmulator, client: anthropic.Anthropic
) -> None:
    """The emulator records method, path, parsed JSON body and lower-cased headers."""
    create(client, "claude-haiku-4-5", USER_HI)

    [recorded] = emu.requests
    assert isinstance(recorded, RecordedRequest)
    assert recorded.method == "POST"
    assert recorded.path == "/v1/messages"
    assert recorded.body == {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": USER_HI}
    assert all(name == name.lower() for name in recorded.headers)
    assert "x-api-key" in recorded.headers or "authorization" in recorded.headers
    assert "anthropic-version" in recorded.headers
    assert emu.message_requests == [recorded]


async def test_async_create_returns_message_and_is_recorded(emu: AnthropicEmulator) -> None:
    """Async SDK round trip: AsyncAnthropic gets the reply and the request is recorded."""
    async with emu.async_client() as client:
        message = await client.messages.create(
            model="claude-haiku-4-5", max_tokens=64, messages=USER_HI
        )

    assert isinstance(message, Message)
    assert message.content[0].type == "text"
    assert message.content[0].text == DEFAULT_REPLY_TEXT
    [recorded] = emu.message_requests
    assert recorded.body["messages"] == USER_HI
    assert recorded.headers.get("x-stainless-async", "").startswith("async")


def test_success_response_carries_request_id_header_and_json_shape(
    client: anthropic.Anthropic,
) -> None:
    """A 200 answer has a req_ request-id header and exactly the Message JSON keys."""
    raw = client.messages.with_raw_response.create(
        model="claude-haiku-4-5", max_tokens=64, messages=USER_HI
    )

    assert raw.status_code == 200
    assert raw.headers["request-id"].startswith("req_")
    assert raw.headers["content-type"].startswith("application/json")
    data = json.loads(raw.http_response.text)
    assert set(data) == {
        "id",
        "type",
        "role",
        "model",
        "content",
        "stop_reason",
        "stop_sequence",
        "usage",
    }
    assert data["type"] == "message"
    assert data["content"] == [{"type": "text", "text": DEFAULT_REPLY_TEXT}]
    assert set(data["usage"]) == {"input_tokens", "output_tokens"}


def test_reply_callable_receives_parsed_request_body() -> None:
    """A callable `reply` is called with the request body and its result is the reply text."""
    seen: list[dict[str, Any]] = []

    def reply(body: dict[str, Any]) -> str:
        seen.append(body)
        return f"echo: {body['messages'][-1]['content']}"

    with AnthropicEmulator(reply=reply) as emu, emu.client() as client:
        message = create(client, "claude-haiku-4-5", [{"role": "user", "content": "ping"}])

    assert message.content[0].type == "text"
    assert message.content[0].text == "echo: ping"
    assert seen == [
        {
            "model": "claude-haiku-4-5",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "ping"}],
        }
    ]


def test_reply_callable_returning_non_text_gives_500() -> None:
    """A reply callable that returns something other than a reply (a str, or content blocks)
    surfaces as a 500 api_error."""
    with (
        AnthropicEmulator(reply=lambda body: None) as emu,  # type: ignore[arg-type,return-value]
        emu.client() as client,
        pytest.raises(anthropic.InternalServerError) as info,
    ):
        create(client, "claude-haiku-4-5", USER_HI)
    assert api_message(info.value) == (
        "emulator reply callable returned NoneType, not str or a list of content blocks"
    )


def test_reply_string_is_used_as_text() -> None:
    """A string `reply` replaces the default reply text."""
    with AnthropicEmulator(reply="Custom!") as emu, emu.client() as client:
        message = create(client, "claude-haiku-4-5", USER_HI)
    assert message.content[0].type == "text"
    assert message.content[0].text == "Custom!"


def test_non_json_body_is_recorded_as_text(emu: AnthropicEmulator) -> None:
    """A body that is not JSON is recorded as its raw text."""
    raw_post(emu, b"{not json", {"x-api-key": "k"})
    assert emu.requests[0].body == "{not json"


def test_unknown_path_gives_404(emu: AnthropicEmulator) -> None:
    """Any other path or method answers 404 not_found_error."""
    with httpx2.Client(base_url=emu.base_url) as http:
        get_files = http.get("/v1/files", headers={"x-api-key": "k"})
        get_messages = http.get("/v1/messages", headers={"x-api-key": "k"})
    for response in (get_files, get_messages):
        assert response.status_code == 404
        assert_error_shape(response.json(), "not_found_error", "Not Found")
    assert [(r.method, r.path) for r in emu.requests] == [
        ("GET", "/v1/files"),
        ("GET", "/v1/messages"),
    ]
    assert emu.message_requests == []


def test_sdk_stream_iteration_sees_events_in_order(client: anthropic.Anthropic) -> None:
    """client.messages.stream yields the API's events in order (the SDK drops ping)."""
    with client.messages.stream(
        model="claude-haiku-4-5", max_tokens=64, messages=USER_HI
    ) as stream:
        types = [event.type for event in stream]
    assert types == SDK_STREAM_EVENT_TYPES


def test_create_stream_true_yields_the_raw_events_in_order(client: anthropic.Anthropic) -> None:
    """create(stream=True) yields the raw events: the wire order without ping."""
    with client.messages.create(
        model="claude-haiku-4-5", max_tokens=64, messages=USER_HI, stream=True
    ) as stream:
        types = [event.type for event in stream]
    assert types == [event for event in SDK_STREAM_EVENT_TYPES if event != "text"]


def test_sdk_text_stream_joins_to_the_reply(client: anthropic.Anthropic) -> None:
    """text_stream gives one piece per word (with its trailing whitespace) of the reply."""
    received: list[str] = []
    stream_text(client, received)
    assert received == REPLY_CHUNKS
    assert "".join(received) == DEFAULT_REPLY_TEXT


def test_stream_final_message_equals_non_streaming_reply(client: anthropic.Anthropic) -> None:
    """get_final_message() has the same content, stop reason and output usage as create()."""
    plain = create(client, "claude-haiku-4-5", USER_HI)
    with client.messages.stream(
        model="claude-haiku-4-5", max_tokens=64, messages=USER_HI
    ) as stream:
        final = stream.get_final_message()

    assert final.id.startswith("msg_")
    assert final.model == plain.model == "claude-haiku-4-5"
    assert text_blocks(final) == text_blocks(plain) == [("text", DEFAULT_REPLY_TEXT)]
    assert final.stop_reason == plain.stop_reason == "end_turn"
    assert final.stop_sequence is None
    assert final.usage.input_tokens == plain.usage.input_tokens
    assert final.usage.output_tokens == plain.usage.output_tokens


async def test_async_text_stream_joins_to_the_reply(emu: AnthropicEmulator) -> None:
    """The async SDK streams the same text deltas."""
    received: list[str] = []
    async with emu.async_client() as client:
        await astream_text(client, received)
    assert received == REPLY_CHUNKS


async def test_async_stream_final_message_equals_non_streaming_reply(
    emu: AnthropicEmulator,
) -> None:
    """The async get_final_message() matches the async non-streaming reply."""
    async with emu.async_client() as client:
        plain = await client.messages.create(
            model="claude-haiku-4-5", max_tokens=64, messages=USER_HI
        )
        async with client.messages.stream(
            model="claude-haiku-4-5", max_tokens=64, messages=USER_HI
        ) as stream:
            final = await stream.get_final_message()
    assert text_blocks(final) == text_blocks(plain)
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == plain.usage.output_tokens


async def test_async_create_stream_true_yields_the_raw_events(emu: AnthropicEmulator) -> None:
    """Async create(stream=True) yields the raw events in order."""
    async with emu.async_client() as client:
        stream = await client.messages.create(
            model="claude-haiku-4-5", max_tokens=64, messages=USER_HI, stream=True
        )
        async with stream:
            types = [event.type async for event in stream]
    assert types == [event for event in SDK_STREAM_EVENT_TYPES if event != "text"]


@pytest.mark.parametrize(
    ("reply", "deltas"),
    [
        ("", []),
        ("one", ["one"]),
        ("a  b\n\nc", ["a  ", "b\n\n", "c"]),
        ("  lead and trail  ", ["  lead ", "and ", "trail  "]),
        ("   ", ["   "]),
    ],
    ids=["empty", "one-word", "inner-whitespace", "outer-whitespace", "whitespace-only"],
)
def test_stream_deltas_reassemble_any_reply_exactly(reply: str, deltas: list[str]) -> None:
    """Deltas are words with their whitespace; together they are exactly the reply."""
    with AnthropicEmulator(reply=reply) as emu, emu.client() as client:
        received: list[str] = []
        with client.messages.stream(
            model="claude-haiku-4-5", max_tokens=64, messages=USER_HI
        ) as stream:
            received.extend(stream.text_stream)
            final = stream.get_final_message()
        plain = create(client, "claude-haiku-4-5", USER_HI)
    assert received == deltas
    assert text_blocks(final) == text_blocks(plain) == [("text", reply)]


def test_stream_request_is_recorded_with_stream_true(
    emu: AnthropicEmulator, client: anthropic.Anthropic
) -> None:
    """A streamed request is recorded like any other, with "stream": true in its body."""
    stream_text(client, [])
    [recorded] = emu.message_requests
    assert recorded.body == {
        "model": "claude-haiku-4-5",
        "max_tokens": 64,
        "messages": USER_HI,
        "stream": True,
    }


def test_requests_property_returns_a_copy(
    emu: AnthropicEmulator, client: anthropic.Anthropic
) -> None:
    """Mutating the returned list does not change the emulator's record."""
    create(client, "claude-haiku-4-5", USER_HI)
    emu.requests.clear()
    assert len(emu.requests) == 1


def test_reset_clears_requests_and_pending_faults(
    emu: AnthropicEmulator, client: anthropic.Anthropic
) -> None:
    """reset() forgets recorded requests and drops queued faults."""
    create(client, "claude-haiku-4-5", USER_HI)
    emu.script(Fault(529))
    emu.reset()

    assert emu.requests == []
    assert emu.pending_faults == []
    assert create(client, "claude-haiku-4-5", USER_HI).content[0].type == "text"
    assert len(emu.requests) == 1


# -- replies that call tools, and the Models API ----------------------------------------------

WEATHER = tool_use("get_weather", {"city": "Oslo", "units": "metric"}, id="toolu_01")


def test_a_reply_can_call_a_tool(emu: AnthropicEmulator, client: anthropic.Anthropic) -> None:
    """A queued reply of text and tool_use blocks comes back as the SDK's blocks, with
    stop_reason tool_use; the next request gets the next reply, then the configured one."""
    emu.reply_with([{"type": "text", "text": "Let me check."}, WEATHER], "Sunny.")
    first = create(client, "claude-opus-4-6", USER_HI)
    assert first.stop_reason == "tool_use"
    assert [block.type for block in first.content] == ["text", "tool_use"]
    called = first.content[1]
    assert isinstance(called, ToolUseBlock)
    assert (called.id, called.name, called.input) == ("toolu_01", "get_weather", WEATHER["input"])
    assert create(client, "claude-opus-4-6", USER_HI).content[0].text == "Sunny."  # type: ignore[union-attr]
    assert create(client, "claude-opus-4-6", USER_HI).content[0].text == DEFAULT_REPLY_TEXT  # type: ignore[union-attr]


def test_a_streamed_tool_call_arrives_as_input_json_deltas(
    emu: AnthropicEmulator, client: anthropic.Anthropic
) -> None:
    """Streamed, the tool call is a tool_use block start, input_json_delta pieces and a stop;
    the SDK's accumulated message has the whole input."""
    emu.reply_with([{"type": "text", "text": "Checking."}, WEATHER])
    with client.messages.stream(model="claude-opus-4-6", max_tokens=64, messages=USER_HI) as stream:
        kinds = [event.type for event in stream]
        message = stream.get_final_message()
    assert message.stop_reason == "tool_use"
    called = message.content[1]
    assert isinstance(called, ToolUseBlock)
    assert called.input == WEATHER["input"]
    assert kinds.count("content_block_start") == 2
    assert kinds.count("content_block_stop") == 2
    assert kinds[-1] == "message_stop"


def test_a_bad_reply_is_refused_when_it_is_given() -> None:
    """A reply that is neither text nor text and tool_use blocks is a TypeError at once."""
    with pytest.raises(TypeError, match="reply must be a str or a list of content blocks"):
        AnthropicEmulator(reply=[{"type": "image"}])
    with pytest.raises(TypeError, match=r"reply_with\(\): replies\[1\] is a bad content block"):
        AnthropicEmulator().reply_with("fine", [{"type": "tool_use", "name": "x"}])


def test_the_models_api_lists_the_model_table(client: anthropic.Anthropic) -> None:
    """GET /v1/models lists every model of prefill_guard.models.KNOWN_MODELS, through the SDK's
    models.list(); models.retrieve() gets one, and an unknown id is a 404."""
    assert [model.id for model in client.models.list()] == list(models.KNOWN_MODELS)
    assert client.models.retrieve("claude-opus-4-6").id == "claude-opus-4-6"
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("claude-unknown-9")


def test_the_models_api_pages_with_limit_after_id_and_before_id(
    client: anthropic.Anthropic,
) -> None:
    """limit makes pages (has_more, first_id, last_id) that the SDK's auto-pagination
    follows with after_id; before_id pages backwards; a limit out of range is a 400."""
    names = list(models.KNOWN_MODELS)
    page = client.models.list(limit=4)
    assert [m.id for m in page.data] == names[:4]
    assert (page.has_more, page.first_id, page.last_id) == (True, names[0], names[3])
    assert [m.id for m in client.models.list(limit=4)] == names  # every page, in order
    before = client.models.list(limit=2, before_id=names[5])
    assert [m.id for m in before.data] == names[3:5]
    last = client.models.list(limit=3, after_id=names[-4])
    assert ([m.id for m in last.data], last.has_more) == (names[-3:], False)
    with pytest.raises(anthropic.BadRequestError, match="limit"):
        client.models.list(limit=0)


async def test_the_models_api_answers_an_async_client(emu: AnthropicEmulator) -> None:
    """The async client lists and retrieves the same models (frameworks prewarm with it)."""
    async with emu.async_client() as client:
        assert [m.id async for m in client.models.list()] == list(models.KNOWN_MODELS)
        assert (await client.models.retrieve("claude-sonnet-4-6")).id == "claude-sonnet-4-6"
