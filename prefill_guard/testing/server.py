"""`AnthropicEmulator`: the responder served over HTTP on the standard library's server.

`http.server` parses requests and reads bodies by Content-Length; this module writes the
answers itself only where the faults need control of the framing (chunked SSE streams cut
short, half bodies, stalls that notice the client leaving).
"""

from __future__ import annotations

import contextlib
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

import anthropic
import httpx2

from .api_errors import reason_phrase
from .responder import (
    DEFAULT_REPLY_TEXT,
    Reply,
    Responder,
    Response,
    joined_headers,
    refuse_body,
)
from .rules import ModelRule
from .transport import IN_MEMORY_BASE_URL, in_memory_transport

__all__ = ["AnthropicEmulator"]

_STALL_POLL_SECONDS: Final[float] = 0.05  # how often a stall checks whether its client went away


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that tracks its open connections so `stop()` can end them."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128  # the default of 5 drops bursts of concurrent connections

    def __init__(self, address: tuple[str, int], responder: Responder) -> None:
        self.responder = responder
        self.stopping = threading.Event()  # set by stop(): ends stalls early
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="prefill_guard-emulator-connection",
            daemon=True,
        )
        with self._connections_lock:
            self._connections[request] = thread
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.pop(request, None)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients dropping connections is routine (keep-alive pools, stop()); stay quiet then.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)

    def close_connections(self, timeout: float) -> None:
        """End every open connection and wait (up to `timeout` each) for its thread to finish."""
        with self._connections_lock:
            connections = list(self._connections.items())
        for sock, _ in connections:
            with contextlib.suppress(OSError):  # already closed by its handler thread
                sock.shutdown(socket.SHUT_RDWR)
        for _, thread in connections:
            if thread is not threading.current_thread():
                thread.join(timeout)


class _Handler(BaseHTTPRequestHandler):
    """Per-connection request handler; all the API logic lives in the `Responder`."""

    protocol_version = "HTTP/1.1"
    server_version = "prefill_guard-emulator/1"
    sys_version = ""
    disable_nagle_algorithm = True  # avoid 40 ms Nagle/delayed-ACK stalls on keep-alive
    timeout = 60.0  # idle keep-alive connections are dropped after this many seconds
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Stay silent: tests should not see access logs on stderr."""

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_OPTIONS(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle(send_body=False)

    def _read_body(self) -> bytes | None:
        """Read the request body; if it cannot be read, answer (when there is one to give),
        close, and return None."""
        raw_length = self.headers.get("content-length")
        digits = "0" if raw_length is None else raw_length.strip()
        length = int(digits) if digits.isascii() and digits.isdigit() else -1
        refusal = refuse_body(self.headers.get("transfer-encoding"), length)
        if refusal is not None:
            self.close_connection = True
            self._send(refusal)
            return None
        data = self.rfile.read(length)
        if len(data) < length:  # client went away mid-body
            self.close_connection = True
            return None
        return data

    def _handle(self, *, send_body: bool = True) -> None:
        try:
            raw = self._read_body()
        except OSError:
            self.close_connection = True
            return
        if raw is None:
            return
        response = self.server.responder.respond(
            self.command, self.path, joined_headers(self.headers.items()), raw, wait=self._wait
        )
        if response is None:  # a stall ended by stop() or by the client leaving: no answer
            self.close_connection = True
            return
        self._send(response, send_body=send_body)

    def _wait(self, seconds: float) -> bool:
        """Wait `seconds`; False (early) if the emulator stops or the client closes its end."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if self.server.stopping.wait(min(remaining, _STALL_POLL_SECONDS)):
                return False
            if self._client_gone():
                return False
        return True

    def _client_gone(self) -> bool:
        """Whether the client closed its end (EOF or reset) while no answer was sent yet."""
        try:
            if hasattr(select, "poll"):  # unlike select(), no FD_SETSIZE limit on descriptors
                poller = select.poll()
                poller.register(self.connection, select.POLLIN)
                readable = bool(poller.poll(0))
            else:
                readable = bool(select.select([self.connection], [], [], 0)[0])
            return readable and not self.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            return True

    def _send(self, response: Response, *, send_body: bool = True) -> None:
        try:
            self.send_response(response.status, reason_phrase(response.status))
            for name, value in response.headers.items():
                if name not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(name, value)
            if response.events is not None:
                self.send_header("Transfer-Encoding", "chunked")
            elif not response.bodiless:
                self.send_header("Content-Length", str(len(response.body)))
            if response.drop:
                self.close_connection = True
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if not send_body or response.bodiless:
                return
            if response.events is None:
                body = response.body[: len(response.body) // 2] if response.drop else response.body
                self.wfile.write(body)
                return
            for event in response.events:  # one chunk per event, each sent at once
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            if not response.drop:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True


class AnthropicEmulator(Responder):
    """A local HTTP server that emulates the Anthropic Messages API for tests.

    Run it with ``with AnthropicEmulator() as emu:`` (or `start`/`stop`) and point the real SDK at
    `base_url`; it records every request and can be scripted with `Fault` answers. Without a
    socket, `transport` (or ``client(in_memory=True)``) gives the same answers in memory.
    """

    def __init__(
        self,
        *,
        no_prefill_models: Iterable[str] | None = None,
        reply: Reply | Callable[[dict[str, Any]], Reply] = DEFAULT_REPLY_TEXT,
        host: str = "127.0.0.1",
        port: int = 0,
        rules: Mapping[str, ModelRule] | None = None,
        max_input_tokens: int | None = None,
    ) -> None:
        """Configure (but do not start) the emulator.

        ``no_prefill_models=None`` uses `model_rejects_prefill`; otherwise exactly those names (each
        also with a ``-YYYYMMDD`` suffix) reject prefill. ``reply`` is the assistant text or
        its content blocks (``text`` and ``tool_use`` blocks, see `tool_use`), or a callable
        that gets the parsed request body and returns one; `reply_with` queues replies.

        ``rules`` maps rule names (`RULE_NAMES`) to the models they apply to (a `ModelRule`);
        rules not named keep their `DEFAULT_RULES` predicate. ``rules={"prefill": ...}`` and
        ``no_prefill_models`` are two spellings of one setting: give at most one.
        ``max_input_tokens`` (the emulator counts one token per word of the messages and the
        system prompt) answers longer prompts with the API's "prompt is too long" 400.
        """
        super().__init__(
            no_prefill_models=no_prefill_models,
            reply=reply,
            rules=rules,
            max_input_tokens=max_input_tokens,
        )
        self._host = host
        self._requested_port = port
        self._serving_lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> AnthropicEmulator:
        """Bind the socket and serve in a daemon thread; returns self (a no-op if running)."""
        with self._serving_lock:
            if self._server is not None:
                return self
            server = _Server((self._host, self._requested_port), self)
            self._port = int(server.server_address[1])
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.01},  # bounds how long stop() waits
                name=f"prefill_guard-emulator-{self._port}",
                daemon=True,
            )
            self._server = server
            self._thread = thread
        thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end open keep-alive connections, join the thread and close the socket.

        Safe to call more than once, and returns promptly even while clients hold connections.
        """
        with self._serving_lock:
            server, thread = self._server, self._thread
            self._server = None
            self._thread = None
        if server is None:
            return
        server.stopping.set()
        server.shutdown()
        if thread is not None:
            thread.join()
        server.close_connections(timeout=2.0)
        server.server_close()

    def __enter__(self) -> AnthropicEmulator:
        """Start the emulator for the duration of a ``with`` block."""
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        """Stop the emulator at the end of a ``with`` block."""
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the server is currently started."""
        with self._serving_lock:
            return self._server is not None

    @property
    def port(self) -> int:
        """The TCP port the server is (or was last) bound to; raises if it was never started."""
        if self._port is None:
            raise RuntimeError("the AnthropicEmulator has not been started")
        return self._port

    @property
    def base_url(self) -> str:
        """The URL to give the SDK as ``base_url``, e.g. ``http://127.0.0.1:54321``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    # -- SDK clients ---------------------------------------------------------------------------

    def transport(self) -> httpx2.MockTransport:
        """An in-memory transport to this emulator, for `httpx2.Client` or `httpx2.AsyncClient`.

        It needs no `start` and no socket, and shares this emulator's rules, faults and
        recorded requests. A stall sleeps its whole time in the calling thread, blocking the
        event loop in async code; a client timeout cannot end it (see
        `prefill_guard.testing.transport`).
        """
        return in_memory_transport(self)

    def client(self, *, in_memory: bool = False, **kwargs: Any) -> anthropic.Anthropic:
        """A sync SDK client pointed at this emulator (``max_retries=0``); kwargs override.

        With ``in_memory=True`` its ``http_client`` uses `transport` (no socket, no `start`).
        """
        options = self._client_options(in_memory, kwargs)
        if in_memory and "http_client" not in kwargs:
            options["http_client"] = httpx2.Client(transport=self.transport())
        return anthropic.Anthropic(**options)

    def async_client(self, *, in_memory: bool = False, **kwargs: Any) -> anthropic.AsyncAnthropic:
        """An async SDK client pointed at this emulator (``max_retries=0``); kwargs override.

        With ``in_memory=True`` its ``http_client`` uses `transport` (no socket, no `start`).
        """
        options = self._client_options(in_memory, kwargs)
        if in_memory and "http_client" not in kwargs:
            options["http_client"] = httpx2.AsyncClient(transport=self.transport())
        return anthropic.AsyncAnthropic(**options)

    def _client_options(self, in_memory: bool, overrides: dict[str, Any]) -> dict[str, Any]:
        return {
            "api_key": "test-key",
            "base_url": IN_MEMORY_BASE_URL if in_memory else self.base_url,
            "max_retries": 0,
            **overrides,
        }
