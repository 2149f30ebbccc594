"""The transient retry policy: what is transient, retry-after, the cap, backoff, hooks, logs."""

from __future__ import annotations

import email.utils
import logging
import time
from typing import Any

import anthropic
import httpx2
import pytest

from prefill_guard import PrefillErrorHandler, RetryDetails, guard
from prefill_guard.retries import RetryPolicy, is_transient, retry_after
from prefill_guard.testing import PREFILL_MESSAGE, AnthropicEmulator, Fault, make_api_error

from .conftest import Harness

REQUEST = httpx2.Request("POST", "https://api.anthropic.com/v1/messages")


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529])
def test_transient_statuses(status: int) -> None:
    """Timeouts, conflicts, rate limits, server errors and overload are retried."""
    assert is_transient(make_api_error(status))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_client_errors_are_never_transient(status: int) -> None:
    """400-class validation errors belong to the processors, not to blind retries."""
    assert not is_transient(make_api_error(status))


def test_prefill_rejection_is_not_transient() -> None:
    """The prefill 400 is a processor's job."""
    assert not is_transient(make_api_error(400, PREFILL_MESSAGE))


@pytest.mark.parametrize(
    ("error_type", "expected"),
    [("overloaded_error", True), ("api_error", True), ("invalid_request_error", False)],
)
def test_sse_error_events_by_type(error_type: str, expected: bool) -> None:
    """An SSE error event (status 200) is transient only for overload and server errors."""
    assert is_transient(make_api_error(200, "x", error_type=error_type)) is expected


def test_connection_errors_timeouts_and_raw_transport_errors_are_transient() -> None:
    """Network failures, including a raw httpx2 error escaping mid-stream, are retried."""
    assert is_transient(anthropic.APIConnectionError(request=REQUEST))
    assert is_transient(anthropic.APITimeoutError(request=REQUEST))
    assert is_transient(httpx2.RemoteProtocolError("peer closed connection"))
    assert not is_transient(ValueError("a bug"))


def test_x_should_retry_false_vetoes() -> None:
    """The API's own x-should-retry: false wins over the status."""
    assert not is_transient(make_api_error(529, headers={"x-should-retry": "false"}))


def test_retry_after_ms_comes_before_retry_after() -> None:
    """retry-after-ms is the more precise header and is read first."""
    error = make_api_error(429, headers={"retry-after-ms": "1500", "retry-after": "9"})
    assert retry_after(error) == 1.5


def test_retry_after_seconds_and_http_date() -> None:
    """retry-after may be seconds or an HTTP date."""
    assert retry_after(make_api_error(429, headers={"retry-after": "3"})) == 3.0
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    waited = retry_after(make_api_error(429, headers={"retry-after": date}))
    assert waited is not None
    assert 28.0 <= waited <= 30.0


def test_retry_after_absent_or_unreadable() -> None:
    """No header, or one that is neither a number nor a date: no asked-for delay."""
    assert retry_after(make_api_error(529)) is None
    assert retry_after(make_api_error(429, headers={"retry-after": "soon"})) is None
    assert retry_after(ValueError("no response")) is None


def _waits(policy: RetryPolicy, *errors: BaseException) -> list[float | None]:
    """The policy's answers to ``errors`` failing one after another, in one budget."""
    budget = policy.new_budget()
    return [policy.transient_wait(budget, error) for error in errors]


def test_wait_honours_retry_after_capped_by_max_retry_delay() -> None:
    """The asked-for delay is used, but never more than max_retry_delay."""
    policy = RetryPolicy(max_retry_delay=60)
    assert _waits(policy, make_api_error(429, headers={"retry-after": "3"})) == [3.0]
    assert _waits(policy, make_api_error(429, headers={"retry-after": "120"})) == [60.0]
    capped = RetryPolicy(max_retries=10, max_retry_delay=2)
    assert all(w is not None and w <= 2 for w in _waits(capped, *[make_api_error(529)] * 6))


def test_backoff_is_exponential_with_jitter() -> None:
    """Without a header: 0.5 s, 1 s, 2 s, ... plus up to 0.5 s of jitter, at most 8.5 s."""
    waits = _waits(RetryPolicy(max_retries=10), *[make_api_error(529)] * 10)
    for wait, base in zip(waits, [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0], strict=True):
        assert wait is not None
        assert base <= wait <= base + 0.5


def test_the_budget_is_max_retries_and_only_transient_errors_spend_it() -> None:
    """max_retries transient failures get a wait; the next, and any 400, get None."""
    policy = RetryPolicy(max_retries=2, max_retry_delay=0)
    overloaded = make_api_error(529)
    assert _waits(policy, overloaded, overloaded, overloaded) == [0.0, 0.0, None]
    assert _waits(policy, make_api_error(400), overloaded) == [None, 0.0]


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"max_retries": -1}, "max_retries must be an int >= 0"),
        ({"max_retries": True}, "max_retries must be an int >= 0, got True"),
        ({"max_retry_delay": -1}, "max_retry_delay must be >= 0"),
        ({"max_retry_delay": float("nan")}, "max_retry_delay must be >= 0 seconds (a finite"),
        ({"max_retry_delay": float("inf")}, "max_retry_delay must be >= 0 seconds (a finite"),
        ({"max_retry_delay": True}, "max_retry_delay must be >= 0"),
        ({"on_retry": ["nope"]}, "on_retry[0]: 'nope' is not callable"),
        ({"sleep": 5}, "sleep must be callable"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object], text: str) -> None:
    """Retry settings are checked when the Agent is built, naming the setting."""
    with pytest.raises((TypeError, ValueError)) as info:
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
    assert text in str(info.value)


def test_report_calls_hooks_and_survives_a_raising_one(caplog: pytest.LogCaptureFixture) -> None:
    """Every hook gets the frozen details; a raising hook is logged, the rest still run."""
    seen: list[RetryDetails] = []

    def broken(details: RetryDetails) -> None:
        raise RuntimeError("hook bug")

    policy = RetryPolicy(on_retry=[broken, seen.append])
    details = RetryDetails("transient", 1, make_api_error(529, request_id="req_abc"), 0.5)
    with caplog.at_level(logging.INFO, logger="prefill_guard"):
        policy.report(details)
    assert seen == [details]
    assert "on_retry hook" in caplog.text
    with pytest.raises(AttributeError):
        details.wait = 2.0  # type: ignore[misc]


def test_retry_log_line_has_the_request_id_but_no_contents(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """INFO log: kind, error class, status, request id and wait; never the error's body text."""
    error = make_api_error(400, "secret user text sk-ant-key", request_id="req_xyz")
    with caplog.at_level(logging.INFO, logger="prefill_guard"):
        RetryPolicy().report(RetryDetails("processor", 2, error, 0.0, "fixer", "req_xyz"))
    record = caplog.records[-1]
    assert record.levelno == logging.INFO
    message = record.getMessage()
    assert "processor 'fixer'" in message
    assert "req_xyz" in message
    assert "BadRequestError (400)" in message
    assert "secret" not in message
    assert "sk-ant" not in message


@pytest.mark.parametrize(
    "header", [{"retry-after": "nan"}, {"retry-after-ms": "NaN"}, {"retry-after": "inf"}]
)
def test_non_finite_retry_after_falls_back_to_backoff(header: dict[str, str]) -> None:
    """NaN or infinite delays are ignored instead of crashing the sleep."""
    assert retry_after(make_api_error(429, headers=header)) is None


def test_async_on_retry_hooks_are_refused() -> None:
    """A coroutine hook would never be awaited: it is refused when the Agent is built."""

    async def hook(details: RetryDetails) -> None:
        return None

    with pytest.raises(TypeError, match=r"on_retry\[0\]: .* is async"):
        RetryPolicy(on_retry=[hook])  # type: ignore[list-item]


# -- the log record of a retry, for structured logging ----------------------------------------

SECRET = "the caller's private question"
PREFILL = [{"role": "user", "content": SECRET}, {"role": "assistant", "content": "Hm"}]


def _retry_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if getattr(r, "prefill_guard.event", None) == "prefill_guard.retry"
    ]


def _fields(record: logging.LogRecord, *names: str) -> tuple[Any, ...]:
    return tuple(getattr(record, name) for name in names)


async def test_every_retry_is_one_log_record_with_its_fields_in_extra(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """A 529 then a prefill 400 then success: two INFO records on the prefill_guard logger,
    their fields as record attributes (what structlog and JSON formatters turn into keys), and
    no message text in any record."""
    caplog.set_level(logging.INFO, logger="prefill_guard")
    harness.emulator.script(Fault(529, headers={"retry-after-ms": "5"}))
    agent = harness.agent("claude-opus-4-6", error_processors=[PrefillErrorHandler()])
    await harness.run(
        agent, [{"role": "user", "content": SECRET}, {"role": "assistant", "content": "Hm"}]
    )
    records = _retry_records(caplog)
    names = (
        "prefill_guard.retry.kind",
        "prefill_guard.processor.id",
        "prefill_guard.attempt",
        "error.type",
        "http.response.status_code",
    )
    assert [_fields(r, *names) for r in records] == [
        ("transient", None, 1, "OverloadedError", 529),
        ("processor", "prefill-error-handler", 2, "BadRequestError", 400),
    ]
    assert [getattr(r, "prefill_guard.retry.wait") for r in records] == [0.005, 0.0]
    assert all(getattr(r, "prefill_guard.request_id") for r in records)
    assert all(r.levelno == logging.INFO and r.name == "prefill_guard" for r in records)
    assert SECRET not in repr([vars(r) for r in caplog.records])
    await harness.close()


def test_a_guarded_client_logs_its_repair_retry_the_same_way(
    anthropic_emulator: AnthropicEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Through the middleware, the processor's retry is the same record."""
    caplog.set_level(logging.INFO, logger="prefill_guard")
    with guard(anthropic_emulator.client(), [PrefillErrorHandler()]) as client:
        client.messages.create(
            model="claude-opus-4-6",
            max_tokens=16,
            messages=PREFILL,  # type: ignore[arg-type]
        )
    (record,) = _retry_records(caplog)
    assert _fields(record, "prefill_guard.retry.kind", "prefill_guard.processor.id") == (
        "processor",
        "prefill-error-handler",
    )
    assert SECRET not in repr([vars(r) for r in caplog.records])
