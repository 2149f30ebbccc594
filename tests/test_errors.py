"""Reading the API's error type and message the same way on anthropic 1.x and 2.x."""

from __future__ import annotations

from typing import Any

from prefill_guard import api_error_type, api_message
from prefill_guard.testing import make_api_error


class OneXStyleError(Exception):
    """An error shaped like anthropic 1.x's: a body, no ``type``/``api_message`` attributes."""

    def __init__(self, body: Any) -> None:
        super().__init__("Error code: 400")
        self.body = body


def test_reads_the_sdk_error() -> None:
    """On the installed SDK's own error, the helpers give the body's type and message."""
    error = make_api_error(529)
    assert api_error_type(error) == "overloaded_error"
    assert api_message(error) == "Overloaded"


def test_falls_back_to_the_body_when_the_attributes_are_missing() -> None:
    """1.x errors carry only the body; the helpers read it there."""
    error = OneXStyleError({"type": "error", "error": {"type": "x_error", "message": "boom"}})
    assert (api_error_type(error), api_message(error)) == ("x_error", "boom")


def test_reads_proxies_flat_message_bodies() -> None:
    """A proxy's {"message": ...} body gives the message; there is no type to read."""
    error = OneXStyleError({"message": "upstream said no"})
    assert (api_error_type(error), api_message(error)) == (None, "upstream said no")


def test_non_json_bodies_give_none() -> None:
    """An HTML page or no body at all: None, never an exception."""
    assert api_message(OneXStyleError("<html>502</html>")) is None
    assert api_error_type(ValueError("plain")) is None
