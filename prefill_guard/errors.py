"""Reading the SDK's API errors the same way on every supported anthropic version.

anthropic 2.x puts the API's ``error.type`` and ``error.message`` on ``APIStatusError`` as
``type`` and ``api_message``; 1.x does not have those attributes. These helpers read them from
the attributes when present and from the error body otherwise, so processors written against
them work on ``anthropic>=1.8,<3``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from anthropic import APIResponse, APIStatusError, AsyncAPIResponse

__all__ = ["api_error_type", "api_message", "status_error_from_response"]


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
