"""Tests for prefill_guard.testing: the Anthropic Messages API emulator.

Every test drives the real `anthropic` SDK (or, where the SDK cannot send the request, a raw
HTTP client) over real HTTP on 127.0.0.1; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types import Message
from hypothesis import given
from hypothesis import strategies as st

from prefill_guard import api_error_type, api_message
from prefill_guard.testing import (
    DEFAULT_REPLY_TEXT,
    DEFAULT_RULES,
    FORCED_TOOL_CHOICE_MESSAGE,
    PREFILL_MESSAGE,
    RULE_NAMES,
    TEMPERATURE_DEPRECATED_MESSAGE,
    TEMPERATURE_TOP_P_MESSAGE,
    THINKING_ENABLED_MESSAGE,
    TRAILING_WHITESPACE_MESSAGE,
    WHITESPACE_TEXT_MESSAGE,
    AnthropicEmulator,
    Fault,
    RecordedRequest,
    RequestPredicate,
    make_api_error,
    model_deprecates_sampling,
    model_rejects_enabled_thinking,
    model_rejects_forced_tool_choice,
    model_rejects_prefill,
    model_rejects_temperature_with_top_p,
    orphaned_tool_use_message,
    prompt_too_long_message,
    unexpected_tool_result_message,
)

PREFILL_TEXT = (
    "This model does not support assistant message prefill. "
    "The conversation must end with a user message."
)
USER_HI: list[Any] = [{"role": "user", "content": "hi"}]


@pytest.fixture
def emu() -> Iterator[AnthropicEmulator]:
    with AnthropicEmulator() as emulator:
        yield emulator


@pytest.fixture
def client(emu: AnthropicEmulator) -> Iterator[anthropic.Anthropic]:
    with emu.client() as sdk_client:
        yield sdk_client


def create(client: anthropic.Anthropic, model: str, messages: list[Any]) -> Message:
    return client.messages.create(model=model, max_tokens=64, messages=messages)


def raw_post(emu: AnthropicEmulator, body: bytes, headers: dict[str, str]) -> httpx2.Response:
    with httpx2.Client(base_url=emu.base_url) as http:
        response: httpx2.Response = http.post("/v1/messages", content=body, headers=headers)
    return response


def assert_error_shape(body: object, error_type: str, message: str) -> None:
    assert isinstance(body, dict)
    assert set(body) == {"type", "error", "request_id"}
    assert body["type"] == "error"
    assert body["error"] == {"type": error_type, "message": message}
    request_id = body["request_id"]
    assert isinstance(request_id, str)
    assert request_id.startswith("req_")
    assert len(request_id) == len("req_") + 24
    assert request_id[4:].isalnum()


def assert_bad_request(exc: anthropic.BadRequestError, message: str) -> None:
    assert exc.status_code == 400
    assert api_error_type(exc) == "invalid_request_error"
    assert api_message(exc) == message
    assert exc.request_id is not None
    assert exc.request_id.startswith("req_")
    assert_error_shape(exc.body, "invalid_request_error", message)
    assert isinstance(exc.body, dict)
    assert exc.body["request_id"] == exc.request_id


REPLY_CHUNKS = ["Hello ", "from ", "the ", "prefill_guard ", "emulator."]
"""The default reply's text deltas: each word with its trailing whitespace."""

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


def stream_text(client: anthropic.Anthropic, received: list[str]) -> None:
    """Stream a reply through `client.messages.stream`, appending each text delta as it comes."""
    with client.messages.stream(
        model="claude-haiku-4-5", max_tokens=64, messages=USER_HI
    ) as stream:
        received.extend(stream.text_stream)


async def astream_text(client: anthropic.AsyncAnthropic, received: list[str]) -> None:
    """The async twin of `stream_text`."""
    async with client.messages.stream(
        model="claude-haiku-4-5", max_tokens=64, messages=USER_HI
    ) as stream:
        async for text in stream.text_stream:
            received.append(text)


def raw_exchange(emu: AnthropicEmulator, body: dict[str, Any]) -> tuple[bytes, bytes]:
    """POST `body` over a plain socket with Connection: close; the raw head and body bytes."""
    payload = json.dumps(body).encode()
    request = (
        b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: k\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload)
    )
    with socket.create_connection(("127.0.0.1", emu.port), timeout=5) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    return head, rest


def head_fields(head: bytes) -> dict[str, str]:
    """The lower-cased header fields of a raw response head."""
    lines = head.decode().split("\r\n")[1:]
    return {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines)
    }


def split_chunks(data: bytes) -> tuple[list[bytes], bool]:
    """Split a chunked body into its chunks; the flag says whether the 0-length chunk ended it."""
    chunks: list[bytes] = []
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return chunks, rest == b"\r\n"
        chunks.append(rest[:size])
        assert rest[size : size + 2] == b"\r\n"
        data = rest[size + 2 :]
    return chunks, False


def parse_event(chunk: bytes) -> tuple[str, Any]:
    """One `event: NAME\\ndata: JSON\\n\\n` SSE event as (NAME, parsed JSON)."""
    text = chunk.decode()
    assert text.endswith("\n\n")
    event_line, data_line = text[:-2].split("\n")
    assert event_line.startswith("event: ")
    assert data_line.startswith("data: ")
    return event_line[len("event: ") :], json.loads(data_line[len("data: ") :])


STREAM_BODY: dict[str, Any] = {
    "model": "claude-haiku-4-5",
    "max_tokens": 64,
    "messages": USER_HI,
    "stream": True,
}


# -- success round trips ----------------------------------------------------------------------


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
    """A reply callable that returns something other than a str surfaces as a 500 api_error."""
    with (
        AnthropicEmulator(reply=lambda body: None) as emu,  # type: ignore[arg-type,return-value]
        emu.client() as client,
        pytest.raises(anthropic.InternalServerError) as info,
    ):
        create(client, "claude-haiku-4-5", USER_HI)
    assert api_message(info.value) == "emulator reply callable returned NoneType, not str"


def test_reply_string_is_used_as_text() -> None:
    """A string `reply` replaces the default reply text."""
    with AnthropicEmulator(reply="Custom!") as emu, emu.client() as client:
        message = create(client, "claude-haiku-4-5", USER_HI)
    assert message.content[0].type == "text"
    assert message.content[0].text == "Custom!"


def test_many_sequential_keep_alive_requests_succeed(
    emu: AnthropicEmulator, client: anthropic.Anthropic
) -> None:
    """One sync client can send many requests over kept-alive connections."""
    for index in range(50):
        create(client, "claude-haiku-4-5", [{"role": "user", "content": f"n{index}"}])
    bodies = [request.body["messages"][0]["content"] for request in emu.message_requests]
    assert bodies == [f"n{index}" for index in range(50)]


async def test_twenty_concurrent_async_requests_all_succeed(emu: AnthropicEmulator) -> None:
    """20 concurrent AsyncAnthropic requests all get 200 and are all recorded."""
    async with emu.async_client() as client:
        results = await asyncio.gather(
            *(
                client.messages.create(
                    model="claude-haiku-4-5",
                    max_tokens=64,
                    messages=[{"role": "user", "content": f"q{index}"}],
                )
                for index in range(20)
            )
        )

    assert all(isinstance(message, Message) for message in results)
    contents = sorted(request.body["messages"][0]["content"] for request in emu.message_requests)
    assert contents == sorted(f"q{index}" for index in range(20))


def test_concurrent_sync_clients_in_threads_all_succeed(emu: AnthropicEmulator) -> None:
    """Several threads with their own sync clients are served concurrently without errors."""
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with emu.client() as client:
                for _ in range(5):
                    create(client, "claude-haiku-4-5", USER_HI)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    assert len(emu.message_requests) == 40


# -- prefill ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["claude-opus-4-6", "claude-sonnet-5-5"])
def test_prefill_is_rejected_for_46_and_later_models(
    client: anthropic.Anthropic, model: str
) -> None:
    """A trailing assistant turn on a 4.6+ model gives the API's exact prefill 400."""
    messages: list[Any] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Sure, here"},
    ]
    with pytest.raises(anthropic.BadRequestError) as info:
        create(client, model, messages)

    assert_bad_request(info.value, PREFILL_TEXT)
    assert info.value.response.headers["request-id"] == info.value.request_id


def test_prefill_message_constant_is_the_exact_api_text() -> None:
    """The exported constants match the real API's wording byte for byte."""
    assert PREFILL_MESSAGE == PREFILL_TEXT


async def test_prefill_is_rejected_for_async_client(emu: AnthropicEmulator) -> None:
    """The async SDK raises the same BadRequestError for a rejected prefill."""
    messages: list[Any] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Sure"},
    ]
    async with emu.async_client() as client:
        with pytest.raises(anthropic.BadRequestError) as info:
            await client.messages.create(model="claude-opus-4-7", max_tokens=8, messages=messages)
    assert_bad_request(info.value, PREFILL_TEXT)


def test_prefill_rejection_wins_over_blank_final_assistant_text(
    client: anthropic.Anthropic,
) -> None:
    """A whitespace-only final assistant turn on a 4.6+ model still gets the prefill 400."""
    messages: list[Any] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "   "},
    ]
    with pytest.raises(anthropic.BadRequestError) as info:
        create(client, "claude-opus-4-6", messages)
    assert_bad_request(info.value, PREFILL_TEXT)


def test_prefill_is_allowed_for_older_models(client: anthropic.Anthropic) -> None:
    """claude-haiku-4-5 accepts an assistant prefill and answers 200 with the continuation."""
    messages: list[Any] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "The answer is"}]},
    ]
    message = create(client, "claude-haiku-4-5", messages)
    assert message.content[0].type == "text"
    assert message.content[0].text == DEFAULT_REPLY_TEXT


@pytest.mark.parametrize(
    "final_content",
    ["The answer is ", [{"type": "text", "text": "The answer is\n"}]],
    ids=["string", "text-block"],
)
def test_prefill_with_trailing_whitespace_is_rejected(
    client: anthropic.Anthropic, final_content: Any
) -> None:
    """On a prefill-allowing model, final assistant text ending in whitespace gives a 400."""
    messages: list[Any] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": final_content},
    ]
    with pytest.raises(anthropic.BadRequestError) as info:
        create(client, "claude-haiku-4-5", messages)
    assert_bad_request(info.value, "final assistant content cannot end with trailing whitespace")


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("claude-opus-4-6", True),
        ("claude-sonnet-4-6", True),
        ("claude-sonnet-4-6-20260101", True),
        ("claude-opus-4-7", True),
        ("claude-opus-4-8", True),
        ("claude-opus-5-5", True),
        ("claude-sonnet-5-5", True),
        ("claude-mythos-5-1", True),
        ("claude-opus-5", True),
        ("claude-haiku-4-5", False),
        ("claude-haiku-4-5-20251001", False),
        ("claude-opus-4-1", False),
        ("claude-opus-4-20250514", False),
        ("claude-sonnet-4-20250514", False),
        ("claude-3-5-sonnet-20241022", False),
        ("claude-3-opus", False),
        ("claude-3-opus-20240229", False),
        ("gpt-5", False),
        ("", False),
        ("claude-opus-4-6-preview", False),
    ],
)
def test_model_rejects_prefill_table(model: str, expected: bool) -> None:
    """The default rule: claude-<family>-<major>-<minor>[-date] rejects when >= 4.6."""
    assert model_rejects_prefill(model) is expected


@given(
    family=st.sampled_from(["opus", "sonnet", "haiku", "mythos"]),
    major=st.integers(min_value=0, max_value=99),
    minor=st.integers(min_value=0, max_value=99),
    date=st.one_of(st.none(), st.integers(min_value=20200101, max_value=20991231)),
)
def test_model_rejects_prefill_compares_versions(
    family: str, major: int, minor: int, date: int | None
) -> None:
    """For every well-formed name the rule is exactly (major, minor) >= (4, 6)."""
    name = f"claude-{family}-{major}-{minor}" + ("" if date is None else f"-{date}")
    assert model_rejects_prefill(name) is ((major, minor) >= (4, 6))


@given(st.text())
def test_model_rejects_prefill_never_raises(model: str) -> None:
    """Any string is classified without raising."""
    assert isinstance(model_rejects_prefill(model), bool)


@pytest.mark.parametrize(
    ("model", "rejects"),
    [
        ("my-model", True),
        ("my-model-20260101", True),
        ("my-model-2", False),
        ("claude-opus-4-6", False),
    ],
)
def test_custom_no_prefill_models_replace_the_default_rule(model: str, rejects: bool) -> None:
    """no_prefill_models lists exactly the rejecting models (date suffix allowed)."""
    messages: list[Any] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Sure"},
    ]
    with AnthropicEmulator(no_prefill_models=["my-model"]) as emu, emu.client() as client:
        assert emu.rejects_prefill(model) is rejects
        if rejects:
            with pytest.raises(anthropic.BadRequestError) as info:
                create(client, model, messages)
            assert_bad_request(info.value, PREFILL_TEXT)
        else:
            assert create(client, model, messages).model == model


# -- request validation -----------------------------------------------------------------------


def test_metadata_key_in_message_is_an_extra_input(client: anthropic.Anthropic) -> None:
    """A `metadata` key inside a message is rejected exactly like the real API does."""
    messages: list[Any] = [{"role": "user", "content": "hi", "metadata": {"source": "x"}}]
    with pytest.raises(anthropic.BadRequestError) as info:
        create(client, "claude-haiku-4-5", messages)
    assert_bad_request(info.value, "messages.0.metadata: Extra inputs are not permitted")


def test_extra_key_is_reported_with_its_message_index(client: anthropic.Anthropic) -> None:
    """The extra-input error names the offending message index."""
    messages: list[Any] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
        {"role": "user", "content": "again", "cache": True},
    ]
    with pytest.raises(anthropic.BadRequestError) as info:
        create(client, "claude-haiku-4-5", messages)
    assert_bad_request(info.value, "messages.2.cache: Extra inputs are not permitted")


def test_invalid_role_is_rejected(client: anthropic.Anthropic) -> None:
    """A role other than user/assistant gives the API's literal-error message."""
    messages: list[Any] = [{"role": "system", "content": "hi"}]
    with pytest.raises(anthropic.BadRequestError) as info:
        create(client, "claude-haiku-4-5", messages)
    assert_bad_request(info.value, "messages.0.role: Input should be 'user' or 'assistant'")


def test_missing_content_is_rejected(client: anthropic.Anthropic) -> None:
    """A message without `content` gives a Field required error."""
    messages: list[Any] = [{"role": "user"}]
    with pytest.raises(anthropic.BadRequestError) as info:
        create(client, "claude-haiku-4-5", messages)
    assert_bad_request(info.value, "messages.0.content: Field required")


@pytest.mark.parametrize(
    "content",
    [
        "",
        "  \n\t",
        [{"type": "text", "text": " "}],
        [{"type": "text", "text": "ok"}, {"type": "text", "text": ""}],
    ],
    ids=["empty-string", "whitespace-string", "whitespace-block", "empty-second-block"],
)
def test_whitespace_only_user_text_is_rejected(client: anthropic.Anthropic, content: Any) -> None:
    """Whitespace-only user text (string or text block) gives the non-whitespace 400."""
    messages: list[Any] = [{"role": "user", "content": content}]
    with pytest.raises(anthropic.BadRequestError) as info:
        create(client, "claude-haiku-4-5", messages)
    assert_bad_request(info.value, "messages: text content blocks must contain non-whitespace text")


def test_whitespace_only_earlier_assistant_text_is_rejected(client: anthropic.Anthropic) -> None:
    """Blank text in a non-final assistant turn is rejected too."""
    messages: list[Any] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": " "},
        {"role": "user", "content": "again"},
    ]
    with pytest.raises(anthropic.BadRequestError) as info:
        create(client, "claude-opus-4-6", messages)
    assert_bad_request(info.value, "messages: text content blocks must contain non-whitespace text")


def test_empty_message_list_is_rejected(client: anthropic.Anthropic) -> None:
    """An empty `messages` list gives a 400."""
    with pytest.raises(anthropic.BadRequestError) as info:
        create(client, "claude-haiku-4-5", [])
    assert_bad_request(info.value, "messages: at least one message is required")


def test_stream_true_still_reports_prefill_error_first(client: anthropic.Anthropic) -> None:
    """create(stream=True) on a rejected prefill raises the 400 before any event is read."""
    messages: list[Any] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Sure"},
    ]
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(
            model="claude-opus-4-6", max_tokens=64, messages=messages, stream=True
        )
    assert_bad_request(info.value, PREFILL_TEXT)


def test_missing_api_key_gives_401(emu: AnthropicEmulator) -> None:
    """Without x-api-key or Authorization the API answers 401 authentication_error."""
    body = json.dumps({"model": "claude-haiku-4-5", "max_tokens": 8, "messages": USER_HI})
    response = raw_post(emu, body.encode(), {"content-type": "application/json"})

    assert response.status_code == 401
    data = response.json()
    assert_error_shape(data, "authentication_error", "x-api-key header is required")
    assert response.headers["request-id"] == data["request_id"]
    assert len(emu.requests) == 1


@pytest.mark.parametrize(
    "headers",
    [{"x-api-key": "k"}, {"authorization": "Bearer k"}],
    ids=["x-api-key", "bearer"],
)
def test_either_auth_header_is_accepted(emu: AnthropicEmulator, headers: dict[str, str]) -> None:
    """x-api-key and Authorization: Bearer both authenticate."""
    body = json.dumps({"model": "claude-haiku-4-5", "max_tokens": 8, "messages": USER_HI})
    response = raw_post(emu, body.encode(), headers)
    assert response.status_code == 200
    assert response.headers["request-id"].startswith("req_")
    assert response.json()["content"][0]["text"] == DEFAULT_REPLY_TEXT


@pytest.mark.parametrize("authorization", ["Bearer", "Basic dXNlcjpwdw=="])
def test_authorization_without_bearer_token_gives_401(
    emu: AnthropicEmulator, authorization: str
) -> None:
    """An Authorization header without a non-empty bearer token does not authenticate."""
    body = json.dumps({"model": "claude-haiku-4-5", "max_tokens": 8, "messages": USER_HI})
    response = raw_post(emu, body.encode(), {"authorization": authorization})
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "Request body is not valid JSON"),
        (b"[1, 2]", "Request body must be a JSON object"),
        (b'{"max_tokens": 8, "messages": []}', "model: Field required"),
        (
            b'{"model": "", "max_tokens": 8, "messages": []}',
            "model: String should have at least 1 character",
        ),
        (b'{"model": "m", "messages": []}', "max_tokens: Field required"),
        (
            b'{"model": "m", "max_tokens": 0, "messages": []}',
            "max_tokens: Input should be greater than or equal to 1",
        ),
        (
            b'{"model": "m", "max_tokens": "8", "messages": []}',
            "max_tokens: Input should be a valid integer",
        ),
        (b'{"model": "m", "max_tokens": 8}', "messages: Field required"),
        (
            b'{"model": "m", "max_tokens": 8, "messages": {}}',
            "messages: Input should be a valid list",
        ),
        (
            b'{"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}],'
            b' "stream": "yes"}',
            "stream: Input should be a valid boolean",
        ),
    ],
)
def test_top_level_validation_errors(emu: AnthropicEmulator, body: bytes, message: str) -> None:
    """Malformed bodies and missing/invalid top-level fields give the matching 400."""
    response = raw_post(emu, body, {"x-api-key": "k", "content-type": "application/json"})
    assert response.status_code == 400
    assert_error_shape(response.json(), "invalid_request_error", message)


def test_non_json_body_is_recorded_as_text(emu: AnthropicEmulator) -> None:
    """A body that is not JSON is recorded as its raw text."""
    raw_post(emu, b"{not json", {"x-api-key": "k"})
    assert emu.requests[0].body == "{not json"


def test_unknown_path_gives_404(emu: AnthropicEmulator) -> None:
    """Any other path or method answers 404 not_found_error."""
    with httpx2.Client(base_url=emu.base_url) as http:
        get_models = http.get("/v1/models", headers={"x-api-key": "k"})
        get_messages = http.get("/v1/messages", headers={"x-api-key": "k"})
    for response in (get_models, get_messages):
        assert response.status_code == 404
        assert_error_shape(response.json(), "not_found_error", "Not Found")
    assert [(r.method, r.path) for r in emu.requests] == [
        ("GET", "/v1/models"),
        ("GET", "/v1/messages"),
    ]
    assert emu.message_requests == []


def test_malformed_content_length_does_not_kill_the_server(
    emu: AnthropicEmulator, client: anthropic.Anthropic
) -> None:
    """A bad Content-Length gets a 400 + close, and the server keeps serving afterwards."""
    with socket.create_connection(("127.0.0.1", emu.port), timeout=5) as sock:
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: banana\r\n\r\n{}")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, payload = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert b"connection: close" in head.lower()
    assert json.loads(payload)["error"]["type"] == "invalid_request_error"

    assert create(client, "claude-haiku-4-5", USER_HI).content[0].type == "text"


def test_truncated_body_does_not_kill_the_server(
    emu: AnthropicEmulator, client: anthropic.Anthropic
) -> None:
    """A client that disconnects mid-body is dropped quietly; later requests still work."""
    with socket.create_connection(("127.0.0.1", emu.port), timeout=5) as sock:
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
    assert create(client, "claude-haiku-4-5", USER_HI).content[0].type == "text"


def test_chunked_request_body_gets_411_and_the_server_keeps_serving(
    emu: AnthropicEmulator, client: anthropic.Anthropic
) -> None:
    """A Transfer-Encoding: chunked body is refused with 411 + close, unrecorded (the SDK never
    sends one; bodies are read by Content-Length), and later requests still work."""
    body = json.dumps({"model": "claude-haiku-4-5", "max_tokens": 8, "messages": USER_HI}).encode()
    half = len(body) // 2
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:half], body[half:]))
    with socket.create_connection(("127.0.0.1", emu.port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: k\r\nConnection: close\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
        )
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, payload = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 411 Length Required")
    assert b"connection: close" in head.lower()
    assert_error_shape(
        json.loads(payload),
        "invalid_request_error",
        "chunked request bodies are not accepted: send the body with a Content-Length header",
    )
    assert emu.requests == []

    assert create(client, "claude-haiku-4-5", USER_HI).content[0].type == "text"


# -- streaming ----------------------------------------------------------------------------------


def test_stream_wire_events_are_the_api_events_in_order(emu: AnthropicEmulator) -> None:
    """On the wire: message_start, content_block_start, ping, deltas, block stop, delta, stop."""
    _, body = raw_exchange(emu, STREAM_BODY)
    chunks, terminated = split_chunks(body)
    events = [parse_event(chunk) for chunk in chunks]

    assert terminated
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * len(REPLY_CHUNKS),
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert start["id"].startswith("msg_")
    assert {key: value for key, value in start.items() if key != "id"} == {
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    assert events[1][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert events[2][1] == {"type": "ping"}
    assert [data for _, data in events[3:-3]] == [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}
        for text in REPLY_CHUNKS
    ]
    assert [data for _, data in events[-3:]] == [
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": len(REPLY_CHUNKS)},
        },
        {"type": "message_stop"},
    ]


def test_stream_is_chunked_event_stream_with_request_id(emu: AnthropicEmulator) -> None:
    """A stream is a 200 text/event-stream, chunked, one event per chunk, with a request-id."""
    head, body = raw_exchange(emu, STREAM_BODY)
    fields = head_fields(head)

    assert head.startswith(b"HTTP/1.1 200 ")
    assert fields["content-type"].startswith("text/event-stream")
    assert fields["transfer-encoding"] == "chunked"
    assert "content-length" not in fields
    assert fields["request-id"].startswith("req_")
    chunks, terminated = split_chunks(body)
    assert terminated
    assert len(chunks) == 3 + len(REPLY_CHUNKS) + 3
    assert all(chunk.startswith(b"event: ") and chunk.count(b"\n\n") == 1 for chunk in chunks)


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


def test_stream_prefill_rejection_raises_when_the_stream_is_entered(
    client: anthropic.Anthropic,
) -> None:
    """Validation errors stay plain JSON 400s: messages.stream raises on entering the block."""
    messages: list[Any] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Sure"},
    ]
    manager = client.messages.stream(model="claude-opus-4-6", max_tokens=64, messages=messages)
    with pytest.raises(anthropic.BadRequestError) as info, manager:
        pytest.fail("the stream must not open")
    assert_bad_request(info.value, PREFILL_TEXT)
    assert info.value.response.headers["content-type"].startswith("application/json")


async def test_async_stream_prefill_rejection_raises_when_entered(
    emu: AnthropicEmulator,
) -> None:
    """The async stream manager raises the same BadRequestError on entry."""
    messages: list[Any] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Sure"},
    ]
    async with emu.async_client() as client:
        manager = client.messages.stream(model="claude-opus-4-6", max_tokens=64, messages=messages)
        with pytest.raises(anthropic.BadRequestError) as info:
            async with manager:
                pytest.fail("the stream must not open")
    assert_bad_request(info.value, PREFILL_TEXT)


def test_streams_and_plain_requests_share_keep_alive_connections(
    emu: AnthropicEmulator, client: anthropic.Anthropic
) -> None:
    """Chunked streams end cleanly, so one client can alternate streams and plain calls."""
    for _ in range(10):
        received: list[str] = []
        stream_text(client, received)
        assert received == REPLY_CHUNKS
        assert create(client, "claude-haiku-4-5", USER_HI).content[0].type == "text"
    assert len(emu.message_requests) == 20


# -- scripted faults --------------------------------------------------------------------------


def test_scripted_faults_are_answered_in_order(
    emu: AnthropicEmulator, client: anthropic.Anthropic
) -> None:
    """529 then 429 (with retry-after) then a normal success, one request each."""
    emu.script(Fault(529), Fault(429, headers={"retry-after": "3"}))

    with pytest.raises(anthropic.OverloadedError) as overloaded:
        create(client, "claude-haiku-4-5", USER_HI)
    assert overloaded.value.status_code == 529
    assert api_error_type(overloaded.value) == "overloaded_error"
    assert api_message(overloaded.value) == "Overloaded"

    with pytest.raises(anthropic.RateLimitError) as limited:
        create(client, "claude-haiku-4-5", USER_HI)
    assert limited.value.status_code == 429
    assert limited.value.response.headers["retry-after"] == "3"
    assert api_message(limited.value) == (
        "Number of request tokens has exceeded your per-minute rate limit"
    )

    assert create(client, "claude-haiku-4-5", USER_HI).content[0].type == "text"
    assert len(emu.message_requests) == 3
    assert emu.pending_faults == []


def test_html_fault_body_is_sent_as_is(emu: AnthropicEmulator, client: anthropic.Anthropic) -> None:
    """A str body (an HTML 502 page) reaches the SDK as InternalServerError with that text."""
    emu.script(Fault(502, body="<html>bad gateway</html>"))
    with pytest.raises(anthropic.InternalServerError) as info:
        create(client, "claude-haiku-4-5", USER_HI)
    assert info.value.status_code == 502
    assert info.value.body == "<html>bad gateway</html>"
    assert info.value.response.headers["content-type"].startswith("text/html")
    assert len(emu.requests) == 1


@pytest.mark.parametrize(
    ("status", "error_class", "error_type", "message"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error", None),
        (401, anthropic.AuthenticationError, "authentication_error", "invalid x-api-key"),
        (403, anthropic.PermissionDeniedError, "permission_error", None),
        (404, anthropic.NotFoundError, "not_found_error", None),
        (413, anthropic.APIStatusError, "request_too_large", None),  # class renamed across SDKs
        (
            429,
            anthropic.RateLimitError,
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit",
        ),
        (500, anthropic.InternalServerError, "api_error", "Internal server error"),
        (529, anthropic.OverloadedError, "overloaded_error", "Overloaded"),
    ],
)
def test_fault_without_body_sends_the_standard_error_body(
    emu: AnthropicEmulator,
    client: anthropic.Anthropic,
    status: int,
    error_class: type[anthropic.APIStatusError],
    error_type: str,
    message: str | None,
) -> None:
    """Fault(status) answers with the API's standard error type/message for that status."""
    emu.script(Fault(status))
    with pytest.raises(error_class) as info:
        create(client, "claude-haiku-4-5", USER_HI)
    exc = info.value
    assert exc.status_code == status
    assert api_error_type(exc) == error_type
    text = api_message(exc)
    assert text
    if message is not None:
        assert text == message
    assert_error_shape(exc.body, error_type, text)
    assert exc.request_id == exc.response.headers["request-id"]


def test_fault_dict_body_is_sent_verbatim(
    emu: AnthropicEmulator, client: anthropic.Anthropic
) -> None:
    """A dict body is sent as JSON unchanged; its request_id becomes the request-id header."""
    body = {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "custom"},
        "request_id": "req_custom",
    }
    emu.script(Fault(400, body=body))
    with pytest.raises(anthropic.BadRequestError) as info:
        create(client, "claude-haiku-4-5", USER_HI)
    assert info.value.body == body
    assert info.value.request_id == "req_custom"


def test_fault_replaces_validation_and_is_consumed_by_any_path(emu: AnthropicEmulator) -> None:
    """Faults answer the next request whatever its path, before auth and validation."""
    emu.script(Fault(200, body={"ok": True}), Fault(503))
    with httpx2.Client(base_url=emu.base_url) as http:
        first = http.get("/anything")
        second = http.post("/v1/messages", content=b"junk")
        third = http.post("/v1/messages", content=b"junk")
    assert (first.status_code, first.json()) == (200, {"ok": True})
    assert second.status_code == 503
    assert second.json()["error"]["type"] == "api_error"
    assert third.status_code == 401  # normal handling again: no key
    assert len(emu.requests) == 3


# -- stream, disconnect and stall faults -----------------------------------------------------


def test_fault_kinds_and_fields_from_the_constructors() -> None:
    """The classmethods build frozen faults of each kind; Fault(status) stays a status fault."""
    assert Fault(529) == Fault(529, None, {})
    assert Fault(529).kind == "status"
    assert Fault.sse_error() == Fault(
        529, kind="sse_error", error_type="overloaded_error", after_deltas=0
    )
    error = Fault.sse_error(after_deltas=2, error_type="api_error", message="boom")
    assert (error.kind, error.status, error.after_deltas, error.error_type, error.message) == (
        "sse_error",
        500,
        2,
        "api_error",
        "boom",
    )
    assert Fault.disconnect(after_deltas=1) == Fault(200, kind="disconnect", after_deltas=1)
    assert Fault.stall(0.5) == Fault(200, kind="stall", seconds=0.5)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Fault(99), "status must be an int in 100..599"),
        (lambda: Fault(600), "status must be an int in 100..599"),
        (lambda: Fault(True), "status must be an int in 100..599"),
        (lambda: Fault(200, kind="teapot"), "kind must be one of"),  # type: ignore[arg-type]
        (lambda: Fault.sse_error(after_deltas=-1), "after_deltas must be an int >= 0"),
        (lambda: Fault.disconnect(after_deltas=-1), "after_deltas must be an int >= 0"),
        (lambda: Fault.stall(-0.1), "seconds must be a finite number >= 0"),
        (lambda: Fault.stall(float("inf")), "seconds must be a finite number >= 0"),
        (lambda: Fault.sse_error(error_type=""), "error_type must be a non-empty str"),
        (lambda: Fault(529, after_deltas=2), "after_deltas does not apply to a 'status' fault"),
        (lambda: Fault(529, seconds=1), "seconds does not apply to a 'status' fault"),
        (lambda: Fault(200, kind="stall", body="x"), "body does not apply to a 'stall' fault"),
        (
            lambda: Fault(200, headers={"a": "b"}, kind="disconnect"),
            "headers does not apply to a 'disconnect' fault",
        ),
        (lambda: Fault(200, kind="sse_error", error_type="overloaded_error"), "has status 529"),
        (lambda: Fault(503, kind="stall", seconds=1), "has status 200"),
    ],
    ids=[
        "status-low",
        "status-high",
        "status-bool",
        "unknown-kind",
        "sse-negative-deltas",
        "disconnect-negative-deltas",
        "negative-seconds",
        "infinite-seconds",
        "empty-error-type",
        "deltas-on-status",
        "seconds-on-status",
        "body-on-stall",
        "headers-on-disconnect",
        "sse-status-mismatch",
        "stall-status-mismatch",
    ],
)
def test_nonsense_faults_raise_value_error(make: Any, message: str) -> None:
    """__post_init__ rejects impossible or meaningless fault fields with a clear ValueError."""
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


def test_sse_error_before_any_delta_raises_status_200_error(
    emu: AnthropicEmulator, client: anthropic.Anthropic
) -> None:
    """Fault.sse_error(): a 200 stream whose error event the SDK raises as APIStatusError 200."""
    emu.script(Fault.sse_error())
    received: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as info:
        stream_text(client, received)

    exc = info.value
    assert type(exc) is anthropic.APIStatusError
    assert exc.status_code == 200
    assert api_error_type(exc) == "overloaded_error"
    assert api_message(exc) == "Overloaded"
    assert exc.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    assert exc.request_id == exc.response.headers["request-id"]
    assert received == []


def test_sse_error_after_two_deltas_keeps_the_first_two_chunks(
    emu: AnthropicEmulator, client: anthropic.Anthropic
) -> None:
    """after_deltas=2: exactly the first two text chunks arrive, then the error is raised."""
    emu.script(Fault.sse_error(after_deltas=2))
    received: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as info:
        stream_text(client, received)
    assert received == REPLY_CHUNKS[:2]
    assert info.value.status_code == 200
    assert api_error_type(info.value) == "overloaded_error"


async def test_async_sse_error_after_two_deltas(emu: AnthropicEmulator) -> None:
    """The async SDK raises the same APIStatusError 200 after the same two chunks."""
    emu.script(Fault.sse_error(after_deltas=2))
    received: list[str] = []
    async with emu.async_client() as client:
        with pytest.raises(anthropic.APIStatusError) as info:
            await astream_text(client, received)
    assert type(info.value) is anthropic.APIStatusError
    assert info.value.status_code == 200
    assert api_error_type(info.value) == "overloaded_error"
    assert received == REPLY_CHUNKS[:2]


def test_sse_error_wire_ends_with_error_event_and_terminating_chunk(
    emu: AnthropicEmulator,
) -> None:
    """On the wire: the stream head, the deltas, one `error` event, then the 0-length chunk."""
    emu.script(Fault.sse_error(after_deltas=1, error_type="api_error", message="boom"))
    head, body = raw_exchange(emu, STREAM_BODY)
    chunks, terminated = split_chunks(body)
    events = [parse_event(chunk) for chunk in chunks]

    assert head.startswith(b"HTTP/1.1 200 ")
    assert terminated
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "error",
    ]
    assert events[-1][1] == {"type": "error", "error": {"type": "api_error", "message": "boom"}}


def test_sse_error_after_more_deltas_than_the_reply_has_sends_them_all(
    emu: AnthropicEmulator, client: anthropic.Anthropic
) -> None:
    """after_deltas beyond the reply's chunk count sends every chunk before the error."""
    emu.script(Fault.sse_error(after_deltas=99))
    received: list[str] = []
    with pytest.raises(anthropic.APIStatusError):
        stream_text(client, received)
    assert received == REPLY_CHUNKS


def test_sse_error_on_non_streaming_request_is_overloaded_529(
    emu: AnthropicEmulator, client: anthropic.Anthropic
) -> None:
    """Without stream, Fault.sse_error() answers the equivalent HTTP error: 529 Overloaded."""
    emu.script(Fault.sse_error())
    with pytest.raises(anthropic.OverloadedError) as info:
        create(client, "claude-haiku-4-5", USER_HI)
    assert info.value.status_code == 529
    assert_error_shape(info.value.body, "overloaded_error", "Overloaded")
    assert emu.pending_faults == []


@pytest.mark.parametrize(
    ("error_type", "status", "message"),
    [
        ("overloaded_error", 529, "Overloaded"),
        ("api_error", 500, "Internal server error"),
        (
            "rate_limit_error",
            429,
            "Number of request tokens has exceeded your per-minute rate limit",
        ),
        (
            "invalid_request_error",
            400,
            "There was an issue with the format or content of your request.",
        ),
        ("authentication_error", 401, "invalid x-api-key"),
        (
            "permission_error",
            403,
            "Your API key does not have permission to use the specified resource.",
        ),
        ("not_found_error", 404, "Not Found"),
        ("request_too_large", 413, "Request exceeds the maximum allowed number of bytes."),
        ("billing_error", 402, "Your credit balance is too low to access the Anthropic API."),
        ("timeout_error", 504, "Request timed out"),
        ("mystery_error", 500, "Internal server error"),
    ],
)
def test_sse_error_types_map_to_the_api_http_status(
    emu: AnthropicEmulator,
    client: anthropic.Anthropic,
    error_type: str,
    status: int,
    message: str,
) -> None:
    """Each error type's non-streaming twin has the API's status and standard message."""
    emu.script(Fault.sse_error(error_type=error_type))
    assert emu.pending_faults[0].status == status
    with pytest.raises(anthropic.APIStatusError) as info:
        create(client, "claude-haiku-4-5", USER_HI)
    assert info.value.status_code == status
    assert_error_shape(info.value.body, error_type, message)


def test_sse_error_custom_message_on_non_streaming_request(
    emu: AnthropicEmulator, client: anthropic.Anthropic
) -> None:
    """A custom message is used in the non-streaming error body too."""
    emu.script(Fault.sse_error(error_type="api_error", message="boom"))
    with pytest.raises(anthropic.InternalServerError) as info:
        create(client, "claude-haiku-4-5", USER_HI)
    assert api_message(info.value) == "boom"


def test_disconnect_non_streaming_raises_api_connection_error(
    emu: AnthropicEmulator, client: anthropic.Anthropic
) -> None:
    """A body cut short: the sync SDK raises APIConnectionError from httpx2.RemoteProtocolError."""
    emu.script(Fault.disconnect())
    with pytest.raises(anthropic.APIConnectionError) as info:
        create(client, "claude-haiku-4-5", USER_HI)
    assert type(info.value) is anthropic.APIConnectionError
    assert isinstance(info.value.__cause__, httpx2.RemoteProtocolError)
    assert len(emu.message_requests) == 1


async def test_async_disconnect_non_streaming_raises_api_connection_error(
    emu: AnthropicEmulator,
) -> None:
    """The async SDK raises the same APIConnectionError for a body cut short."""
    emu.script(Fault.disconnect())
    async with emu.async_client() as client:
        with pytest.raises(anthropic.APIConnectionError) as info:
            await client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=USER_HI)
    assert type(info.value) is anthropic.APIConnectionError
    assert isinstance(info.value.__cause__, httpx2.RemoteProtocolError)


def test_disconnect_non_streaming_sends_half_of_a_full_body(emu: AnthropicEmulator) -> None:
    """On the wire: 200 with a full body's Content-Length, then half the bytes, then EOF."""
    emu.script(Fault.disconnect())
    head, body = raw_exchange(
        emu, {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": USER_HI}
    )
    _, full = raw_exchange(emu, {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": USER_HI})
    fields = head_fields(head)

    assert head.startswith(b"HTTP/1.1 200 ")
    assert fields["content-type"] == "application/json"
    assert int(fields["content-length"]) == len(full)
    assert len(body) == len(full) // 2
    prefix = b'{"id": "'
    assert body.startswith(prefix + b"msg_")
    full_id = json.loads(full)["id"].encode()
    cut_id = body[len(prefix) : len(prefix) + len(full_id)]
    assert body == full.replace(full_id, cut_id)[: len(body)]  # a normal body's first half


def test_disconnect_streaming_after_one_delta_raises_while_iterating(
    emu: AnthropicEmulator, client: anthropic.Anthropic
) -> None:
    """A stream cut after one delta: one text chunk, then a raw httpx2.RemoteProtocolError."""
    emu.script(Fault.disconnect(after_deltas=1))
    received: list[str] = []
    with pytest.raises(httpx2.RemoteProtocolError, match="incomplete chunked read"):
        stream_text(client, received)
    assert received == REPLY_CHUNKS[:1]


async def test_async_disconnect_streaming_after_one_delta_raises_while_iterating(
    emu: AnthropicEmulator,
) -> None:
    """The async SDK also lets httpx2.RemoteProtocolError escape mid-stream, after one chunk."""
    emu.script(Fault.disconnect(after_deltas=1))
    received: list[str] = []
    async with emu.async_client() as client:
        with pytest.raises(httpx2.RemoteProtocolError, match="incomplete chunked read"):
            await astream_text(client, received)
    assert received == REPLY_CHUNKS[:1]


def test_disconnect_streaming_wire_lacks_the_terminating_chunk(emu: AnthropicEmulator) -> None:
    """On the wire: the head events and one delta, each a chunk, and no 0-length chunk."""
    emu.script(Fault.disconnect(after_deltas=1))
    head, body = raw_exchange(emu, STREAM_BODY)
    chunks, terminated = split_chunks(body)

    assert head.startswith(b"HTTP/1.1 200 ")
    assert head_fields(head)["transfer-encoding"] == "chunked"
    assert not terminated
    assert [parse_event(chunk)[0] for chunk in chunks] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
    ]


def test_emulator_keeps_serving_after_a_disconnect(
    emu: AnthropicEmulator, client: anthropic.Anthropic
) -> None:
    """The same client succeeds on its next request after a dropped connection."""
    emu.script(Fault.disconnect(after_deltas=1))
    with pytest.raises(httpx2.RemoteProtocolError):
        stream_text(client, [])
    received: list[str] = []
    stream_text(client, received)
    assert received == REPLY_CHUNKS


def test_stall_longer_than_the_client_timeout_raises_api_timeout_error(
    emu: AnthropicEmulator,
) -> None:
    """Fault.stall(2) against a 0.3 s client timeout: APITimeoutError after about 0.3 s."""
    emu.script(Fault.stall(2))
    started = time.monotonic()
    with emu.client(timeout=0.3) as client, pytest.raises(anthropic.APITimeoutError) as info:
        create(client, "claude-haiku-4-5", USER_HI)
    assert time.monotonic() - started < 1.5
    assert isinstance(info.value.__cause__, httpx2.ReadTimeout)
    assert len(emu.message_requests) == 1


async def test_async_stall_raises_api_timeout_error(emu: AnthropicEmulator) -> None:
    """The async SDK raises APITimeoutError for a stall longer than its timeout."""
    emu.script(Fault.stall(2))
    async with emu.async_client(timeout=0.3) as client:
        with pytest.raises(anthropic.APITimeoutError):
            await client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=USER_HI)


def test_stall_on_a_stream_raises_api_timeout_error_when_entered(emu: AnthropicEmulator) -> None:
    """A stalled streaming request times out while the stream is being opened."""
    emu.script(Fault.stall(2))
    with emu.client(timeout=0.3) as client, pytest.raises(anthropic.APITimeoutError):
        stream_text(client, [])


def test_short_stall_then_answers_normally(
    emu: AnthropicEmulator, client: anthropic.Anthropic
) -> None:
    """A stall shorter than the client timeout only delays the normal (validated) answer."""
    emu.script(Fault.stall(0.2), Fault.stall(0.2))
    started = time.monotonic()
    assert create(client, "claude-haiku-4-5", USER_HI).content[0].type == "text"
    assert time.monotonic() - started >= 0.2
    messages: list[Any] = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]
    with pytest.raises(anthropic.BadRequestError) as info:
        create(client, "claude-opus-4-6", messages)
    assert_bad_request(info.value, PREFILL_TEXT)


def test_short_stall_then_streams_normally(
    emu: AnthropicEmulator, client: anthropic.Anthropic
) -> None:
    """A stalled streaming request streams the full reply once the stall is over."""
    emu.script(Fault.stall(0.1))
    received: list[str] = []
    stream_text(client, received)
    assert received == REPLY_CHUNKS


def test_stall_ends_early_when_the_client_goes_away(emu: AnthropicEmulator) -> None:
    """After the client times out and closes, the stalled handler stops waiting and exits."""
    emu.script(Fault.stall(30))
    with emu.client(timeout=0.3) as client, pytest.raises(anthropic.APITimeoutError):
        create(client, "claude-haiku-4-5", USER_HI)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and any(
        thread.name == "prefill_guard-emulator-connection" for thread in threading.enumerate()
    ):
        time.sleep(0.01)
    assert not any(
        thread.name == "prefill_guard-emulator-connection" for thread in threading.enumerate()
    )


def test_stop_is_prompt_while_a_stall_is_pending() -> None:
    """stop() during a 30 s stall returns at once; the waiting client gets APIConnectionError."""
    emu = AnthropicEmulator().start()
    emu.script(Fault.stall(30))
    errors: list[BaseException] = []

    def call() -> None:
        with emu.client(timeout=20) as client:
            try:
                create(client, "claude-haiku-4-5", USER_HI)
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    deadline = time.monotonic() + 5
    while not emu.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    emu.stop()
    elapsed = time.monotonic() - started
    worker.join(5)

    assert elapsed < 1.0
    assert not worker.is_alive()
    assert len(errors) == 1
    assert type(errors[0]) is anthropic.APIConnectionError


def test_mixed_faults_are_consumed_in_order_and_recorded(
    emu: AnthropicEmulator, client: anthropic.Anthropic
) -> None:
    """Each request takes the next fault whatever its kind; every request is recorded."""
    emu.script(Fault.stall(0), Fault.sse_error(), Fault(429), Fault.disconnect())
    assert create(client, "claude-haiku-4-5", USER_HI).content[0].type == "text"
    with pytest.raises(anthropic.APIStatusError) as sse:
        stream_text(client, [])
    assert sse.value.status_code == 200
    with pytest.raises(anthropic.RateLimitError):
        create(client, "claude-haiku-4-5", USER_HI)
    with pytest.raises(anthropic.APIConnectionError):
        create(client, "claude-haiku-4-5", USER_HI)
    assert create(client, "claude-haiku-4-5", USER_HI).content[0].type == "text"

    assert emu.pending_faults == []
    assert [request.body.get("stream", False) for request in emu.message_requests] == [
        False,
        True,
        False,
        False,
        False,
    ]


# -- lifecycle, fixture, recording ------------------------------------------------------------


def test_fixture_yields_a_started_emulator(anthropic_emulator: AnthropicEmulator) -> None:
    """The pytest plugin's `anthropic_emulator` fixture is running and usable."""
    assert anthropic_emulator.running
    assert anthropic_emulator.base_url == f"http://127.0.0.1:{anthropic_emulator.port}"
    with anthropic_emulator.client() as client:
        assert create(client, "claude-haiku-4-5", USER_HI).content[0].type == "text"
    assert len(anthropic_emulator.message_requests) == 1


def test_stop_is_idempotent_and_prompt_with_open_keep_alive_client() -> None:
    """stop() returns quickly while a client holds a keep-alive connection, and can repeat."""
    emu = AnthropicEmulator().start()
    with emu.client() as client:
        create(client, "claude-haiku-4-5", USER_HI)  # leaves a pooled keep-alive connection
        started = time.monotonic()
        emu.stop()
        assert time.monotonic() - started < 2.0
        assert not emu.running
        emu.stop()
        with pytest.raises(anthropic.APIConnectionError):
            create(client, "claude-haiku-4-5", USER_HI)


async def test_stop_is_prompt_with_open_async_keep_alive_client() -> None:
    """stop() also returns quickly while an async client holds a kept-alive connection."""
    emu = AnthropicEmulator().start()
    async with emu.async_client() as client:
        await client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=USER_HI)
        started = time.monotonic()
        emu.stop()
        assert time.monotonic() - started < 2.0


def test_start_is_idempotent_and_context_manager_stops() -> None:
    """start() twice keeps one server; leaving the `with` block stops it."""
    with AnthropicEmulator() as emu:
        port = emu.port
        assert emu.start() is emu
        assert emu.port == port
        assert emu.running
    assert not emu.running


def test_port_before_start_raises() -> None:
    """An emulator that never started has no port or base_url yet."""
    emu = AnthropicEmulator()
    with pytest.raises(RuntimeError):
        _ = emu.base_url
    emu.stop()  # stopping a never-started emulator is a no-op


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


def _for(conversation: str) -> RequestPredicate:
    """A `when=` predicate: requests that carry ``x-conversation: <conversation>``."""
    return lambda request: request.headers.get("x-conversation") == conversation


def _create_in(client: anthropic.Anthropic, conversation: str) -> Message:
    return client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=64,
        messages=USER_HI,
        extra_headers={"x-conversation": conversation},
    )


def test_a_fault_with_when_goes_to_the_first_request_it_accepts(
    emu: AnthropicEmulator, client: anthropic.Anthropic
) -> None:
    """Requests the predicate refuses pass the fault by; the first it accepts consumes it."""
    emu.script(Fault(529), when=_for("b"))

    assert _create_in(client, "a").content[0].type == "text"
    assert emu.pending_faults == [Fault(529)]
    with pytest.raises(anthropic.OverloadedError):
        _create_in(client, "b")
    assert _create_in(client, "b").content[0].type == "text"
    assert emu.pending_faults == []
    assert len(emu.message_requests) == 3


def test_a_waiting_fault_keeps_its_place_while_others_are_consumed(
    emu: AnthropicEmulator, client: anthropic.Anthropic
) -> None:
    """A request takes the first queued fault that applies to it, in the order scripted."""
    emu.script(Fault(503), when=_for("later"))
    emu.script(Fault(429), Fault(500))

    with pytest.raises(anthropic.RateLimitError):
        _create_in(client, "now")
    assert emu.pending_faults == [Fault(503), Fault(500)]
    with pytest.raises(anthropic.APIStatusError) as unavailable:
        _create_in(client, "later")
    assert unavailable.value.status_code == 503
    with pytest.raises(anthropic.InternalServerError):
        _create_in(client, "now")
    assert emu.pending_faults == []


async def test_faults_reach_the_chosen_requests_among_many_in_flight(
    emu: AnthropicEmulator,
) -> None:
    """With 40 requests in flight at once, exactly the chosen conversations meet the 529."""
    chosen = {"c3", "c17", "c31"}
    for conversation in sorted(chosen):
        emu.script(Fault(529), when=_for(conversation))
    async with emu.async_client() as client:
        results = await asyncio.gather(
            *(
                client.messages.create(
                    model="claude-haiku-4-5",
                    max_tokens=64,
                    messages=USER_HI,
                    extra_headers={"x-conversation": f"c{index}"},
                )
                for index in range(40)
            ),
            return_exceptions=True,
        )
    overloaded = {
        f"c{index}"
        for index, result in enumerate(results)
        if isinstance(result, anthropic.OverloadedError)
    }
    assert overloaded == chosen
    assert sum(isinstance(result, Message) for result in results) == 40 - len(chosen)
    assert emu.pending_faults == []


def test_a_when_that_raises_answers_500_and_keeps_the_fault(
    emu: AnthropicEmulator, client: anthropic.Anthropic
) -> None:
    """A broken predicate is reported in the 500's message; its fault is not consumed."""

    def broken(request: RecordedRequest) -> bool:
        raise KeyError("no such header")

    emu.script(Fault(529), when=broken)
    with pytest.raises(anthropic.InternalServerError) as failed:
        create(client, "claude-haiku-4-5", USER_HI)
    assert api_message(failed.value) == "emulator when= raised KeyError('no such header')"
    assert emu.pending_faults == [Fault(529)]
    assert len(emu.message_requests) == 1


@pytest.mark.parametrize(
    ("faults", "when", "text"),
    [
        ((529,), None, "script() takes Fault objects; faults[0] is 529"),
        ((Fault(529), "529"), None, "faults[1] is '529'"),
        ((Fault(529),), "c1", "when must be a function of the request, got 'c1'"),
    ],
)
def test_script_refuses_what_is_not_a_fault_or_a_predicate(
    emu: AnthropicEmulator, faults: tuple[Any, ...], when: Any, text: str
) -> None:
    """Bad arguments to script() are named, and nothing is queued."""
    with pytest.raises(TypeError, match=re.escape(text)):
        emu.script(*faults, when=when)
    assert emu.pending_faults == []


def test_client_kwargs_override_defaults(emu: AnthropicEmulator) -> None:
    """client(**kwargs) passes options through, overriding the defaults."""
    with emu.client(api_key="other-key", max_retries=2) as client:
        assert client.max_retries == 2
        create(client, "claude-haiku-4-5", USER_HI)
    headers = emu.requests[0].headers
    assert "other-key" in headers.get("x-api-key", "") + headers.get("authorization", "")


# -- make_api_error ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        Fault(400),
        Fault(401),
        Fault(413),
        Fault(429, headers={"retry-after": "7"}),
        Fault(500),
        Fault(502, body="<html>bad gateway</html>"),
        Fault(503),
        Fault(529),
        Fault(400, body={"message": "flat proxy body"}),
    ],
    ids=lambda fault: f"{fault.status}-{type(fault.body).__name__}",
)
def test_make_api_error_matches_what_the_sdk_raises(
    emu: AnthropicEmulator, client: anthropic.Anthropic, fault: Fault
) -> None:
    """make_api_error builds the same class, body, message and headers as a real SDK call."""
    emu.script(fault)
    with pytest.raises(anthropic.APIStatusError) as info:
        create(client, "claude-haiku-4-5", USER_HI)
    real = info.value
    assert isinstance(real.body, (dict, str))

    made = make_api_error(
        fault.status,
        body=real.body,
        request_id=real.request_id,
        headers=dict(fault.headers),
    )
    assert type(made) is type(real)
    assert made.status_code == real.status_code
    assert made.body == real.body
    assert made.message == real.message
    assert api_message(made) == api_message(real)
    assert api_error_type(made) == api_error_type(real)
    assert made.request_id == real.request_id
    for name, value in fault.headers.items():
        assert made.response.headers[name] == value


def test_make_api_error_builds_the_standard_body_from_message() -> None:
    """With a message, the body is the API's error shape and the class follows the status."""
    error = make_api_error(400, PREFILL_MESSAGE)
    assert isinstance(error, anthropic.BadRequestError)
    assert api_message(error) == PREFILL_MESSAGE
    assert api_error_type(error) == "invalid_request_error"
    assert_error_shape(error.body, "invalid_request_error", PREFILL_MESSAGE)
    assert isinstance(error.body, dict)
    assert error.request_id == error.body["request_id"]


def test_make_api_error_overrides_and_defaults() -> None:
    """request_id/error_type override parts; no message means the standard one."""
    vertex = make_api_error(400, "boom", request_id="req_vrtx_0123")
    assert vertex.request_id == "req_vrtx_0123"
    assert isinstance(vertex.body, dict)
    assert vertex.body["request_id"] == "req_vrtx_0123"

    sse = make_api_error(200, PREFILL_MESSAGE, error_type="invalid_request_error")
    assert type(sse) is anthropic.APIStatusError
    assert api_error_type(sse) == "invalid_request_error"

    overloaded = make_api_error(529)
    assert isinstance(overloaded, anthropic.OverloadedError)
    assert api_message(overloaded) == "Overloaded"

    text = make_api_error(502, body="  upstream said no  ")
    assert isinstance(text, anthropic.InternalServerError)
    assert text.body == "upstream said no"
    assert api_message(text) is None


def test_make_api_error_falls_back_to_public_classes_without_sdk_factory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If the SDK has no status-error factory, the public-class table picks the class."""
    monkeypatch.setattr(anthropic.Anthropic, "_make_status_error", None)
    assert type(make_api_error(400, "x")) is anthropic.BadRequestError
    assert type(make_api_error(529)) is anthropic.OverloadedError
    assert type(make_api_error(502)) is anthropic.InternalServerError
    assert type(make_api_error(200, "x")) is anthropic.APIStatusError


# -- model rules: the other breaking changes ---------------------------------------------------

TOOL_USE = {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {}}
TOOLS: list[Any] = [
    {"name": "get_weather", "description": "Weather.", "input_schema": {"type": "object"}}
]


def post(client: anthropic.Anthropic, model: str, messages: list[Any], **params: Any) -> Message:
    """messages.create() with parameters the SDK has no argument for sent via extra_body."""
    extra = {key: params.pop(key) for key in ("temperature", "top_p", "top_k") if key in params}
    message = client.messages.create(
        model=model, max_tokens=4096, messages=messages, extra_body=extra or None, **params
    )
    assert isinstance(message, Message)
    return message


def rejected(client: anthropic.Anthropic, model: str, messages: list[Any], **params: Any) -> str:
    with pytest.raises(anthropic.BadRequestError) as info:
        post(client, model, messages, **params)
    assert_bad_request(info.value, api_message(info.value) or "")
    return api_message(info.value) or ""


def test_rule_message_constants_are_the_api_wording() -> None:
    """The exported texts are the API's sentences, byte for byte."""
    assert TEMPERATURE_TOP_P_MESSAGE == (
        "`temperature` and `top_p` cannot both be specified for this model. Please use only one."
    )
    assert TEMPERATURE_DEPRECATED_MESSAGE == "`temperature` is deprecated for this model."
    assert THINKING_ENABLED_MESSAGE == (
        '"thinking.type.enabled" is not supported for this model. Use "thinking.type.adaptive" '
        'and "output_config.effort" to control thinking behavior.'
    )
    assert FORCED_TOOL_CHOICE_MESSAGE == (
        'tool_choice: type "tool" and "any" are not supported for this model.'
    )
    assert orphaned_tool_use_message(3, ["toolu_a", "toolu_b"]) == (
        "messages.3: `tool_use` ids were found without `tool_result` blocks immediately after: "
        "toolu_a, toolu_b. Each `tool_use` block must have a corresponding `tool_result` block "
        "in the next message."
    )
    assert prompt_too_long_message(210, 200) == "prompt is too long: 210 tokens > 200 maximum"
    assert tuple(DEFAULT_RULES) == RULE_NAMES


@pytest.mark.parametrize(
    ("model", "temperature_top_p", "sampling_deprecated", "forced_tool_choice"),
    [
        ("claude-haiku-4-5", True, False, False),
        ("claude-sonnet-4-5-20250929", True, False, False),
        ("claude-sonnet-4", False, False, False),
        ("claude-opus-4-5", False, False, False),
        ("claude-opus-4-6", True, False, False),
        ("claude-opus-4-7", True, True, False),
        ("claude-opus-4-8", True, True, False),
        ("claude-sonnet-4-6", True, False, False),
        ("claude-opus-5-5", True, True, True),
        ("claude-sonnet-5-5", True, False, True),
        ("claude-mythos-5-1", True, False, True),
        ("claude-fable-5", True, False, True),
        ("claude-3-5-sonnet-20241022", False, False, False),
        ("gpt-5", False, False, False),
    ],
)
def test_default_rule_predicates(
    model: str, temperature_top_p: bool, sampling_deprecated: bool, forced_tool_choice: bool
) -> None:
    """Which families each default rule selects."""
    assert model_rejects_temperature_with_top_p(model) is temperature_top_p
    assert model_deprecates_sampling(model) is sampling_deprecated
    assert model_rejects_enabled_thinking(model) is sampling_deprecated
    assert model_rejects_forced_tool_choice(model) is forced_tool_choice


@given(st.text())
def test_default_rule_predicates_never_raise(model: str) -> None:
    """Any string is classified without raising."""
    for rule in DEFAULT_RULES.values():
        assert isinstance(rule(model), bool)


@pytest.mark.parametrize(
    ("model", "params", "message"),
    [
        ("claude-haiku-4-5", {"temperature": 0.5, "top_p": 0.9}, TEMPERATURE_TOP_P_MESSAGE),
        ("claude-opus-4-7", {"temperature": 0.5}, TEMPERATURE_DEPRECATED_MESSAGE),
        ("claude-opus-4-7", {"top_k": 5}, "`top_k` is deprecated for this model."),
        (
            "claude-opus-4-7",
            {"thinking": {"type": "enabled", "budget_tokens": 1024}},
            THINKING_ENABLED_MESSAGE,
        ),
        (
            "claude-opus-5-5",
            {"tools": TOOLS, "tool_choice": {"type": "tool", "name": "get_weather"}},
            FORCED_TOOL_CHOICE_MESSAGE,
        ),
        (
            "claude-sonnet-5-5",
            {"tools": TOOLS, "tool_choice": {"type": "any"}},
            FORCED_TOOL_CHOICE_MESSAGE,
        ),
        (
            "claude-opus-4-7",
            {"thinking": {"type": "adaptive", "budget_tokens": 1024}},
            "thinking.adaptive.budget_tokens: Extra inputs are not permitted",
        ),
        (
            "claude-opus-4-7",
            {"output_config": {"effort": "extreme"}},
            "output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'",
        ),
    ],
)
def test_parameter_rules_answer_with_the_api_text(
    client: anthropic.Anthropic, model: str, params: dict[str, Any], message: str
) -> None:
    """Each parameter rule's 400, through the real SDK."""
    assert rejected(client, model, list(USER_HI), **params) == message


@pytest.mark.parametrize(
    ("model", "params"),
    [
        ("claude-haiku-4-5", {"temperature": 0.5}),
        ("claude-opus-4-1", {"temperature": 0.5, "top_p": 0.9}),
        ("claude-opus-4-1", {"thinking": {"type": "enabled", "budget_tokens": 1024}}),
        ("claude-opus-4-7", {"thinking": {"type": "adaptive"}, "output_config": {"effort": "max"}}),
        ("claude-opus-4-6", {"tools": TOOLS, "tool_choice": {"type": "any"}}),
        ("claude-opus-5-5", {"tools": TOOLS, "tool_choice": {"type": "auto"}}),
    ],
)
def test_parameter_rules_accept_what_the_model_takes(
    client: anthropic.Anthropic, model: str, params: dict[str, Any]
) -> None:
    """Models outside a rule, and the repaired shapes, get a normal 200."""
    assert post(client, model, list(USER_HI), **params).model == model


def test_parameter_rules_come_before_conversation_rules(client: anthropic.Anthropic) -> None:
    """Deprecation first, then the pair, then the conversation (the documented order)."""
    prefill: list[Any] = [*USER_HI, {"role": "assistant", "content": "Sure"}]
    both = {"temperature": 0.5, "top_p": 0.9}
    assert rejected(client, "claude-opus-4-7", prefill, **both) == TEMPERATURE_DEPRECATED_MESSAGE
    assert rejected(client, "claude-sonnet-4-6", prefill, **both) == TEMPERATURE_TOP_P_MESSAGE
    assert rejected(client, "claude-sonnet-4-6", prefill, temperature=0.5) == PREFILL_MESSAGE


def test_orphaned_tool_use_names_the_message_and_the_ids(client: anthropic.Anthropic) -> None:
    """A tool_use answered by plain text: the API's 400 with the index and every missing id."""
    second = {**TOOL_USE, "id": "toolu_01B"}
    messages: list[Any] = [
        *USER_HI,
        {"role": "assistant", "content": [TOOL_USE, second]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01A"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "next"},
    ]
    message = rejected(client, "claude-haiku-4-5", messages)
    assert message == orphaned_tool_use_message(1, ["toolu_01B"])


def test_unexpected_tool_result_is_rejected(client: anthropic.Anthropic) -> None:
    """A tool_result that answers no tool_use of the previous message: the API's 400."""
    messages: list[Any] = [
        *USER_HI,
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_X"}]},
    ]
    message = rejected(client, "claude-haiku-4-5", messages)
    assert message == unexpected_tool_result_message(2, 0, ["toolu_X"])


def test_answered_and_final_tool_use_are_accepted(client: anthropic.Anthropic) -> None:
    """Results in the next message pass; a final tool_use is left to the prefill rule."""
    answered: list[Any] = [
        *USER_HI,
        {"role": "assistant", "content": [TOOL_USE]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "sunny"},
                {"type": "text", "text": "thanks"},
            ],
        },
    ]
    assert post(client, "claude-opus-4-6", answered).model == "claude-opus-4-6"
    final: list[Any] = [*USER_HI, {"role": "assistant", "content": [TOOL_USE]}]
    assert post(client, "claude-haiku-4-5", final).model == "claude-haiku-4-5"
    assert rejected(client, "claude-opus-4-6", final) == PREFILL_MESSAGE


def test_tool_blocks_need_their_ids(client: anthropic.Anthropic) -> None:
    """tool_use without id / tool_result without tool_use_id: a schema 400."""
    no_id: list[Any] = [*USER_HI, {"role": "assistant", "content": [{"type": "tool_use"}]}]
    assert rejected(client, "claude-haiku-4-5", no_id) == "messages.1.content.0.id: Field required"
    no_ref: list[Any] = [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": 7}]}]
    assert rejected(client, "claude-haiku-4-5", no_ref) == (
        "messages.0.content.0.tool_use_id: Input should be a valid string"
    )


def test_rules_are_configurable_per_model_family() -> None:
    """rules= takes names (date suffix allowed), predicates and bools; others keep defaults."""
    rules: dict[str, Any] = {
        "temperature_top_p": ["my-model"],
        "sampling_deprecated": lambda model: model.startswith("strict-"),
        "orphaned_tool_use": False,
        "blank_text": False,
    }
    with AnthropicEmulator(rules=rules) as emu, emu.client() as client:
        both = {"temperature": 0.5, "top_p": 0.9}
        assert rejected(client, "my-model-20260101", list(USER_HI), **both) == (
            TEMPERATURE_TOP_P_MESSAGE
        )
        assert post(client, "claude-haiku-4-5", list(USER_HI), **both).model
        assert rejected(client, "strict-1", list(USER_HI), top_p=1) == (
            "`top_p` is deprecated for this model."
        )
        assert post(client, "claude-opus-4-7", list(USER_HI), temperature=1).model
        orphan: list[Any] = [*USER_HI, {"role": "assistant", "content": [TOOL_USE]}, *USER_HI]
        assert post(client, "claude-haiku-4-5", orphan).model
        assert post(client, "claude-haiku-4-5", [{"role": "user", "content": " "}]).model
        assert emu.rule_applies("prefill", "claude-opus-4-6")
        emu.set_rule("prefill", True)
        assert emu.rejects_prefill("claude-haiku-4-5")
        emu.set_rule("blank_text", None)  # back to the default
        assert rejected(client, "claude-haiku-4-5", [{"role": "user", "content": " "}]) == (
            WHITESPACE_TEXT_MESSAGE
        )
        emu.set_rule("trailing_whitespace", False)
        trailing: list[Any] = [*USER_HI, {"role": "assistant", "content": "x "}]
        emu.set_rule("prefill", False)
        assert post(client, "claude-opus-4-6", trailing).model
        emu.set_rule("trailing_whitespace", None)
        assert rejected(client, "claude-opus-4-6", trailing) == TRAILING_WHITESPACE_MESSAGE


def test_rule_configuration_errors() -> None:
    """Unknown names, a bare str, and both spellings of the prefill rule are refused."""
    with pytest.raises(ValueError, match="unknown emulator rule"):
        AnthropicEmulator(rules={"prefil": True})
    with pytest.raises(TypeError, match="collection of model names"):
        AnthropicEmulator(rules={"prefill": "claude-opus-4-6"})
    with pytest.raises(TypeError, match="must be str"):
        AnthropicEmulator(rules={"prefill": [1]})  # type: ignore[list-item]
    with pytest.raises(ValueError, match="not both"):
        AnthropicEmulator(no_prefill_models=["x"], rules={"prefill": ["y"]})
    emu = AnthropicEmulator()
    with pytest.raises(ValueError, match="unknown emulator rule"):
        emu.rule_applies("nope", "claude-opus-4-6")
    with pytest.raises(ValueError, match="unknown emulator rule"):
        emu.set_rule("nope", True)
    with pytest.raises(ValueError, match="max_input_tokens"):
        AnthropicEmulator(max_input_tokens=0)
    with pytest.raises(ValueError, match="max_input_tokens"):
        emu.max_input_tokens = True


def test_prompt_too_long(emu: AnthropicEmulator, client: anthropic.Anthropic) -> None:
    """Above max_input_tokens (a word is a token): the API's "prompt is too long" 400."""
    assert emu.max_input_tokens is None
    emu.max_input_tokens = 5
    long: list[Any] = [{"role": "user", "content": "one two three four five six"}]
    assert rejected(client, "claude-opus-4-6", long) == prompt_too_long_message(6, 5)
    assert post(client, "claude-opus-4-6", [{"role": "user", "content": "one two"}]).model
    emu.max_input_tokens = None
    assert post(client, "claude-opus-4-6", long).model
    with AnthropicEmulator(max_input_tokens=3) as small, small.client() as small_client:
        assert rejected(small_client, "claude-haiku-4-5", long) == prompt_too_long_message(6, 3)


def test_clean_disconnect_ends_a_stream_early_without_an_error(
    emu: AnthropicEmulator, client: anthropic.Anthropic
) -> None:
    """Fault.disconnect(clean=True): the body ends properly, but before message_stop."""
    emu.script(Fault.disconnect(after_deltas=1, clean=True))
    with client.messages.stream(
        model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        types = [event.type for event in stream]
    assert "message_stop" not in types
    assert types.count("content_block_delta") == 1


def test_clean_applies_only_to_disconnect_faults() -> None:
    """clean=True on another kind is refused, like every field that does not apply."""
    with pytest.raises(ValueError, match="clean does not apply to a 'stall' fault"):
        Fault(200, kind="stall", seconds=1.0, clean=True)


@pytest.mark.parametrize(
    ("model", "rejects"),
    [
        ("anthropic.claude-opus-4-6-v1:0", True),
        ("us.anthropic.claude-sonnet-4-6-v1:0", True),
        ("global.anthropic.claude-opus-4-7", True),
        ("claude-opus-4-6@20260101", True),
        ("anthropic.claude-haiku-4-5-20251001-v1:0", False),
        ("claude-haiku-4-5@20251001", False),
    ],
)
def test_platform_model_spellings_follow_the_same_rule(model: str, rejects: bool) -> None:
    """Bedrock and Vertex ids name the same families: the prefill rule reads them too."""
    assert model_rejects_prefill(model) is rejects
