"""An in-process emulator of the Anthropic Messages API, for tests.

`AnthropicEmulator` is a real HTTP server on 127.0.0.1 that the real `anthropic` SDK can talk to.
It answers ``POST /v1/messages`` with the same body shapes and error texts as the real API,
including the 400 that Claude 4.6-and-later models give for an assistant-message prefill, and
streams ``"stream": true`` requests as chunked server-sent events in the API's event order. It
can be scripted with `Fault` answers to exercise retry logic: HTTP errors (529, 429 with
retry-after, HTML 502 pages, ...), ``error`` events mid-stream, dropped connections and stalls.

Model-specific rejections (prefill, ``temperature`` with ``top_p``, deprecated sampling
parameters, ``thinking.type.enabled``, forced ``tool_choice``, orphaned ``tool_use`` blocks and
the whitespace rules) are *rules*, each applied to the models its predicate selects; see
`RULE_NAMES`, `DEFAULT_RULES` and ``AnthropicEmulator(rules=...)``. An optional
``max_input_tokens`` answers the API's "prompt is too long" 400.

Validation order (the first failing check answers, as the API reports one error at a time):

1. authentication, the JSON body, top-level fields and each message's shape;
2. request-parameter rules: ``sampling_deprecated``, ``temperature_top_p``,
   ``thinking_enabled`` (plus the adaptive-thinking and effort shapes), ``forced_tool_choice``;
3. conversation rules, message by message: ``orphaned_tool_use``, then empty content and
   ``blank_text``, then ``prefill`` and ``trailing_whitespace`` for a final assistant message
   (``prefill`` not for a request that continues server-side state, as the API allows: see
   `prefill_guard.models.continues_server_state`);
4. the prompt length (``max_input_tokens``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import re
import secrets
import select
import socket
import string
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType
from typing import Any, Final, Literal, get_args
from urllib.parse import unquote, urlsplit

import anthropic
import httpx2

from . import models
from .params import SAMPLING_PARAMETERS

__all__ = [
    "DEFAULT_REPLY_TEXT",
    "DEFAULT_RULES",
    "FORCED_TOOL_CHOICE_MESSAGE",
    "PREFILL_MESSAGE",
    "RULE_NAMES",
    "TEMPERATURE_DEPRECATED_MESSAGE",
    "TEMPERATURE_TOP_P_MESSAGE",
    "THINKING_ENABLED_MESSAGE",
    "TRAILING_WHITESPACE_MESSAGE",
    "WHITESPACE_TEXT_MESSAGE",
    "AnthropicEmulator",
    "Fault",
    "FaultKind",
    "ModelRule",
    "RecordedRequest",
    "RequestPredicate",
    "deprecated_parameter_message",
    "make_api_error",
    "model_deprecates_sampling",
    "model_rejects_enabled_thinking",
    "model_rejects_forced_tool_choice",
    "model_rejects_prefill",
    "model_rejects_temperature_with_top_p",
    "orphaned_tool_use_message",
    "prompt_too_long_message",
    "unexpected_tool_result_message",
]

DEFAULT_REPLY_TEXT: Final[str] = "Hello from the prefill_guard emulator."
"""The assistant text the emulator answers with when no other reply is configured."""

PREFILL_MESSAGE: Final[str] = (
    "This model does not support assistant message prefill. "
    "The conversation must end with a user message."
)
"""The exact error message the API gives when a model that rejects prefill gets one."""

TRAILING_WHITESPACE_MESSAGE: Final[str] = (
    "final assistant content cannot end with trailing whitespace"
)
WHITESPACE_TEXT_MESSAGE: Final[str] = (
    "messages: text content blocks must contain non-whitespace text"
)
MISSING_API_KEY_MESSAGE: Final[str] = "x-api-key header is required"
EMPTY_CONTENT_MESSAGE: Final[str] = (
    "all messages must have non-empty content except for the optional final assistant message"
)
TEMPERATURE_TOP_P_MESSAGE: Final[str] = (
    "`temperature` and `top_p` cannot both be specified for this model. Please use only one."
)
"""The API's 400 when a model (Sonnet/Haiku 4.5 and later) gets both sampling parameters."""
THINKING_ENABLED_MESSAGE: Final[str] = (
    '"thinking.type.enabled" is not supported for this model. Use "thinking.type.adaptive" and '
    '"output_config.effort" to control thinking behavior.'
)
"""The API's 400 when a model (Opus 4.7 and later) gets ``thinking={"type": "enabled"}``."""
FORCED_TOOL_CHOICE_MESSAGE: Final[str] = (
    'tool_choice: type "tool" and "any" are not supported for this model.'
)
"""The API's 400 when a model of the 5-5 generation gets a forced ``tool_choice``."""
_EFFORTS: Final[tuple[str, ...]] = ("low", "medium", "high", "xhigh", "max")
_THINKING_TYPES: Final[tuple[str, ...]] = ("enabled", "disabled", "adaptive")


def deprecated_parameter_message(name: str) -> str:
    """The API's 400 for a sampling parameter a model (Opus 4.7 and later) no longer accepts.

    Only the ``temperature`` wording is confirmed; ``top_p`` and ``top_k`` get the same shape.
    """
    return f"`{name}` is deprecated for this model."


TEMPERATURE_DEPRECATED_MESSAGE: Final[str] = deprecated_parameter_message("temperature")
"""The API's 400 when a model (Opus 4.7 and later) gets ``temperature``."""


def orphaned_tool_use_message(index: int, tool_use_ids: Iterable[str]) -> str:
    """The API's 400 for ``tool_use`` blocks whose results are missing from the next message.

    ``index`` is the position of the assistant message holding the ``tool_use`` blocks.
    """
    return (
        f"messages.{index}: `tool_use` ids were found without `tool_result` blocks immediately "
        f"after: {', '.join(tool_use_ids)}. Each `tool_use` block must have a corresponding "
        "`tool_result` block in the next message."
    )


def unexpected_tool_result_message(index: int, block: int, tool_use_ids: Iterable[str]) -> str:
    """The API's 400 for ``tool_result`` blocks answering no ``tool_use`` of the message before."""
    return (
        f"messages.{index}.content.{block}: unexpected `tool_use_id` found in `tool_result` "
        f"blocks: {', '.join(tool_use_ids)}. Each `tool_result` block must have a corresponding "
        "`tool_use` block in the previous message."
    )


def prompt_too_long_message(tokens: int, maximum: int) -> str:
    """The API's 400 for a prompt over the model's context window."""
    return f"prompt is too long: {tokens} tokens > {maximum} maximum"


_NOT_AN_OBJECT: Final[str] = "Input should be a valid dictionary or object to extract fields from"
_MESSAGES_PATH: Final[str] = "/v1/messages"
# The platforms' paths for the same Messages API: the model is in the path, not the body.
_BEDROCK_PATH: Final[re.Pattern[str]] = re.compile(r"/model/(?P<model>[^/]+)/invoke")
_VERTEX_PATH: Final[re.Pattern[str]] = re.compile(
    r"/projects/[^/]+/locations/[^/]+/publishers/anthropic/models/(?P<model>[^/:]+)"
    r":(?P<specifier>rawPredict|streamRawPredict)"
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


_MAX_BODY_BYTES: Final[int] = 32 * 1024 * 1024  # the real API's request-size limit
_ID_ALPHABET: Final[str] = string.ascii_letters + string.digits

_DATED_NAME_RE: Final[re.Pattern[str]] = re.compile(r"(?P<base>.+)-\d{8}")

_ERROR_TYPES: Final[Mapping[int, tuple[str, str]]] = {
    400: (
        "invalid_request_error",
        "There was an issue with the format or content of your request.",
    ),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: (
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    404: ("not_found_error", "Not Found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}
# The HTTP status the API uses for each error type (for an SSE error fault's non-streaming twin).
_ERROR_TYPE_STATUS: Final[Mapping[str, int]] = {
    error_type: status for status, (error_type, _) in _ERROR_TYPES.items()
}

FaultKind = Literal["status", "sse_error", "disconnect", "stall"]
"""What a `Fault` does: answer an HTTP error, break an SSE stream, drop the connection, or wait."""

_FAULT_KINDS: Final[tuple[str, ...]] = get_args(FaultKind)
_CHUNK_RE: Final[re.Pattern[str]] = re.compile(r"\s*\S+\s*|\s+")
_STALL_POLL_SECONDS: Final[float] = 0.05  # how often a stall checks whether its client went away


model_rejects_prefill = models.rejects_prefill
model_rejects_temperature_with_top_p = models.rejects_temperature_with_top_p
model_deprecates_sampling = models.deprecates_sampling
model_rejects_enabled_thinking = models.rejects_enabled_thinking
model_rejects_forced_tool_choice = models.rejects_forced_tool_choice
# The emulator's default rules are the model table's (prefill_guard.models), under the names
# this module has always given them.


def _every_model(model: str) -> bool:
    return True


ModelRule = Callable[[str], bool] | Iterable[str] | bool
"""Which models a rule applies to: a predicate on the model name, a collection of names (each
also matching with a ``-YYYYMMDD`` suffix), or a bool for every model / no model."""

DEFAULT_RULES: Final[Mapping[str, Callable[[str], bool]]] = MappingProxyType(
    {
        "prefill": model_rejects_prefill,
        "temperature_top_p": model_rejects_temperature_with_top_p,
        "sampling_deprecated": model_deprecates_sampling,
        "thinking_enabled": model_rejects_enabled_thinking,
        "forced_tool_choice": model_rejects_forced_tool_choice,
        "orphaned_tool_use": _every_model,
        "blank_text": _every_model,
        "trailing_whitespace": _every_model,
    }
)
"""The emulator's rules and the models each applies to by default.

``prefill``: a final assistant message (`PREFILL_MESSAGE`); ``temperature_top_p``: both sampling
parameters (`TEMPERATURE_TOP_P_MESSAGE`); ``sampling_deprecated``: any of ``temperature``,
``top_p``, ``top_k`` (`deprecated_parameter_message`); ``thinking_enabled``:
``thinking.type == "enabled"`` (`THINKING_ENABLED_MESSAGE`); ``forced_tool_choice``: a
``tool_choice`` of type ``any`` or ``tool`` (`FORCED_TOOL_CHOICE_MESSAGE`);
``orphaned_tool_use``: ``tool_use`` blocks without ``tool_result`` blocks in the next message,
and ``tool_result`` blocks without a ``tool_use`` before them; ``blank_text``: whitespace-only
text blocks; ``trailing_whitespace``: a final assistant text ending in whitespace.
"""

RULE_NAMES: Final[tuple[str, ...]] = tuple(DEFAULT_RULES)
"""The names accepted by ``AnthropicEmulator(rules=...)`` and `AnthropicEmulator.set_rule`."""


def _names_rule(names: frozenset[str]) -> Callable[[str], bool]:
    def applies(model: str) -> bool:
        if model in names:
            return True
        dated = _DATED_NAME_RE.fullmatch(model)
        return dated is not None and dated["base"] in names

    return applies


def _compile_rule(name: str, models: ModelRule) -> Callable[[str], bool]:
    if name not in DEFAULT_RULES:
        raise ValueError(f"unknown emulator rule {name!r}; expected one of {RULE_NAMES}")
    if isinstance(models, bool):
        return _every_model if models else lambda model: False
    if callable(models):
        return models
    if isinstance(models, (str, bytes)) or not isinstance(models, Iterable):
        raise TypeError(
            f"rule {name!r}: expected a predicate, a collection of model names or a bool, "
            f"got {models!r}"
        )
    names = frozenset(models)
    if not all(isinstance(model, str) for model in names):
        raise TypeError(f"rule {name!r}: model names must be str")
    return _names_rule(names)


@dataclass(frozen=True)
class Fault:
    """One scripted answer that replaces the emulator's normal handling of one request.

    Each request (any path) consumes the next queued fault, in order. ``kind`` says what it does:

    ``"status"`` (the default; ``Fault(status, body=None, headers={})``)
        Answer ``status`` at once, before auth and validation. ``body`` may be a dict (sent as
        JSON), a str (sent as-is, e.g. an HTML 502 page), bytes (sent as-is, typed
        ``application/octet-stream`` unless ``headers`` say otherwise: for bodies no encoder
        makes, such as invalid UTF-8 or a gzip header over plain text) or None (the API's
        standard error body for ``status``); ``headers`` are added to, and override, the
        defaults.
    ``"sse_error"`` (make it with `Fault.sse_error`)
        A streaming request gets 200 and a normal stream up to ``after_deltas`` text deltas, then
        an ``error`` event of type ``error_type``; a non-streaming request gets the equivalent
        HTTP error (``status``, e.g. 529 for ``overloaded_error``).
    ``"disconnect"`` (make it with `Fault.disconnect`)
        Drop the connection mid-body: half of a normal JSON answer, or a stream cut after
        ``after_deltas`` text deltas without the end of the chunked body. With ``clean=True`` a
        stream instead ends properly (terminating chunk) but early, before ``message_stop``,
        as a proxy or a ``Connection: close`` body can make it look.
    ``"stall"`` (make it with `Fault.stall`)
        Wait ``seconds`` (less if the emulator stops or the client goes away), then handle the
        request normally.

    ``sse_error`` and ``disconnect`` faults, like status faults, skip auth and validation: they
    build their (broken) answer from whatever the request holds. ``after_deltas`` beyond the
    number of reply chunks sends them all.
    """

    status: int
    body: dict[str, Any] | str | bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    kind: FaultKind = field(default="status", kw_only=True)
    after_deltas: int = field(default=0, kw_only=True)
    error_type: str | None = field(default=None, kw_only=True)
    message: str | None = field(default=None, kw_only=True)
    seconds: float = field(default=0.0, kw_only=True)
    clean: bool = field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        """Reject field values that make no sense for the fault's kind."""
        kind = self.kind
        if kind not in _FAULT_KINDS:
            raise ValueError(f"Fault kind must be one of {_FAULT_KINDS}, not {kind!r}")
        if not _is_int(self.status) or not 100 <= self.status <= 599:
            raise ValueError(f"Fault status must be an int in 100..599, not {self.status!r}")
        if not _is_int(self.after_deltas) or self.after_deltas < 0:
            raise ValueError(f"after_deltas must be an int >= 0, not {self.after_deltas!r}")
        seconds = self.seconds
        if not _is_number(seconds) or not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"seconds must be a finite number >= 0, not {seconds!r}")
        if kind == "sse_error":
            if not isinstance(self.error_type, str) or not self.error_type:
                raise ValueError(f"error_type must be a non-empty str, not {self.error_type!r}")
            if self.message is not None and not isinstance(self.message, str):
                raise ValueError(f"message must be a str or None, not {self.message!r}")
        unused = {
            "body": self.body is not None and kind != "status",
            "headers": bool(self.headers) and kind != "status",
            "after_deltas": self.after_deltas != 0 and kind not in ("sse_error", "disconnect"),
            "error_type": self.error_type is not None and kind != "sse_error",
            "message": self.message is not None and kind != "sse_error",
            "seconds": seconds != 0 and kind != "stall",
            "clean": self.clean is not False and kind != "disconnect",
        }
        for name, is_set in unused.items():
            if is_set:
                raise ValueError(f"{name} does not apply to a {kind!r} fault")
        expected = _fault_status(kind, self.error_type)
        if expected is not None and self.status != expected:
            raise ValueError(
                f"a {kind!r} fault has status {expected}, not {self.status}; "
                f"make it with Fault.{kind}(...)"
            )

    @classmethod
    def sse_error(
        cls,
        *,
        after_deltas: int = 0,
        error_type: str = "overloaded_error",
        message: str | None = None,
    ) -> Fault:
        """An ``error`` event mid-stream, after `after_deltas` text deltas (200 already sent).

        The SDK raises a plain `anthropic.APIStatusError` with ``status_code == 200`` while the
        stream is iterated. A non-streaming request gets the equivalent HTTP error instead (529
        for ``overloaded_error``, 500 for ``api_error``, 429, 400, 401, 403, 404, 413, 402, 504
        for the other API error types, 500 for unknown ones). ``message`` defaults to the API's
        standard message for the error type.
        """
        return cls(
            _fault_status("sse_error", error_type) or 500,
            kind="sse_error",
            after_deltas=after_deltas,
            error_type=error_type,
            message=message,
        )

    @classmethod
    def disconnect(cls, *, after_deltas: int = 0, clean: bool = False) -> Fault:
        """Close the connection mid-body.

        Non-streaming: the status line and headers of a normal 200 (with the full body's
        Content-Length), then half the body. Streaming: the events up to and including
        `after_deltas` text deltas, without the chunked body's terminating chunk; with `clean`,
        with it (the stream just ends, before ``message_stop``). `clean` applies to streams.
        """
        if not isinstance(clean, bool):
            raise ValueError(f"clean must be a bool, not {clean!r}")
        return cls(200, kind="disconnect", after_deltas=after_deltas, clean=clean)

    @classmethod
    def stall(cls, seconds: float) -> Fault:
        """Wait `seconds` before handling the request normally (a slow or hung server).

        The wait ends early, closing the connection without an answer, when the emulator stops
        or the client goes away (e.g. after its own timeout).
        """
        return cls(200, kind="stall", seconds=seconds)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fault_status(kind: str, error_type: object) -> int | None:
    """The status a fault of `kind` must have, or None when the caller chooses it."""
    if kind == "sse_error":
        return _ERROR_TYPE_STATUS.get(error_type, 500) if isinstance(error_type, str) else None
    if kind in ("disconnect", "stall"):
        return 200
    return None


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request the emulator received, kept so tests can assert on what was sent.

    ``headers`` has lower-cased names; ``body`` is the parsed JSON, the raw text when it was not
    JSON, or None when the request had no body.
    """

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any


RequestPredicate = Callable[[RecordedRequest], bool]
"""Chooses the requests a scripted fault is for (see `AnthropicEmulator.script`)."""


def _new_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def _reason_phrase(status: int) -> str:
    if status == 529:
        return "Overloaded"
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _standard_error(status: int) -> tuple[str, str]:
    known = _ERROR_TYPES.get(status)
    if known is not None:
        return known
    phrase = _reason_phrase(status) or f"HTTP {status}"
    return ("api_error" if status >= 500 else "invalid_request_error", phrase)


def _error_body(status: int, message: str | None = None) -> dict[str, Any]:
    error_type, default_message = _standard_error(status)
    return {
        "type": "error",
        "error": {"type": error_type, "message": default_message if message is None else message},
        "request_id": _new_id("req_"),
    }


_STATUS_ERROR_CLASSES: Final[Mapping[int, type[anthropic.APIStatusError]]] = {
    400: anthropic.BadRequestError,
    401: anthropic.AuthenticationError,
    403: anthropic.PermissionDeniedError,
    404: anthropic.NotFoundError,
    409: anthropic.ConflictError,
    413: anthropic.RequestTooLargeError,
    422: anthropic.UnprocessableEntityError,
    429: anthropic.RateLimitError,
    529: anthropic.OverloadedError,
}


def make_api_error(
    status: int,
    message: str | None = None,
    *,
    body: dict[str, Any] | str | None = None,
    request_id: str | None = None,
    error_type: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> anthropic.APIStatusError:
    """Build the `anthropic.APIStatusError` subclass the SDK would raise for such a response.

    For unit tests that need an API error without a server: by default the body is the API's
    standard error body for `status` (``message``/``error_type``/``request_id`` override its parts);
    ``body`` (a dict, or a str such as an HTML page) replaces it entirely.
    """
    if body is None:
        error_body = _error_body(status, message)
        if error_type is not None:
            error_body["error"]["type"] = error_type
        if request_id is not None:
            error_body["request_id"] = request_id
        payload: dict[str, Any] | str = error_body
    else:
        payload = body
    if isinstance(payload, str):
        content = payload.encode("utf-8")
        payload = payload.strip()  # the SDK keeps the stripped text as `body`
        content_type = "text/html" if payload.lstrip().startswith("<") else "text/plain"
        err_msg = payload.strip() or f"Error code: {status}"
    else:
        content = json.dumps(payload).encode("utf-8")
        content_type = "application/json"
        err_msg = f"Error code: {status} - {payload}"
        if request_id is None and isinstance(payload.get("request_id"), str):
            request_id = payload["request_id"]
    response_headers = {
        "content-type": content_type,
        "request-id": request_id or _new_id("req_"),
        **{name.lower(): value for name, value in (headers or {}).items()},
    }
    response = httpx2.Response(
        status,
        headers=response_headers,
        content=content,
        request=httpx2.Request("POST", "https://api.anthropic.com/v1/messages"),
    )
    return _status_error(err_msg, body=payload, response=response)


def _status_error(
    err_msg: str, *, body: object, response: httpx2.Response
) -> anthropic.APIStatusError:
    """Pick the exception class exactly as the SDK does, falling back to a public-class table."""
    # The SDK's factory is a client method that does not use its instance; calling it unbound
    # keeps make_api_error in step with the installed SDK (error_code subclasses included).
    factory: Any = getattr(anthropic.Anthropic, "_make_status_error", None)
    if factory is not None:
        with contextlib.suppress(Exception):
            error = factory(None, err_msg, body=body, response=response)
            if isinstance(error, anthropic.APIStatusError):
                return error
    status = response.status_code
    error_class = _STATUS_ERROR_CLASSES.get(status) or (
        anthropic.InternalServerError if status >= 500 else anthropic.APIStatusError
    )
    return error_class(err_msg, response=response, body=body)


class _Reject(Exception):
    """Internal: a validation failure that becomes an error response."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class _Response:
    """What the handler sends: a plain body, or (``events`` set) a chunked SSE stream.

    ``drop`` cuts the answer short and closes the connection: only half of ``body`` is sent, or
    the events without the chunked body's terminating chunk.
    """

    status: int
    body: bytes
    headers: Mapping[str, str]  # lower-cased names
    events: tuple[bytes, ...] | None = None
    drop: bool = False


@dataclass(frozen=True)
class _Completion:
    """One emulated assistant reply, rendered as a Message body or as its SSE events."""

    model: str
    reply: str
    input_tokens: int

    @property
    def output_tokens(self) -> int:
        return max(1, len(self.reply.split()))

    @property
    def chunks(self) -> list[str]:
        """The reply split into text deltas: each word with its trailing whitespace.

        Leading whitespace goes with the first word (or is the only delta), so the deltas always
        join to exactly the reply; an empty reply has none.
        """
        return _CHUNK_RE.findall(self.reply)

    def message(self) -> dict[str, Any]:
        return {
            "id": _new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [{"type": "text", "text": self.reply}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens},
        }

    def stream_head(self) -> list[bytes]:
        """message_start, content_block_start and ping: what precedes the first delta."""
        message = {
            **self.message(),
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 1},
        }
        return [
            _sse_event("message_start", {"type": "message_start", "message": message}),
            _sse_event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            _sse_event("ping", {"type": "ping"}),
        ]

    def stream_deltas(self) -> list[bytes]:
        return [
            _sse_event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": chunk},
                },
            )
            for chunk in self.chunks
        ]

    def stream_tail(self) -> list[bytes]:
        """content_block_stop, message_delta and message_stop: what follows the last delta."""
        return [
            _sse_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            _sse_event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": self.output_tokens},
                },
            ),
            _sse_event("message_stop", {"type": "message_stop"}),
        ]

    def stream(self) -> list[bytes]:
        return self.stream_head() + self.stream_deltas() + self.stream_tail()


def _sse_event(name: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _sse_response(events: Iterable[bytes], *, drop: bool = False) -> _Response:
    return _Response(
        status=200,
        body=b"",
        headers={
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            "request-id": _new_id("req_"),
        },
        events=tuple(events),
        drop=drop,
    )


def _is_streaming(body: Any) -> bool:
    return isinstance(body, dict) and body.get("stream") is True


def _json_response(status: int, body: Mapping[str, Any]) -> _Response:
    request_id = body.get("request_id")
    if not isinstance(request_id, str):
        request_id = _new_id("req_")
    return _Response(
        status=status,
        body=json.dumps(body).encode("utf-8"),
        headers={"content-type": "application/json", "request-id": request_id},
    )


def _status_fault_response(fault: Fault) -> _Response:
    if isinstance(fault.body, bytes):
        response = _Response(
            status=fault.status,
            body=fault.body,
            headers={"content-type": "application/octet-stream", "request-id": _new_id("req_")},
        )
    elif isinstance(fault.body, str):
        content_type = "text/html" if fault.body.lstrip().startswith("<") else "text/plain"
        response = _Response(
            status=fault.status,
            body=fault.body.encode("utf-8"),
            headers={
                "content-type": f"{content_type}; charset=utf-8",
                "request-id": _new_id("req_"),
            },
        )
    else:
        body = _error_body(fault.status) if fault.body is None else fault.body
        response = _json_response(fault.status, body)
    headers = dict(response.headers)
    headers.update({name.lower(): value for name, value in fault.headers.items()})
    return _Response(status=response.status, body=response.body, headers=headers)


def _count_words(value: Any) -> int:
    """Roughly count the words of all text found in a request value (for `usage`)."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_count_words(item) for item in value)
    if isinstance(value, dict):
        total = 0
        for key in ("text", "content", "system"):
            if key in value:
                total += _count_words(value[key])
        return total
    return 0


def _input_tokens(body: Mapping[str, Any]) -> int:
    return max(1, _count_words(body.get("messages")) + _count_words(body.get("system")))


def _is_blank(text: str) -> bool:
    return not text.strip()


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that tracks its open connections so `stop()` can end them."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128  # the default of 5 drops bursts of concurrent connections

    def __init__(self, address: tuple[str, int], emulator: AnthropicEmulator) -> None:
        self.emulator = emulator
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
    """Per-connection request handler; all the API logic lives in `AnthropicEmulator`."""

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
        """Read the request body; on a framing problem answer it, close, and return None."""
        if self.headers.get("transfer-encoding", "").strip().lower() == "chunked":
            return self._read_chunked()
        raw_length = self.headers.get("content-length")
        if raw_length is None:
            return b""
        digits = raw_length.strip()
        length = int(digits) if digits.isascii() and digits.isdigit() else -1
        if length < 0:
            self.close_connection = True
            self._send(_json_response(400, _error_body(400, "Invalid Content-Length header")))
            return None
        if length > _MAX_BODY_BYTES:
            self.close_connection = True
            self._send(_json_response(413, _error_body(413)))
            return None
        data = self.rfile.read(length)
        if len(data) < length:  # client went away mid-body
            self.close_connection = True
            return None
        return data

    def _read_chunked(self) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                self._send(_json_response(400, _error_body(400, "Invalid chunked encoding")))
                return None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # discard trailers
                return b"".join(chunks)
            total += size
            if total > _MAX_BODY_BYTES:
                self.close_connection = True
                self._send(_json_response(413, _error_body(413)))
                return None
            chunk = self.rfile.read(size)
            self.rfile.readline(1024)
            if len(chunk) < size:
                self.close_connection = True
                return None
            chunks.append(chunk)

    def _handle(self, *, send_body: bool = True) -> None:
        try:
            raw = self._read_body()
        except OSError:
            self.close_connection = True
            return
        if raw is None:
            return
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        response = self.server.emulator._respond(
            self.command, self.path, headers, raw, wait=self._wait
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

    def _send(self, response: _Response, *, send_body: bool = True) -> None:
        try:
            self.send_response(response.status, _reason_phrase(response.status))
            for name, value in response.headers.items():
                if name not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(name, value)
            bodiless = response.status < 200 or response.status in (204, 304)
            if response.events is not None:
                self.send_header("Transfer-Encoding", "chunked")
            elif not bodiless:
                self.send_header("Content-Length", str(len(response.body)))
            if response.drop:
                self.close_connection = True
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if not send_body or bodiless:
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


class AnthropicEmulator:
    """A local HTTP server that emulates the Anthropic Messages API for tests.

    Run it with ``with AnthropicEmulator() as emu:`` (or `start`/`stop`) and point the real SDK at
    `base_url`; it records every request and can be scripted with `Fault` answers.
    """

    def __init__(
        self,
        *,
        no_prefill_models: Iterable[str] | None = None,
        reply: str | Callable[[dict[str, Any]], str] = DEFAULT_REPLY_TEXT,
        host: str = "127.0.0.1",
        port: int = 0,
        rules: Mapping[str, ModelRule] | None = None,
        max_input_tokens: int | None = None,
    ) -> None:
        """Configure (but do not start) the emulator.

        ``no_prefill_models=None`` uses `model_rejects_prefill`; otherwise exactly those names (each
        also with a ``-YYYYMMDD`` suffix) reject prefill. ``reply`` is the assistant text, or a
        callable that gets the parsed request body and returns it.

        ``rules`` maps rule names (`RULE_NAMES`) to the models they apply to (a `ModelRule`);
        rules not named keep their `DEFAULT_RULES` predicate. ``rules={"prefill": ...}`` and
        ``no_prefill_models`` are two spellings of one setting: give at most one.
        ``max_input_tokens`` (the emulator counts one token per word of the messages and the
        system prompt) answers longer prompts with the API's "prompt is too long" 400.
        """
        compiled = dict(DEFAULT_RULES)
        for name, applies_to in (rules or {}).items():
            compiled[name] = _compile_rule(name, applies_to)
        if no_prefill_models is not None:
            if rules is not None and "prefill" in rules:
                raise ValueError("give no_prefill_models or rules['prefill'], not both")
            compiled["prefill"] = _names_rule(frozenset(no_prefill_models))
        self._rules: dict[str, Callable[[str], bool]] = compiled
        self._max_input_tokens = _check_max_input_tokens(max_input_tokens)
        self._reply = reply
        self._host = host
        self._requested_port = port
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._faults: list[tuple[Fault, RequestPredicate | None]] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> AnthropicEmulator:
        """Bind the socket and serve in a daemon thread; returns self (a no-op if running)."""
        with self._lock:
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
        with self._lock:
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
        with self._lock:
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

    # -- recording and scripting ---------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of every request received so far (any path), in arrival order.

        Requests whose body could not be read (bad Content-Length, client gone) are not recorded.
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
        the first one that carries a given header. ``when`` runs in the server thread, under
        the emulator's lock, so it should only read the request. If it raises, the request
        gets a 500 that names the exception, and the fault stays queued.
        """
        for index, fault in enumerate(faults):
            if not isinstance(fault, Fault):
                raise TypeError(f"script() takes Fault objects; faults[{index}] is {fault!r}")
        if when is not None and not callable(when):
            raise TypeError(f"when must be a function of the request, got {when!r}")
        with self._lock:
            self._faults.extend((fault, when) for fault in faults)

    @property
    def pending_faults(self) -> list[Fault]:
        """A copy of the scripted faults that no request has consumed yet, in order."""
        with self._lock:
            return [fault for fault, _ in self._faults]

    def reset(self) -> None:
        """Forget all recorded requests and drop any pending scripted faults."""
        with self._lock:
            self._requests.clear()
            self._faults.clear()

    # -- SDK clients ---------------------------------------------------------------------------

    def client(self, **kwargs: Any) -> anthropic.Anthropic:
        """A sync SDK client pointed at this emulator (``max_retries=0``); kwargs override."""
        options: dict[str, Any] = {
            "api_key": "test-key",
            "base_url": self.base_url,
            "max_retries": 0,
            **kwargs,
        }
        return anthropic.Anthropic(**options)

    def async_client(self, **kwargs: Any) -> anthropic.AsyncAnthropic:
        """An async SDK client pointed at this emulator (``max_retries=0``); kwargs override."""
        options: dict[str, Any] = {
            "api_key": "test-key",
            "base_url": self.base_url,
            "max_retries": 0,
            **kwargs,
        }
        return anthropic.AsyncAnthropic(**options)

    # -- request handling (called from server threads) -----------------------------------------

    def rejects_prefill(self, model: str) -> bool:
        """Whether this emulator treats `model` as one that rejects assistant-message prefill."""
        return self.rule_applies("prefill", model)

    # -- rules ---------------------------------------------------------------------------------

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
        compiled = rule or _compile_rule(name, models if models is not None else False)
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

    def _respond(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        raw: bytes,
        *,
        wait: Callable[[float], bool],
    ) -> _Response | None:
        """Record and answer one request; None means close the connection without an answer."""
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
                return _json_response(500, _error_body(500, f"emulator when= raised {exc!r}"))
        try:
            if fault is not None:
                if fault.kind == "stall":
                    if not wait(fault.seconds):
                        return None
                else:
                    return self._fault_response(fault, body)
            route = _messages_route(method, path)
            if route is None:
                return _json_response(404, _error_body(404))
            (path_model,) = route
            if path_model is not None and isinstance(body, dict):
                # Bedrock/Vertex: the model comes from the path, the version is their own key.
                body = {key: value for key, value in body.items() if key != "anthropic_version"}
                body["model"] = path_model
                raw = json.dumps(body).encode()
            return self._messages(headers, raw, body)
        except _Reject as reject:
            return _json_response(reject.status, _error_body(reject.status, reject.message))

    def _take_fault(self, request: RecordedRequest) -> Fault | None:
        """Remove and return the first queued fault that applies to ``request`` (lock held)."""
        for index, (fault, when) in enumerate(self._faults):
            if when is None or when(request):
                del self._faults[index]
                return fault
        return None

    def _fault_response(self, fault: Fault, body: Any) -> _Response:
        if fault.kind == "sse_error":
            error_type = fault.error_type or "api_error"
            message = fault.message
            if message is None:
                message = _standard_error(_ERROR_TYPE_STATUS.get(error_type, 500))[1]
            if not _is_streaming(body):
                error_body = _error_body(fault.status, message)
                error_body["error"]["type"] = error_type
                return _json_response(fault.status, error_body)
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
                return _Response(response.status, response.body, response.headers, drop=True)
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
            reply=self._reply_text(body),
            input_tokens=_input_tokens(body),
        )

    def _reply_text(self, body: dict[str, Any]) -> str:
        if not callable(self._reply):
            return self._reply
        try:
            reply = self._reply(copy.deepcopy(body))
        except Exception as exc:  # surface a broken reply callable as an API error, not a hang
            raise _Reject(500, f"emulator reply callable raised {exc!r}") from exc
        if not isinstance(reply, str):
            raise _Reject(500, f"emulator reply callable returned {type(reply).__name__}, not str")
        return reply

    def _messages(self, headers: Mapping[str, str], raw: bytes, body: Any) -> _Response:
        self._check_auth(headers)
        if not raw:
            raise _Reject(400, "Request body is not valid JSON")
        if isinstance(body, str):
            raise _Reject(400, "Request body is not valid JSON")
        if not isinstance(body, dict):
            raise _Reject(400, "Request body must be a JSON object")
        model = self._check_params(body)
        messages: list[Any] = body["messages"]
        for index, message in enumerate(messages):
            self._check_message(index, message)
        self._check_model_params(model, body)
        if self.rule_applies("orphaned_tool_use", model):
            _check_tool_pairs(messages)
        last = messages[-1]
        ends_with_assistant = last["role"] == "assistant"
        checked = messages[:-1] if ends_with_assistant else messages
        blank_text_rule = self.rule_applies("blank_text", model)
        for index, message in enumerate(checked):
            if message["content"] == []:
                raise _Reject(400, f"messages.{index}: {EMPTY_CONTENT_MESSAGE}")
            if blank_text_rule and _has_blank_text(message["content"]):
                raise _Reject(400, WHITESPACE_TEXT_MESSAGE)
        if ends_with_assistant:
            if self.rejects_prefill(model) and not models.continues_server_state(messages, body):
                raise _Reject(400, PREFILL_MESSAGE)
            final_text = _final_text(last["content"])
            if (
                final_text is not None
                and final_text != final_text.rstrip()
                and self.rule_applies("trailing_whitespace", model)
            ):
                raise _Reject(400, TRAILING_WHITESPACE_MESSAGE)
        limit = self.max_input_tokens
        if limit is not None and (tokens := _input_tokens(body)) > limit:
            raise _Reject(400, prompt_too_long_message(tokens, limit))
        completion = _Completion(model, self._reply_text(body), _input_tokens(body))
        if _is_streaming(body):
            return _sse_response(completion.stream())
        return _json_response(200, completion.message())

    def _check_model_params(self, model: str, body: dict[str, Any]) -> None:
        """The request-parameter rules, in the documented order."""
        if self.rule_applies("sampling_deprecated", model):
            for name in SAMPLING_PARAMETERS:
                if body.get(name) is not None:
                    raise _Reject(400, deprecated_parameter_message(name))
        if (
            body.get("temperature") is not None
            and body.get("top_p") is not None
            and self.rule_applies("temperature_top_p", model)
        ):
            raise _Reject(400, TEMPERATURE_TOP_P_MESSAGE)
        thinking = body.get("thinking")
        if isinstance(thinking, dict):
            thinking_type = thinking.get("type")
            if thinking_type not in _THINKING_TYPES:
                expected = ", ".join(f"'{name}'" for name in _THINKING_TYPES)
                raise _Reject(
                    400,
                    f"thinking: Input tag {thinking_type!r} found using 'type' does not match "
                    f"any of the expected tags: {expected}",
                )
            if thinking_type == "enabled" and self.rule_applies("thinking_enabled", model):
                raise _Reject(400, THINKING_ENABLED_MESSAGE)
            if thinking_type == "adaptive" and "budget_tokens" in thinking:
                raise _Reject(
                    400, "thinking.adaptive.budget_tokens: Extra inputs are not permitted"
                )
        output_config = body.get("output_config")
        effort = output_config.get("effort") if isinstance(output_config, dict) else None
        if effort is not None and effort not in _EFFORTS:
            expected = ", ".join(f"'{name}'" for name in _EFFORTS[:-1])
            raise _Reject(
                400, f"output_config.effort: Input should be {expected} or '{_EFFORTS[-1]}'"
            )
        tool_choice = body.get("tool_choice")
        if (
            isinstance(tool_choice, dict)
            and tool_choice.get("type") in ("any", "tool")
            and self.rule_applies("forced_tool_choice", model)
        ):
            raise _Reject(400, FORCED_TOOL_CHOICE_MESSAGE)

    @staticmethod
    def _check_auth(headers: Mapping[str, str]) -> None:
        if headers.get("x-api-key", "").strip():
            return
        scheme, _, token = headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return
        raise _Reject(401, MISSING_API_KEY_MESSAGE)

    @staticmethod
    def _check_params(body: dict[str, Any]) -> str:
        if "model" not in body:
            raise _Reject(400, "model: Field required")
        model = body["model"]
        if not isinstance(model, str):
            raise _Reject(400, "model: Input should be a valid string")
        if not model:
            raise _Reject(400, "model: String should have at least 1 character")
        if "max_tokens" not in body:
            raise _Reject(400, "max_tokens: Field required")
        max_tokens = body["max_tokens"]
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            raise _Reject(400, "max_tokens: Input should be a valid integer")
        if max_tokens < 1:
            raise _Reject(400, "max_tokens: Input should be greater than or equal to 1")
        if "messages" not in body:
            raise _Reject(400, "messages: Field required")
        messages = body["messages"]
        if not isinstance(messages, list):
            raise _Reject(400, "messages: Input should be a valid list")
        if not messages:
            raise _Reject(400, "messages: at least one message is required")
        if "stream" in body and not isinstance(body["stream"], bool):
            raise _Reject(400, "stream: Input should be a valid boolean")
        return model

    @staticmethod
    def _check_message(index: int, message: Any) -> None:
        where = f"messages.{index}"
        if not isinstance(message, dict):
            raise _Reject(400, f"{where}: {_NOT_AN_OBJECT}")
        for key in message:
            if key not in ("role", "content"):
                raise _Reject(400, f"{where}.{key}: Extra inputs are not permitted")
        if "role" not in message:
            raise _Reject(400, f"{where}.role: Field required")
        if message["role"] not in ("user", "assistant"):
            raise _Reject(400, f"{where}.role: Input should be 'user' or 'assistant'")
        if "content" not in message:
            raise _Reject(400, f"{where}.content: Field required")
        content = message["content"]
        if isinstance(content, str):
            return
        if not isinstance(content, list):
            raise _Reject(400, f"{where}.content: Input should be a valid string or list")
        for block_index, block in enumerate(content):
            block_where = f"{where}.content.{block_index}"
            if not isinstance(block, dict):
                raise _Reject(400, f"{block_where}: {_NOT_AN_OBJECT}")
            if "type" not in block:
                raise _Reject(400, f"{block_where}.type: Field required")
            if not isinstance(block["type"], str):
                raise _Reject(400, f"{block_where}.type: Input should be a valid string")
            if block["type"] == "text":
                if "text" not in block:
                    raise _Reject(400, f"{block_where}.text: Field required")
                if not isinstance(block["text"], str):
                    raise _Reject(400, f"{block_where}.text: Input should be a valid string")
            for block_type, key in (("tool_use", "id"), ("tool_result", "tool_use_id")):
                if block["type"] == block_type:
                    if key not in block:
                        raise _Reject(400, f"{block_where}.{key}: Field required")
                    if not isinstance(block[key], str):
                        raise _Reject(400, f"{block_where}.{key}: Input should be a valid string")


def _check_max_input_tokens(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_input_tokens must be an int >= 1 or None, not {value!r}")
    return value


def _block_ids(content: str | list[dict[str, Any]], block_type: str, key: str) -> list[str]:
    if isinstance(content, str):
        return []
    return [block[key] for block in content if block["type"] == block_type]


def _check_tool_pairs(messages: list[dict[str, Any]]) -> None:
    """Rule ``orphaned_tool_use``: every ``tool_use`` is answered in the very next message.

    A ``tool_use`` in the final message is left to the prefill rules (there is no next message
    yet); a ``tool_result`` must answer a ``tool_use`` of the assistant message just before it.
    """
    for index, message in enumerate(messages):
        content = message["content"]
        if message["role"] == "user":
            results = _block_ids(content, "tool_result", "tool_use_id")
            if not results:
                continue
            previous = messages[index - 1] if index > 0 else None
            expected = (
                _block_ids(previous["content"], "tool_use", "id")
                if previous is not None and previous["role"] == "assistant"
                else []
            )
            unexpected = [result for result in results if result not in expected]
            if unexpected:
                first = next(
                    position
                    for position, block in enumerate(content)
                    if block["type"] == "tool_result" and block["tool_use_id"] in unexpected
                )
                raise _Reject(400, unexpected_tool_result_message(index, first, unexpected))
            continue
        tool_use_ids = _block_ids(content, "tool_use", "id")
        if not tool_use_ids or index == len(messages) - 1:
            continue
        following = messages[index + 1]
        answered = (
            _block_ids(following["content"], "tool_result", "tool_use_id")
            if following["role"] == "user"
            else []
        )
        missing = [tool_use_id for tool_use_id in tool_use_ids if tool_use_id not in answered]
        if missing:
            raise _Reject(400, orphaned_tool_use_message(index, missing))


def _has_blank_text(content: str | list[dict[str, Any]]) -> bool:
    if isinstance(content, str):
        return _is_blank(content)
    return any(block["type"] == "text" and _is_blank(block["text"]) for block in content)


def _final_text(content: str | list[dict[str, Any]]) -> str | None:
    if isinstance(content, str):
        return content
    for block in reversed(content):
        if block["type"] == "text":
            text: str = block["text"]
            return text
    return None
