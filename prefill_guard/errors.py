"""Reading the SDK's errors: the same way on every supported anthropic version, in every shape.

anthropic 2.x puts the API's ``error.type`` and ``error.message`` on ``APIStatusError`` as
``type`` and ``api_message``; 1.x does not have those attributes. These helpers read them from
the attributes when present and from the error body otherwise, so processors written against
them work on ``anthropic>=1.8,<3``; :func:`search_error` looks for a pattern in every text an
error carries. Also here: the SDK's own error for a response that holds no reply, and the text
a stream had delivered when an error cut it (:func:`partial_text`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import anthropic
import httpx2
from anthropic import APIResponse, APIResponseValidationError, APIStatusError, AsyncAPIResponse
from anthropic.types import Message

__all__ = [
    "api_error_type",
    "api_message",
    "areply_from_response",
    "error_texts",
    "is_prefill_rejection",
    "partial_text",
    "reply_from_response",
    "search_error",
    "set_partial_text",
    "status_error_from_http",
    "status_error_from_response",
]

_PREFILL_PHRASES = ("assistant message prefill", "conversation must end with a user message")
_PARTIAL_TEXT = "partial_text"


def _body_error_field(error: BaseException, name: str) -> str | None:
    body = getattr(error, "body", None)
    if not isinstance(body, Mapping):
        return None
    inner = body.get("error")
    value = inner.get(name) if isinstance(inner, Mapping) else None
    if value is None and name == "message":
        value = body.get("message")  # proxies' flat {"message": ...} bodies
    return value if isinstance(value, str) else None


def api_message(error: BaseException) -> str | None:
    """The API's own error message (``error.message`` in the body), or ``None``."""
    value = getattr(error, "api_message", None)
    return value if isinstance(value, str) else _body_error_field(error, "message")


def api_error_type(error: BaseException) -> str | None:
    """The API's error type, such as ``"invalid_request_error"`` or ``"overloaded_error"``."""
    value = getattr(error, "type", None)
    return value if isinstance(value, str) else _body_error_field(error, "type")


def status_error_from_response(
    response: APIResponse[Any] | AsyncAPIResponse[Any],
) -> APIStatusError:
    """The typed error the SDK raises for this (already read) error response.

    Built by the response's own client, exactly as the SDK builds it after the middleware
    chain, so a processor in a middleware sees the same class and body as the caller would.
    """
    client: Any = response._client  # the SDK keeps its client on every response
    error = client._make_status_error_from_response(response.http_response)
    if not isinstance(error, APIStatusError):  # pragma: no cover - defensive, never seen
        raise TypeError(f"the SDK built {type(error).__name__}, not an APIStatusError")
    return error


def status_error_from_http(
    status_code: int,
    headers: list[tuple[bytes, bytes]],
    content: bytes,
    *,
    method: str,
    url: str,
) -> APIStatusError:
    """The typed error the SDK would raise for this error response, which came another way.

    For drivers outside the SDK (LiteLLM's HTTP client): processors see the class and body a
    guarded anthropic client gives them. ``content`` is the body as sent (still encoded when
    ``headers`` name a content encoding).
    """
    response = httpx2.Response(
        status_code,
        headers=headers,
        content=content,
        request=httpx2.Request(method, url),
    )
    error: object = _error_builder()._make_status_error_from_response(response)
    if not isinstance(error, APIStatusError):  # pragma: no cover - defensive, never seen
        raise TypeError(f"the SDK built {type(error).__name__}, not an APIStatusError")
    return error


@functools.cache
def _error_builder() -> anthropic.Anthropic:
    """A client that never sends anything: the SDK builds its typed errors on a client."""
    return anthropic.Anthropic(api_key="unused: builds errors only", middleware=[])


_UNREADABLE = (UnicodeDecodeError, json.JSONDecodeError)
"""What the SDK's parsing lets escape, unconverted, from a body that is not JSON text."""


def reply_from_response(response: APIResponse[Any]) -> Message:
    """The reply of a successful Messages response, or the SDK's own error if it holds none.

    The SDK returns whatever a 200 holds: a ``Message`` built from an error object, an HTML
    page as a ``str``, or a bare ``JSONDecodeError``. An error object (``{"type": "error",
    ...}``) becomes the ``APIStatusError`` the SDK raises for an SSE ``error`` event, so a
    transient one (``overloaded_error``) is retried like that event; anything else is an
    ``APIResponseValidationError``.
    """
    try:
        parsed = response.parse()
    except _UNREADABLE as exc:
        raise _not_json(response, exc) from exc
    return _checked_reply(parsed, response)


async def areply_from_response(response: AsyncAPIResponse[Any]) -> Message:
    """The async twin of :func:`reply_from_response`."""
    try:
        parsed = await response.parse()
    except _UNREADABLE as exc:
        raise _not_json(response, exc) from exc
    return _checked_reply(parsed, response)


def _not_json(
    response: APIResponse[Any] | AsyncAPIResponse[Any], error: Exception
) -> APIResponseValidationError:
    status = response.http_response.status_code
    return APIResponseValidationError(
        response.http_response,
        None,
        message=f"the API answered {status} with a body that is not JSON text: {error}",
    )


def _checked_reply(parsed: object, response: APIResponse[Any] | AsyncAPIResponse[Any]) -> Message:
    if (
        isinstance(parsed, Message)
        and parsed.type == "message"
        and parsed.role == "assistant"
        and isinstance(parsed.content, list)
    ):
        return parsed
    body = parsed.model_dump(mode="json") if isinstance(parsed, Message) else parsed
    if isinstance(body, Mapping) and body.get("type") == "error":
        raise status_error_from_response(response)
    status = response.http_response.status_code
    raise APIResponseValidationError(
        response.http_response,
        body,
        message=f"the API answered {status} with a body that is not a Message: {str(body)[:200]}",
    )


def _error_chain(error: BaseException) -> Iterator[BaseException]:
    """The error and the exceptions it wraps (``__cause__``, unsuppressed ``__context__``).

    The walk stops at an API status error: it is the authority on its own message and body.
    So a different 400 raised while a prefill rejection was being handled (its implicit
    ``__context__``) is not mistaken for the prefill rejection.
    """
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, APIStatusError):
            continue
        wrapped = [current.__cause__]
        if not current.__suppress_context__:
            wrapped.append(current.__context__)
        pending.extend(e for e in wrapped if e is not None)


def _strings(value: object, depth: int = 0) -> Iterator[str]:
    """Every string inside a body of any shape (dict, list, str), to a bounded depth."""
    if isinstance(value, str):
        yield value
    elif depth < 8 and isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item, depth + 1)
    elif depth < 8 and isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item, depth + 1)


def error_texts(error: BaseException) -> Iterator[str]:
    """Every text an error carries: API message, message, ``str()``, body strings; whole chain."""
    for exc in _error_chain(error):
        for text in (api_message(exc), getattr(exc, "message", None), str(exc)):
            if isinstance(text, str):
                yield text
        yield from _strings(getattr(exc, "body", None))


def search_error(error: BaseException, pattern: re.Pattern[str]) -> re.Match[str] | None:
    """The first match of ``pattern`` in any of the error's texts (:func:`error_texts`)."""
    for text in error_texts(error):
        match = pattern.search(text)
        if match is not None:
            return match
    return None


def is_prefill_rejection(error: BaseException) -> bool:
    """Whether ``error`` is the API's "assistant message prefill" rejection.

    Looks case-insensitively in the API message, the body (any shape), ``str(error)`` and the
    cause/context chain, so the direct API, Vertex, Bedrock's ``ValidationException``, proxies'
    flat bodies and an SSE ``error`` event are all recognised.
    """
    return any(phrase in text.lower() for text in error_texts(error) for phrase in _PREFILL_PHRASES)


def partial_text(error: BaseException) -> str | None:
    """The text a stream had delivered before ``error`` interrupted it, or ``None``."""
    value = getattr(error, _PARTIAL_TEXT, None)
    return value if isinstance(value, str) else None


def set_partial_text(error: BaseException, text: str) -> None:
    """Put the text delivered so far on ``error``, for :func:`partial_text` to read."""
    with contextlib.suppress(AttributeError):  # a __slots__ exception has no room for it
        setattr(error, _PARTIAL_TEXT, text)
