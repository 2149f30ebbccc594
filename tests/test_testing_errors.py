"""Tests for prefill_guard.testing.api_errors: `make_api_error` builds what the SDK raises."""

from __future__ import annotations

import anthropic
import pytest

from prefill_guard import api_error_type, api_message
from prefill_guard.testing import PREFILL_MESSAGE, AnthropicEmulator, Fault, make_api_error

from .conftest import USER_HI, assert_error_shape, create


@pytest.mark.parametrize(
    "fault",
    [
        Fault(400),
        Fault(401),
        Fault(413),
        Fault(429, headers={"retry-after": "7"}),
        Fault(500),
        Fault(502, body="<html>bad gateway</html>"),
        Fault(503),
        Fault(529),
        Fault(400, body={"message": "flat proxy body"}),
    ],
    ids=lambda fault: f"{fault.status}-{type(fault.body).__name__}",
)
def test_make_api_error_matches_what_the_sdk_raises(
    emu: AnthropicEmulator, client: anthropic.Anthropic, fault: Fault
) -> None:
    """make_api_error builds the same class, body, message and headers as a real SDK call."""
    emu.script(fault)
    with pytest.raises(anthropic.APIStatusError) as info:
        create(client, "claude-haiku-4-5", USER_HI)
    real = info.value
    assert isinstance(real.body, (dict, str))

    made = make_api_error(
        fault.status,
        body=real.body,
        request_id=real.request_id,
        headers=dict(fault.headers),
    )
    assert type(made) is type(real)
    assert made.status_code == real.status_code
    assert made.body == real.body
    assert made.message == real.message
    assert api_message(made) == api_message(real)
    assert api_error_type(made) == api_error_type(real)
    assert made.request_id == real.request_id
    for name, value in fault.headers.items():
        assert made.response.headers[name] == value


def test_make_api_error_builds_the_standard_body_from_message() -> None:
    """With a message, the body is the API's error shape and the class follows the status."""
    error = make_api_error(400, PREFILL_MESSAGE)
    assert isinstance(error, anthropic.BadRequestError)
    assert api_message(error) == PREFILL_MESSAGE
    assert api_error_type(error) == "invalid_request_error"
    assert_error_shape(error.body, "invalid_request_error", PREFILL_MESSAGE)
    assert isinstance(error.body, dict)
    assert error.request_id == error.body["request_id"]


def test_make_api_error_overrides_and_defaults() -> None:
    """request_id/error_type override parts; no message means the standard one."""
    vertex = make_api_error(400, "boom", request_id="req_vrtx_0123")
    assert vertex.request_id == "req_vrtx_0123"
    assert isinstance(vertex.body, dict)
    assert vertex.body["request_id"] == "req_vrtx_0123"

    sse = make_api_error(200, PREFILL_MESSAGE, error_type="invalid_request_error")
    assert type(sse) is anthropic.APIStatusError
    assert api_error_type(sse) == "invalid_request_error"

    overloaded = make_api_error(529)
    assert isinstance(overloaded, anthropic.OverloadedError)
    assert api_message(overloaded) == "Overloaded"

    text = make_api_error(502, body="  upstream said no  ")
    assert isinstance(text, anthropic.InternalServerError)
    assert text.body == "upstream said no"
    assert api_message(text) is None


def test_make_api_error_falls_back_to_public_classes_without_sdk_factory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If the SDK has no status-error factory, the public-class table picks the class."""
    monkeypatch.setattr(anthropic.Anthropic, "_make_status_error", None)
    assert type(make_api_error(400, "x")) is anthropic.BadRequestError
    assert type(make_api_error(529)) is anthropic.OverloadedError
    assert type(make_api_error(502)) is anthropic.InternalServerError
    assert type(make_api_error(200, "x")) is anthropic.APIStatusError
