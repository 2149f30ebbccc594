"""The emulator in memory: an `httpx2.MockTransport` over the same responder as the HTTP server.

A test that needs no socket gives the SDK an http client on this transport; every request gets
the answer it would get over HTTP, with the same rules, faults and recorded requests. Faults
map onto what the SDK sees of the real thing:

- a status or ``sse_error`` fault: the same status, headers and body, or the same events;
- ``disconnect``: the body ends early and then raises `httpx2.RemoteProtocolError`, as a
  dropped connection does (half a JSON body; a stream after its events). ``clean=True`` ends a
  stream early without an error;
- ``stall``: ``time.sleep(seconds)``, then the normal answer. Nothing ends it early: there is
  no connection to close and no ``stop()``, and a client timeout cannot interrupt it (the
  transport does not enforce timeouts). In async code the sleep blocks the event loop.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Final

import httpx2

from .api_errors import reason_phrase
from .responder import Responder, Response, joined_headers, refuse_body

__all__ = ["IN_MEMORY_BASE_URL", "in_memory_transport"]

IN_MEMORY_BASE_URL: Final[str] = "http://emulator.invalid"
"""The ``base_url`` of SDK clients on the in-memory transport (never resolved: no socket)."""

_DROPPED: Final[str] = "peer closed connection without sending complete message body"


class _Body(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """A response body sent in parts; with `cut`, it ends as a dropped connection does."""

    def __init__(self, parts: tuple[bytes, ...], cut: str | None, request: httpx2.Request) -> None:
        self._parts = tuple(part for part in parts if part)
        self._cut = cut
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        yield from self._parts
        self._end()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self._parts:
            yield part
        self._end()

    def _end(self) -> None:
        if self._cut is not None:
            raise httpx2.RemoteProtocolError(f"{_DROPPED} ({self._cut})", request=self._request)


def _stall(seconds: float) -> bool:
    time.sleep(seconds)
    return True


def _to_httpx(response: Response, request: httpx2.Request) -> httpx2.Response:
    """The responder's answer as an httpx2 response, framed as the HTTP server frames it."""
    headers = dict(response.headers)
    parts: tuple[bytes, ...]
    if response.events is not None:
        parts = response.events
        cut = "incomplete chunked read" if response.drop else None
    elif response.bodiless:
        parts, cut = (), None
    else:
        body = response.body
        headers["content-length"] = str(len(body))
        sent = body[: len(body) // 2] if response.drop else body
        parts = (sent,)
        cut = f"received {len(sent)} bytes, expected {len(body)}" if len(sent) < len(body) else None
    if request.method == "HEAD":
        parts, cut = (), None
    return httpx2.Response(
        response.status,
        headers=headers,
        stream=_Body(parts, cut, request),
        request=request,
        extensions={
            "http_version": b"HTTP/1.1",
            "reason_phrase": reason_phrase(response.status).encode("ascii"),
        },
    )


def in_memory_transport(responder: Responder) -> httpx2.MockTransport:
    """A transport that answers every request with `responder`, in the calling thread.

    It works for `httpx2.Client` and `httpx2.AsyncClient` alike; see the module docstring for
    what each fault does in memory.
    """

    def handle(request: httpx2.Request) -> httpx2.Response:
        headers = joined_headers(request.headers.multi_items())
        refusal = refuse_body(headers.get("transfer-encoding"), len(request.content))
        if refusal is not None:
            return _to_httpx(refusal, request)
        response = responder.respond(
            request.method,
            request.url.raw_path.decode("ascii"),
            headers,
            request.content,
            wait=_stall,
        )
        if response is None:  # no answer (only a stall cut short gives none): a closed connection
            raise httpx2.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        return _to_httpx(response, request)

    return httpx2.MockTransport(handle)
