"""Reading the SDK's API errors the same way on every supported anthropic version.

anthropic 2.x puts the API's ``error.type`` and ``error.message`` on ``APIStatusError`` as
``type`` and ``api_message``; 1.x does not have those attributes. These helpers read them from
the attributes when present and from the error body otherwise, so processors written against
them work on ``anthropic>=1.8,<3``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from anthropic import APIResponse, APIResponseValidationError, APIStatusError, AsyncAPIResponse
from anthropic.types import Message

__all__ = [
    "api_error_type",
    "api_message",
    "areply_from_response",
    "reply_from_response",
    "status_error_from_response",
]


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
