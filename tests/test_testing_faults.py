"""Tests for prefill_guard.testing.faults: scripted faults (status, SSE error, disconnect, stall),
their validation and `when=` predicates, as the real SDK sees them over HTTP."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types import Message

from prefill_guard import api_error_type, api_message
from prefill_guard.testing import AnthropicEmulator, Fault, RecordedRequest, RequestPredicate

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
