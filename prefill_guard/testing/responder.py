"""The emulator's API logic without I/O: state, scripted faults, validation and the answers.

`Responder.respond` turns one request (method, path, headers, body bytes) into a `Response`
value; the HTTP server (`server`) and the in-memory transport (`transport`) only carry it, so
both answer every request alike.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

from .. import models
from .api_errors import ERROR_TYPE_STATUS, error_body, new_id, standard_error
from .checks import Rejection, check_request, input_tokens
from .faults import Fault, RecordedRequest, RequestPredicate
from .rules import DEFAULT_RULES, RULE_NAMES, ModelRule, compile_rule, names_rule

__all__ = [
    "DEFAULT_REPLY_TEXT",
    "MAX_BODY_BYTES",
    "Reply",
    "Responder",
    "Response",
    "joined_headers",
    "refuse_body",
    "tool_use",
]

DEFAULT_REPLY_TEXT: Final[str] = "Hello from the prefill_guard emulator."
"""The assistant text the emulator answers with when no other reply is configured."""

MAX_BODY_BYTES: Final[int] = 32 * 1024 * 1024
"""The real API's request-size limit: a larger body gets 413."""

_MESSAGES_PATH: Final[str] = "/v1/messages"
# The platforms' paths for the same Messages API: the model is in the path, not the body.
_BEDROCK_PATH: Final[re.Pattern[str]] = re.compile(r"/model/(?P<model>[^/]+)/invoke")
_VERTEX_PATH: Final[re.Pattern[str]] = re.compile(
    r"/projects/[^/]+/locations/[^/]+/publishers/anthropic/models/(?P<model>[^/:]+)"
    r":(?P<specifier>rawPredict|streamRawPredict)"
)
_CHUNK_RE: Final[re.Pattern[str]] = re.compile(r"\s*\S+\s*|\s+")
_MODELS_PATH: Final[re.Pattern[str]] = re.compile(r"/v1/models(?:/(?P<model>[^/]+))?/?")
_LENGTH_REQUIRED_MESSAGE: Final[str] = (
    "chunked request bodies are not accepted: send the body with a Content-Length header"
)


def _messages_route(method: str, path: str) -> tuple[str | None] | None:
    """For a Messages request (direct API, Bedrock ``invoke`` or Vertex ``rawPredict``), a
    1-tuple of the model named in the path (None for the direct API); None for anything else."""
    if method != "POST":
        return None
    route = unquote(urlsplit(path).path)
    if route == _MESSAGES_PATH:
        return (None,)
    match = _BEDROCK_PATH.fullmatch(route) or _VERTEX_PATH.fullmatch(route)
    return (match["model"],) if match else None


@dataclass(frozen=True)
class Response:
    """What the emulator answers: a plain body, or (``events`` set) a stream of SSE events.

    ``drop`` cuts the answer short as a dropped connection does: only half of ``body`` is sent,
    or the events without the end of the stream.
    """

    status: int
    body: bytes
    headers: Mapping[str, str]  # lower-cased names
    events: tuple[bytes, ...] | None = None
    drop: bool = False

    @property
    def bodiless(self) -> bool:
        """Whether HTTP forbids this status a body (1xx, 204, 304), so none is sent."""
        return self.status < 200 or self.status in (204, 304)


Reply = str | list[dict[str, Any]]
"""What the emulator answers with: the assistant's text, or its content blocks (``text`` and
``tool_use`` blocks, see `tool_use`)."""


def tool_use(name: str, input: Mapping[str, Any], *, id: str | None = None) -> dict[str, Any]:
    """A ``tool_use`` content block for a scripted reply (its id made up unless given)."""
    return {"type": "tool_use", "id": id or new_id("toolu_"), "name": name, "input": dict(input)}


def _blocks(reply: Reply) -> list[dict[str, Any]]:
    return [{"type": "text", "text": reply}] if isinstance(reply, str) else copy.deepcopy(reply)


def _json_pieces(value: Any) -> list[str]:
    """A tool input's JSON in three pieces, as ``input_json_delta`` events carry it."""
    text = json.dumps(value)
    third = max(1, len(text) // 3)
    return [text[:third], text[third : 2 * third], text[2 * third :]]


@dataclass(frozen=True)
class _Completion:
    """One emulated assistant reply, rendered as a Message body or as its SSE events."""

    model: str
    reply: Reply
    input_tokens: int

    @property
    def blocks(self) -> list[dict[str, Any]]:
        """The reply's content blocks."""
        return _blocks(self.reply)

    @property
    def output_tokens(self) -> int:
        """One token per word of the text and of the tool inputs' JSON, at least one."""
        words = 0
        for block in self.blocks:
            text = block.get("text") if block["type"] == "text" else json.dumps(block.get("input"))
            words += len(str(text).split())
        return max(1, words)

    @property
    def stop_reason(self) -> str:
        return "tool_use" if any(b["type"] == "tool_use" for b in self.blocks) else "end_turn"

    @property
    def chunks(self) -> list[str]:
        """The first text block split into text deltas: each word with its trailing whitespace.

        Leading whitespace goes with the first word (or is the only delta), so the deltas always
        join to exactly the text; an empty text has none.
        """
        first = self.blocks[0] if self.blocks else {}
        return _CHUNK_RE.findall(first.get("text", "")) if first.get("type") == "text" else []

    def message(self) -> dict[str, Any]:
        """The reply as the API's Message body."""
        return {
            "id": new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": self.blocks,
            "stop_reason": self.stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens},
        }

    @staticmethod
    def _start(index: int, block: dict[str, Any]) -> bytes:
        empty = {"type": "text", "text": ""} if block["type"] == "text" else {**block, "input": {}}
        return _sse_event(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": empty},
        )

    @staticmethod
    def _delta(index: int, delta: dict[str, Any]) -> bytes:
        return _sse_event(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        )

    def stream_head(self) -> list[bytes]:
        """message_start, the first content_block_start and ping: what precedes the first
        delta."""
        message = {
            **self.message(),
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 1},
        }
        head = [_sse_event("message_start", {"type": "message_start", "message": message})]
        if self.blocks:
            head.append(self._start(0, self.blocks[0]))
        return [*head, _sse_event("ping", {"type": "ping"})]

    def stream_deltas(self) -> list[bytes]:
        """One piece per content_block_delta event, in order; a piece that opens a later block
        carries the stop of the block before it and its own start first."""
        pieces: list[bytes] = []
        for index, block in enumerate(self.blocks):
            opening = b"" if index == 0 else self._stop(index - 1) + self._start(index, block)
            if block["type"] == "text":
                texts = _CHUNK_RE.findall(block.get("text", ""))
                deltas = [self._delta(index, {"type": "text_delta", "text": t}) for t in texts]
            else:
                parts = _json_pieces(block.get("input", {}))
                deltas = [
                    self._delta(index, {"type": "input_json_delta", "partial_json": part})
                    for part in parts
                ]
            if deltas:
                pieces.extend([opening + deltas[0], *deltas[1:]])
            elif opening:
                pieces.append(opening)
        return pieces

    @staticmethod
    def _stop(index: int) -> bytes:
        return _sse_event("content_block_stop", {"type": "content_block_stop", "index": index})

    def stream_tail(self) -> list[bytes]:
        """The last content_block_stop, message_delta and message_stop."""
        tail = [self._stop(len(self.blocks) - 1)] if self.blocks else []
        return [
            *tail,
            _sse_event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": self.output_tokens},
                },
            ),
            _sse_event("message_stop", {"type": "message_stop"}),
        ]

    def stream(self) -> list[bytes]:
        """Every event of the streamed reply, in the API's order."""
        return self.stream_head() + self.stream_deltas() + self.stream_tail()


def _sse_event(name: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _sse_response(events: Iterable[bytes], *, drop: bool = False) -> Response:
    return Response(
        status=200,
        body=b"",
        headers={
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            "request-id": new_id("req_"),
        },
        events=tuple(events),
        drop=drop,
    )


def _json_response(status: int, body: Mapping[str, Any]) -> Response:
    request_id = body.get("request_id")
    if not isinstance(request_id, str):
        request_id = new_id("req_")
    return Response(
        status=status,
        body=json.dumps(body).encode("utf-8"),
        headers={"content-type": "application/json", "request-id": request_id},
    )


def _error_response(status: int, message: str | None = None) -> Response:
    return _json_response(status, error_body(status, message))


def _status_fault_response(fault: Fault) -> Response:
    if isinstance(fault.body, bytes):
        response = Response(
            status=fault.status,
            body=fault.body,
            headers={"content-type": "application/octet-stream", "request-id": new_id("req_")},
        )
    elif isinstance(fault.body, str):
        content_type = "text/html" if fault.body.lstrip().startswith("<") else "text/plain"
        response = Response(
            status=fault.status,
            body=fault.body.encode("utf-8"),
            headers={
                "content-type": f"{content_type}; charset=utf-8",
                "request-id": new_id("req_"),
            },
        )
    else:
        body = error_body(fault.status) if fault.body is None else fault.body
        response = _json_response(fault.status, body)
    headers = dict(response.headers)
    headers.update({name.lower(): value for name, value in fault.headers.items()})
    return Response(status=response.status, body=response.body, headers=headers)


def _model_info(model: str) -> dict[str, Any]:
    """The Models API's entry for one model of the model table."""
    return {
        "type": "model",
        "id": model,
        "display_name": model.replace("-", " ").title(),
        "created_at": "2026-01-01T00:00:00Z",
        "lifecycle": "active",
    }


def _models_response(path: str, query: str) -> Response:
    """``GET /v1/models`` (the model table, newest first, a page at a time: ``limit``, 20 by
    default and 1 to 1,000, and ``after_id`` or ``before_id``) or ``/v1/models/{id}``."""
    model = _MODELS_PATH.fullmatch(path)["model"]  # type: ignore[index]
    if model is not None:
        if model not in models.KNOWN_MODELS:
            return _error_response(404, f"model: {model}")
        return _json_response(200, _model_info(model))
    params = {name: values[-1] for name, values in parse_qs(query).items()}
    limit = params.get("limit", "20")
    if not limit.isdecimal() or not 1 <= int(limit) <= 1000:
        return _error_response(400, "limit: Input should be between 1 and 1000")
    names = list(models.KNOWN_MODELS)
    for key in ("after_id", "before_id"):
        if key in params and params[key] not in names:
            return _error_response(400, f"{key}: unknown model id {params[key]!r}")
    if "before_id" in params:
        end = names.index(params["before_id"])
        start = max(0, end - int(limit))
        has_more = start > 0
    else:
        start = names.index(params["after_id"]) + 1 if "after_id" in params else 0
        end = start + int(limit)
        has_more = end < len(names)
    data = [_model_info(name) for name in names[start:end]]
    return _json_response(
        200,
        {
            "data": data,
            "has_more": has_more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        },
    )


def _is_streaming(body: Any) -> bool:
    return isinstance(body, dict) and body.get("stream") is True


def refuse_body(transfer_encoding: str | None, length: int) -> Response | None:
    """The answer to a request body the emulator will not read, or None to read it.

    The emulator reads bodies by their Content-Length only (the SDK never sends chunked ones),
    so a chunked body gets 411; a `length` below 0 (an invalid Content-Length) gets 400 and
    one over `MAX_BODY_BYTES` gets 413. Such requests are not recorded.
    """
    if transfer_encoding is not None and "chunked" in transfer_encoding.lower():
        return _error_response(411, _LENGTH_REQUIRED_MESSAGE)
    if length < 0:
        return _error_response(400, "Invalid Content-Length header")
    if length > MAX_BODY_BYTES:
        return _error_response(413)
    return None


def joined_headers(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Request header fields by lower-cased name, repeated fields joined with ``", "``."""
    headers: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


def _check_max_input_tokens(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_input_tokens must be an int >= 1 or None, not {value!r}")
    return value


def _reply_problem(reply: object) -> str | None:
    """What is wrong with a reply (``None``: nothing): a str, or text and tool_use blocks."""
    if isinstance(reply, str):
        return None
    if not isinstance(reply, list):
        return f"{type(reply).__name__}, not str or a list of content blocks"
    for index, block in enumerate(reply):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            continue
        if kind == "tool_use" and all(isinstance(block.get(k), str) for k in ("id", "name")):
            continue
        return f"a bad content block at [{index}]: {block!r}"
    return None


class Responder:
    """The Messages API's answers and the emulator's state, free of I/O and thread-safe.

    It holds the rules, the reply, ``max_input_tokens``, the recorded requests and the queued
    faults; `respond` answers one request. `AnthropicEmulator` serves it over HTTP and
    `AnthropicEmulator.transport` in memory.
    """

    def __init__(
        self,
        *,
        no_prefill_models: Iterable[str] | None = None,
        reply: Reply | Callable[[dict[str, Any]], Reply] = DEFAULT_REPLY_TEXT,
        rules: Mapping[str, ModelRule] | None = None,
        max_input_tokens: int | None = None,
    ) -> None:
        """Configure the answers; see `AnthropicEmulator` for the arguments."""
        compiled = dict(DEFAULT_RULES)
        for name, applies_to in (rules or {}).items():
            compiled[name] = compile_rule(name, applies_to)
        if no_prefill_models is not None:
            if rules is not None and "prefill" in rules:
                raise ValueError("give no_prefill_models or rules['prefill'], not both")
            compiled["prefill"] = names_rule(frozenset(no_prefill_models))
        self._rules: dict[str, Callable[[str], bool]] = compiled
        self._max_input_tokens = _check_max_input_tokens(max_input_tokens)
        if not callable(reply) and (problem := _reply_problem(reply)) is not None:
            raise TypeError(f"reply must be a str or a list of content blocks, got {problem}")
        self._reply = reply
        self._replies: list[Reply] = []
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._faults: list[tuple[Fault, RequestPredicate | None]] = []

    # -- recording and scripting ---------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of every request received so far (any path), in arrival order.

        Requests whose body could not be read (bad Content-Length, a chunked body, client
        gone) are not recorded.
        """
        with self._lock:
            return list(self._requests)

    @property
    def message_requests(self) -> list[RecordedRequest]:
        """A copy of the received Messages requests, in arrival order: ``POST /v1/messages``,
        and the Bedrock (``/model/M/invoke``) and Vertex (``...:rawPredict``,
        ``...:streamRawPredict``) spellings of it. Bodies are recorded as sent."""
        return [r for r in self.requests if _messages_route(r.method, r.path) is not None]

    def script(self, *faults: Fault, when: RequestPredicate | None = None) -> None:
        """Queue faults: each next request (any path) consumes one, in order, as its answer.

        With ``when``, these faults are only for requests that ``when(request)`` accepts (a
        `RecordedRequest`: method, path, lower-cased headers, parsed body). Other requests pass
        them by and take the first queued fault that applies to them, or their normal answer;
        so with many requests in flight, a fault can still go to one chosen request, such as
        the first one that carries a given header. ``when`` runs in the thread that handles the
        request (the server's, or the caller's in memory), under the emulator's lock, so it
        should only read the request. If it raises, the request
        gets a 500 that names the exception, and the fault stays queued.
        """
        for index, fault in enumerate(faults):
            if not isinstance(fault, Fault):
                raise TypeError(f"script() takes Fault objects; faults[{index}] is {fault!r}")
        if when is not None and not callable(when):
            raise TypeError(f"when must be a function of the request, got {when!r}")
        with self._lock:
            self._faults.extend((fault, when) for fault in faults)

    def reply_with(self, *replies: Reply) -> None:
        """Queue replies: each next Messages request that is answered (not refused, not given
        a fault) takes one, in order, instead of the configured reply. A reply is the
        assistant's text or its content blocks, e.g. ``[tool_use("get_weather", {"city":
        "Oslo"})]``, which a stream sends as ``input_json_delta`` events."""
        for index, reply in enumerate(replies):
            problem = _reply_problem(reply)
            if problem is not None:
                raise TypeError(f"reply_with(): replies[{index}] is {problem}")
        with self._lock:
            self._replies.extend(copy.deepcopy(list(replies)))

    @property
    def pending_faults(self) -> list[Fault]:
        """A copy of the scripted faults that no request has consumed yet, in order."""
        with self._lock:
            return [fault for fault, _ in self._faults]

    def reset(self) -> None:
        """Forget all recorded requests and drop any pending scripted faults and replies."""
        with self._lock:
            self._requests.clear()
            self._faults.clear()
            self._replies.clear()

    # -- rules ---------------------------------------------------------------------------------

    def rejects_prefill(self, model: str) -> bool:
        """Whether this emulator treats `model` as one that rejects assistant-message prefill."""
        return self.rule_applies("prefill", model)

    def rule_applies(self, name: str, model: str) -> bool:
        """Whether the rule `name` (one of `RULE_NAMES`) applies to requests for `model`."""
        if name not in DEFAULT_RULES:
            raise ValueError(f"unknown emulator rule {name!r}; expected one of {RULE_NAMES}")
        with self._lock:
            rule = self._rules[name]
        return bool(rule(model))

    def set_rule(self, name: str, models: ModelRule | None) -> None:
        """Change which models the rule `name` applies to, also while running.

        ``models`` is a predicate, a collection of model names or a bool (see `ModelRule`);
        ``None`` restores the `DEFAULT_RULES` predicate.
        """
        rule = DEFAULT_RULES[name] if models is None and name in DEFAULT_RULES else None
        compiled = rule or compile_rule(name, models if models is not None else False)
        with self._lock:
            self._rules[name] = compiled

    @property
    def max_input_tokens(self) -> int | None:
        """The prompt length above which requests get "prompt is too long" (None: no limit).

        Settable, also while running. The emulator counts one token per word of the messages
        and the system prompt.
        """
        with self._lock:
            return self._max_input_tokens

    @max_input_tokens.setter
    def max_input_tokens(self, value: int | None) -> None:
        checked = _check_max_input_tokens(value)
        with self._lock:
            self._max_input_tokens = checked

    # -- answering -----------------------------------------------------------------------------

    def respond(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        raw: bytes,
        *,
        wait: Callable[[float], bool],
    ) -> Response | None:
        """Record and answer one request whose body was read whole.

        `path` is the request target (with any query); `headers` have lower-cased names.
        `wait(seconds)` carries out a stall and returns False if it was cut short, and then
        the answer is None: close the connection without one.
        """
        text = raw.decode("utf-8", errors="replace")
        body: Any
        if not raw:
            body = None
        else:
            try:
                body = json.loads(text)
            except ValueError:
                body = text
        recorded = RecordedRequest(method, path, headers, body)
        with self._lock:
            self._requests.append(recorded)
            try:
                fault = self._take_fault(recorded)
            except Exception as exc:
                return _error_response(500, f"emulator when= raised {exc!r}")
        try:
            if fault is not None:
                if fault.kind == "stall":
                    if not wait(fault.seconds):
                        return None
                else:
                    return self._fault_response(fault, body)
            target = urlsplit(path)
            if method == "GET" and _MODELS_PATH.fullmatch(unquote(target.path)):
                return _models_response(unquote(target.path), target.query)
            route = _messages_route(method, path)
            if route is None:
                return _error_response(404)
            (path_model,) = route
            if path_model is not None and isinstance(body, dict):
                # Bedrock/Vertex: the model comes from the path, the version is their own key.
                body = {key: value for key, value in body.items() if key != "anthropic_version"}
                body["model"] = path_model
                raw = json.dumps(body).encode()
            return self._messages(headers, raw, body)
        except Rejection as rejection:
            return _error_response(rejection.status, rejection.message)

    def _take_fault(self, request: RecordedRequest) -> Fault | None:
        """Remove and return the first queued fault that applies to ``request`` (lock held)."""
        for index, (fault, when) in enumerate(self._faults):
            if when is None or when(request):
                del self._faults[index]
                return fault
        return None

    def _fault_response(self, fault: Fault, body: Any) -> Response:
        if fault.kind == "sse_error":
            error_type = fault.error_type or "api_error"
            message = fault.message
            if message is None:
                message = standard_error(ERROR_TYPE_STATUS.get(error_type, 500))[1]
            if not _is_streaming(body):
                fault_body = error_body(fault.status, message)
                fault_body["error"]["type"] = error_type
                return _json_response(fault.status, fault_body)
            completion = self._best_effort_completion(body)
            error_event = _sse_event(
                "error", {"type": "error", "error": {"type": error_type, "message": message}}
            )
            return _sse_response(
                [
                    *completion.stream_head(),
                    *completion.stream_deltas()[: fault.after_deltas],
                    error_event,
                ]
            )
        if fault.kind == "disconnect":
            completion = self._best_effort_completion(body)
            if not _is_streaming(body):
                response = _json_response(200, completion.message())
                return Response(response.status, response.body, response.headers, drop=True)
            events = completion.stream_head() + completion.stream_deltas()[: fault.after_deltas]
            return _sse_response(events, drop=not fault.clean)
        return _status_fault_response(fault)

    def _best_effort_completion(self, body: Any) -> _Completion:
        """The reply for a request a fault answers without validating it."""
        if not isinstance(body, dict):
            return _Completion("unknown", DEFAULT_REPLY_TEXT, 1)
        model = body.get("model")
        return _Completion(
            model=model if isinstance(model, str) else "unknown",
            reply=self._reply_for(body),
            input_tokens=input_tokens(body),
        )

    def _reply_for(self, body: dict[str, Any]) -> Reply:
        """The next queued reply (`reply_with`), else the configured one; checked."""
        with self._lock:
            queued = self._replies.pop(0) if self._replies else None
        if queued is not None:
            return queued
        if not callable(self._reply):
            return self._reply
        try:
            reply = self._reply(copy.deepcopy(body))
        except Exception as exc:  # surface a broken reply callable as an API error, not a hang
            raise Rejection(500, f"emulator reply callable raised {exc!r}") from exc
        problem = _reply_problem(reply)
        if problem is not None:
            raise Rejection(500, f"emulator reply callable returned {problem}")
        return reply

    def _messages(self, headers: Mapping[str, str], raw: bytes, body: Any) -> Response:
        model = check_request(
            headers,
            raw,
            body,
            applies=self.rule_applies,
            max_input_tokens=self.max_input_tokens,
        )
        completion = _Completion(model, self._reply_for(body), input_tokens(body))
        if _is_streaming(body):
            return _sse_response(completion.stream())
        return _json_response(200, completion.message())
