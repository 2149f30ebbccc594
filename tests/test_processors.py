"""PrefillErrorHandler and the detection of the prefill rejection in every shape it arrives in."""

from __future__ import annotations

import anthropic
import pytest

from prefill_guard import (
    MessageList,
    PrefillErrorHandler,
    ProcessAPIErrorResult,
    Processor,
    is_prefill_rejection,
)
from prefill_guard.testing import PREFILL_MESSAGE, make_api_error

CONVERSATION = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello"}]


def _direct_api_error() -> anthropic.APIStatusError:
    return make_api_error(400, PREFILL_MESSAGE)


@pytest.mark.parametrize(
    ("error", "label"),
    [
        (make_api_error(400, PREFILL_MESSAGE), "direct API"),
        (make_api_error(400, PREFILL_MESSAGE, request_id="req_vrtx_0123"), "Vertex"),
        (
            make_api_error(400, body={"message": f"ValidationException: {PREFILL_MESSAGE}"}),
            "Bedrock ValidationException",
        ),
        (make_api_error(400, body={"message": PREFILL_MESSAGE}), "proxy flat body"),
        (make_api_error(400, body={"detail": {"errors": [PREFILL_MESSAGE.upper()]}}), "nested"),
        (make_api_error(400, body=f"upstream said: {PREFILL_MESSAGE}"), "string body"),
        (make_api_error(200, PREFILL_MESSAGE, error_type="invalid_request_error"), "SSE error"),
    ],
)
def test_recognises_the_rejection_in_every_shape(error: anthropic.APIError, label: str) -> None:
    """The phrase is found in the API message, any body shape, or str(error)."""
    assert is_prefill_rejection(error), label


def test_recognises_either_phrase_case_insensitively() -> None:
    """Either phrase alone is enough, in any case."""
    assert is_prefill_rejection(make_api_error(400, "ASSISTANT MESSAGE PREFILL is off"))
    assert is_prefill_rejection(ValueError("The Conversation Must End With A User Message."))


def test_recognises_the_rejection_in_the_cause_chain() -> None:
    """A wrapper exception whose __cause__ or __context__ is the rejection is recognised."""
    by_cause = RuntimeError("framework wrapper")
    by_cause.__cause__ = _direct_api_error()
    by_context = KeyError("raised while handling")
    by_context.__context__ = by_cause
    assert is_prefill_rejection(by_cause)
    assert is_prefill_rejection(by_context)


def test_other_errors_are_not_the_rejection() -> None:
    """A neighbouring 400 or a 529 is not mistaken for the prefill rejection."""
    assert not is_prefill_rejection(make_api_error(400, "messages.0.metadata: Extra inputs"))
    assert not is_prefill_rejection(make_api_error(529))


def test_handler_identity_and_protocol() -> None:
    """The handler has its documented id and satisfies the Processor protocol."""
    handler = PrefillErrorHandler()
    assert handler.id == "prefill-error-handler"
    assert isinstance(handler, Processor)


def test_handler_appends_one_tagged_reminder_and_asks_to_retry() -> None:
    """On the first attempt: exactly one hidden user reminder, and retry=True."""
    messages = MessageList(CONVERSATION)
    result = PrefillErrorHandler().process_api_error(
        error=_direct_api_error(), messages=messages, retry_count=0
    )
    assert result == ProcessAPIErrorResult(retry=True)
    assert list(messages)[2:] == [
        {
            "role": "user",
            "content": "<system-reminder>continue</system-reminder>",
            "metadata": {"systemReminder": {"type": "anthropic-prefill-processor-retry"}},
        }
    ]


def test_handler_declines_after_its_first_retry() -> None:
    """retry_count >= 1: returns None and leaves the list untouched."""
    messages = MessageList(CONVERSATION)
    handler = PrefillErrorHandler()
    for count in (1, 2):
        assert (
            handler.process_api_error(
                error=_direct_api_error(), messages=messages, retry_count=count
            )
            is None
        )
    assert list(messages) == CONVERSATION


def test_handler_ignores_other_errors() -> None:
    """A non-prefill error: None, list untouched."""
    messages = MessageList(CONVERSATION)
    error = make_api_error(400, "max_tokens: Field required")
    assert (
        PrefillErrorHandler().process_api_error(error=error, messages=messages, retry_count=0)
        is None
    )
    assert list(messages) == CONVERSATION


def test_handler_reacts_to_the_rejection_whatever_the_last_message() -> None:
    """It does not check the last role: the rejection itself is the signal."""
    messages = MessageList([{"role": "user", "content": "hi"}])
    result = PrefillErrorHandler().process_api_error(
        error=_direct_api_error(), messages=messages, retry_count=0
    )
    assert result is not None
    assert result.retry
    assert len(messages) == 2


def test_a_different_api_error_raised_while_handling_a_rejection_is_not_one() -> None:
    """An implicit __context__ never turns another 400 into the prefill rejection."""
    other = make_api_error(400, "messages: text content blocks must contain non-whitespace text")
    other.__context__ = _direct_api_error()
    assert not is_prefill_rejection(other)


def test_a_suppressed_context_is_not_followed() -> None:
    """`raise X from None` hides the context; so does the detection."""
    wrapper = RuntimeError("unrelated")
    wrapper.__context__ = _direct_api_error()
    wrapper.__suppress_context__ = True
    assert not is_prefill_rejection(wrapper)
