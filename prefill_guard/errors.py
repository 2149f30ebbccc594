"""Reading the SDK's API errors the same way on every supported anthropic version.

anthropic 2.x puts the API's ``error.type`` and ``error.message`` on ``APIStatusError`` as
``type`` and ``api_message``; 1.x does not have those attributes. These helpers read them from
the attributes when present and from the error body otherwise, so processors written against
them work on ``anthropic>=1.8,<3``.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["api_error_type", "api_message"]


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
