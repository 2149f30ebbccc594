"""Tests for prefill_guard.testing.server: the HTTP server itself (framing on the wire, keep-alive,
concurrency, stalls that end early, start and stop), with the real SDK or a raw socket."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from typing import Any

import anthropic
import pytest
from anthropic.types import Message

from prefill_guard.testing import AnthropicEmulator, Fault

from .conftest import REPLY_CHUNKS, USER_HI, assert_error_shape, create, stream_text


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


def test_client_kwargs_override_defaults(emu: AnthropicEmulator) -> None:
    """client(**kwargs) passes options through, overriding the defaults."""
    with emu.client(api_key="other-key", max_retries=2) as client:
        assert client.max_retries == 2
        create(client, "claude-haiku-4-5", USER_HI)
    headers = emu.requests[0].headers
    assert "other-key" in headers.get("x-api-key", "") + headers.get("authorization", "")
