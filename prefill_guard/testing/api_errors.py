"""The API's error responses: standard types and messages per status, bodies, and SDK exceptions.

Named apart from `prefill_guard.errors`, which *reads* API errors; this module builds them, for
the emulator's answers and for `make_api_error` in unit tests without a server.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import string
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Final

import anthropic
import httpx2

__all__ = [
    "ERROR_TYPES",
    "ERROR_TYPE_STATUS",
    "error_body",
    "make_api_error",
    "new_id",
    "reason_phrase",
    "standard_error",
]

_ID_ALPHABET: Final[str] = string.ascii_letters + string.digits

ERROR_TYPES: Final[Mapping[int, tuple[str, str]]] = {
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
"""The API's error type and standard message for each status it documents."""

ERROR_TYPE_STATUS: Final[Mapping[str, int]] = {
    error_type: status for status, (error_type, _) in ERROR_TYPES.items()
}
"""The HTTP status the API uses for each error type (an SSE error fault's non-streaming twin)."""

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


def new_id(prefix: str) -> str:
    """A fresh id in the API's form: `prefix` (``req_``, ``msg_``) and 24 letters or digits."""
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def reason_phrase(status: int) -> str:
    """The reason phrase of an HTTP status line ("Overloaded" for the API's own 529)."""
    if status == 529:
        return "Overloaded"
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def standard_error(status: int) -> tuple[str, str]:
    """The error type and message the API gives for `status`, with a fallback for the others."""
    known = ERROR_TYPES.get(status)
    if known is not None:
        return known
    phrase = reason_phrase(status) or f"HTTP {status}"
    return ("api_error" if status >= 500 else "invalid_request_error", phrase)


def error_body(status: int, message: str | None = None) -> dict[str, Any]:
    """The API's JSON error body for `status`, with `message` or the standard one."""
    error_type, default_message = standard_error(status)
    return {
        "type": "error",
        "error": {"type": error_type, "message": default_message if message is None else message},
        "request_id": new_id("req_"),
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
        standard_body = error_body(status, message)
        if error_type is not None:
            standard_body["error"]["type"] = error_type
        if request_id is not None:
            standard_body["request_id"] = request_id
        payload: dict[str, Any] | str = standard_body
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
        "request-id": request_id or new_id("req_"),
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
