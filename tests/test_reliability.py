"""The fault matrix: every fault, times generate / agenerate / stream / astream.

Each case asserts the exact number of requests, the outcome, the waits, and the invariants of
the conversation afterwards: no user message lost, none duplicated, no partial assistant text,
at most one hidden reminder per repair.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx2
import pytest

from prefill_guard import MessageList, PrefillErrorHandler, partial_text
from prefill_guard.messages import is_system_reminder
from prefill_guard.testing import DEFAULT_REPLY_TEXT, PREFILL_MESSAGE, Fault

from .conftest import ErrorRecorder, Harness, SwitchModel

USER_ONLY = [{"role": "user", "content": "Tell me a joke."}]
ENDS_WITH_ASSISTANT = [
    {"role": "user", "content": "Tell me a joke."},
    {"role": "assistant", "content": "Why did the"},
]
PREFILL_400 = Fault(
    400, {"type": "error", "error": {"type": "invalid_request_error", "message": PREFILL_MESSAGE}}
)
REMINDER_ON_WIRE = {"role": "user", "content": "<system-reminder>continue</system-reminder>"}
REPLY_ON_WIRE = {"role": "assistant", "content": [{"type": "text", "text": DEFAULT_REPLY_TEXT}]}
REPLY_CHUNKS = ["Hello ", "from ", "the "]  # the first deltas of DEFAULT_REPLY_TEXT


def assert_invariants(
    conversation: MessageList, original: list[dict[str, Any]], ok: bool, repairs: int = 0
) -> None:
    """No user message lost or duplicated, no partial reply, one reminder per prefill repair."""
    visible = conversation.to_ui()
    expected = [*original]
    if ok:
        expected.append(
            {"role": "assistant", "content": [{"type": "text", "text": DEFAULT_REPLY_TEXT}]}
        )
    assert visible == expected
    reminders = [m for m in conversation if is_system_reminder(m)]
    assert len(reminders) == repairs


@dataclass(frozen=True)
class Case:
    """One fault scenario: what the emulator answers, and what must come of it."""

    name: str
    faults: tuple[Fault, ...] | Callable[[], tuple[Fault, ...]]  # a callable: made at run time
    requests: int
    waits: tuple[float, ...] | None = None  # None: backoff, checked by count and range only
    wait_range: tuple[float, float] = (0.5, 8.5)
    error: type[BaseException] | None = None
    agent_kwargs: dict[str, Any] = field(default_factory=dict)


def _retry_after_http_date_in_30s() -> tuple[Fault, ...]:
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    return (Fault(429, headers={"retry-after": date}),)


TRANSIENT_CASES = [
    Case("529 once", (Fault(529),), 2),
    Case("500 once", (Fault(500),), 2),
    Case("html 502", (Fault(502, body="<html><body>Bad gateway</body></html>"),), 2),
    Case("429 retry-after", (Fault(429, headers={"retry-after": "3"}),), 2, (3.0,)),
    Case("429 retry-after-ms", (Fault(429, headers={"retry-after-ms": "1500"}),), 2, (1.5,)),
    Case("429 retry-after capped", (Fault(429, headers={"retry-after": "600"}),), 2, (60.0,)),
    Case(
        "429 retry-after capped by setting",
        (Fault(429, headers={"retry-after": "9"}),),
        2,
        (2.0,),
        agent_kwargs={"max_retry_delay": 2},
    ),
    Case(
        "429 retry-after http date",
        _retry_after_http_date_in_30s,
        2,
        wait_range=(25.0, 30.0),
    ),
    Case(
        "x-should-retry false",
        (Fault(529, headers={"x-should-retry": "false"}),),
        1,
        error=anthropic.OverloadedError,
    ),
    Case("two 529 then ok", (Fault(529), Fault(529)), 3),
    Case("dropped connection", (Fault.disconnect(),), 2),
    Case("sse overloaded before content", (Fault.sse_error(),), 2),
    Case("sse api_error before content", (Fault.sse_error(error_type="api_error"),), 2),
    Case("persistent 529", (Fault(529),) * 3, 3, error=anthropic.OverloadedError),
    Case(
        "max_retries=0",
        (Fault(529),),
        1,
        error=anthropic.OverloadedError,
        agent_kwargs={"max_retries": 0},
    ),
]


@pytest.mark.parametrize("case", TRANSIENT_CASES, ids=lambda c: c.name)
async def test_transient_faults(harness: Harness, case: Case) -> None:
    """Transient faults are retried with the right waits, within max_retries, and lose nothing."""
    harness.emulator.script(*(case.faults() if callable(case.faults) else case.faults))
    conversation = MessageList(USER_ONLY)
    agent = harness.agent(error_processors=[PrefillErrorHandler()], **case.agent_kwargs)
    if case.error is None:
        result = await harness.run(agent, conversation)
        assert result.text == DEFAULT_REPLY_TEXT
        assert [a.retry for a in result.attempts] == ["transient"] * (case.requests - 1) + [None]
    else:
        with pytest.raises(case.error):
            await harness.run(agent, conversation)
    assert len(harness.emulator.message_requests) == case.requests
    retries = case.requests - 1
    assert [d.kind for d in harness.retries] == ["transient"] * retries
    assert len(harness.waits) == retries
    if case.waits is not None:
        assert tuple(harness.waits) == case.waits
    else:
        low, high = case.wait_range
        assert all(low <= wait <= high for wait in harness.waits)
    assert_invariants(conversation, USER_ONLY, ok=case.error is None)
    if harness.streaming:
        assert harness.received == ([] if case.error else _chunks(DEFAULT_REPLY_TEXT))


def _chunks(text: str) -> list[str]:
    return re.findall(r"\S+\s*", text)


async def test_stall_past_the_client_timeout_is_retried(harness: Harness) -> None:
    """A server that stalls past the client timeout: APITimeoutError, retried, then success."""
    harness.emulator.script(Fault.stall(5.0))
    agent = harness.agent(client_kwargs={"timeout": 1.0})
    conversation = MessageList(USER_ONLY)
    result = await harness.run(agent, conversation)
    assert isinstance(result.attempts[0].error, anthropic.APITimeoutError)
    assert len(harness.emulator.message_requests) == 2
    assert_invariants(conversation, USER_ONLY, ok=True)


async def test_prefill_rejection_is_repaired_once(harness: Harness) -> None:
    """The prefill 400 goes to the processors: 2 requests, one reminder, nothing lost."""
    conversation = MessageList(ENDS_WITH_ASSISTANT)
    agent = harness.agent(error_processors=[PrefillErrorHandler()])
    result = await harness.run(agent, conversation)
    assert len(harness.emulator.message_requests) == 2
    assert [d.kind for d in harness.retries] == ["processor"]
    assert harness.retries[0].processor_id == "prefill-error-handler"
    assert harness.waits == []
    assert result.retried_by == ("prefill-error-handler",)
    assert_invariants(conversation, ENDS_WITH_ASSISTANT, ok=True, repairs=1)
    assert all(r.body.get("stream", False) is harness.streaming for r in harness.emulator.requests)


async def test_transient_then_repair_in_one_generation(harness: Harness) -> None:
    """A 529, then the prefill 400: one transient retry, then one processor retry."""
    harness.emulator.script(Fault(529))
    conversation = MessageList(ENDS_WITH_ASSISTANT)
    agent = harness.agent(error_processors=[PrefillErrorHandler()])
    result = await harness.run(agent, conversation)
    assert len(harness.emulator.message_requests) == 3
    assert [d.kind for d in harness.retries] == ["transient", "processor"]
    assert [a.retry for a in result.attempts] == ["transient", "processor", None]
    assert_invariants(conversation, ENDS_WITH_ASSISTANT, ok=True, repairs=1)


async def test_persistent_prefill_rejection_raises_after_two(harness: Harness) -> None:
    """The handler repairs once only: 2 requests, then the original BadRequestError."""
    harness.emulator.script(PREFILL_400, PREFILL_400)
    conversation = MessageList(ENDS_WITH_ASSISTANT)
    agent = harness.agent(error_processors=[PrefillErrorHandler()])
    with pytest.raises(anthropic.BadRequestError):
        await harness.run(agent, conversation)
    assert len(harness.emulator.message_requests) == 2
    assert_invariants(conversation, ENDS_WITH_ASSISTANT, ok=False, repairs=1)


async def test_validation_error_is_not_retried(harness: Harness) -> None:
    """A whitespace-only message: one request, the 400 raised, the conversation unchanged."""
    conversation = MessageList([{"role": "user", "content": "  "}])
    agent = harness.agent(error_processors=[PrefillErrorHandler()])
    with pytest.raises(anthropic.BadRequestError):
        await harness.run(agent, conversation)
    assert len(harness.emulator.message_requests) == 1
    assert harness.retries == []
    assert conversation.to_api() == [{"role": "user", "content": "  "}]


async def test_exhausted_transient_retries_reach_the_processors(harness: Harness) -> None:
    """After max_retries 529s the error goes to processors: a fallback model then succeeds."""

    harness.emulator.script(Fault(529), Fault(529), Fault(529))
    conversation = MessageList(USER_ONLY)
    agent = harness.agent(error_processors=[SwitchModel(only=(anthropic.OverloadedError,))])
    result = await harness.run(agent, conversation)
    models = [r.body["model"] for r in harness.emulator.message_requests]
    assert models == ["claude-opus-4-6"] * 3 + ["claude-haiku-4-5"]
    assert [d.kind for d in harness.retries] == ["transient", "transient", "processor"]
    assert result.retried_by == ("switch-model",)
    assert_invariants(conversation, USER_ONLY, ok=True)


async def test_sdk_retries_are_switched_off_for_a_client_passed_in(harness: Harness) -> None:
    """A client made with max_retries=5 still gives exactly 1 + max_retries requests."""
    harness.emulator.script(*(Fault(529),) * 10)
    agent = harness.agent(client_kwargs={"max_retries": 5}, max_retries=2)
    with pytest.raises(anthropic.OverloadedError):
        await harness.run(agent, USER_ONLY)
    assert len(harness.emulator.message_requests) == 3


async def test_error_after_content_is_raised_with_the_partial_text(harness: Harness) -> None:
    """Streams: no silent retry once text reached the consumer; no partial reply is stored.

    Non-streaming drivers see the same fault as an HTTP 529, which is retried.
    """
    harness.emulator.script(Fault.sse_error(after_deltas=3))
    conversation = MessageList(USER_ONLY)
    agent = harness.agent(error_processors=[PrefillErrorHandler()])
    if not harness.streaming:
        await harness.run(agent, conversation)
        assert len(harness.emulator.message_requests) == 2
        assert_invariants(conversation, USER_ONLY, ok=True)
        return
    with pytest.raises(anthropic.APIStatusError) as info:
        await harness.run(agent, conversation)
    assert info.value.status_code == 200
    assert partial_text(info.value) == "".join(REPLY_CHUNKS)
    assert harness.received == REPLY_CHUNKS
    assert len(harness.emulator.message_requests) == 1
    assert harness.retries == []
    assert_invariants(conversation, USER_ONLY, ok=False)


async def test_dropped_connection_after_content_is_not_retried(harness: Harness) -> None:
    """Streams: a connection dropped after content raises with the partial text, 1 request.

    Non-streaming drivers get the body cut mid-way instead, which is retried.
    """
    harness.emulator.script(Fault.disconnect(after_deltas=1))
    conversation = MessageList(USER_ONLY)
    if not harness.streaming:
        await harness.run(harness.agent(), conversation)
        assert len(harness.emulator.message_requests) == 2
        assert_invariants(conversation, USER_ONLY, ok=True)
        return
    with pytest.raises(anthropic.APIConnectionError) as info:
        await harness.run(harness.agent(), conversation)
    assert partial_text(info.value) == REPLY_CHUNKS[0]
    assert isinstance(info.value.__cause__, httpx2.TransportError)
    assert len(harness.emulator.message_requests) == 1
    assert_invariants(conversation, USER_ONLY, ok=False)


async def _cancel_while_waiting_to_retry(
    client: anthropic.AsyncAnthropic, driver: str, conversation: MessageList, **kwargs: Any
) -> None:
    """Run agenerate / astream until it sleeps before a retry, cancel it there, and check
    that the caller gets CancelledError and no task is left behind."""
    from prefill_guard import Agent

    waiting = asyncio.Event()

    async def sleep_forever(seconds: float) -> None:
        waiting.set()
        await asyncio.Event().wait()

    agent = Agent("claude-opus-4-6", client=client, sleep=sleep_forever, **kwargs)

    async def run() -> None:
        if driver == "agenerate":
            await agent.agenerate(conversation)
            return
        async with agent.astream(conversation) as stream:
            await stream.get_final_message()

    before = set(asyncio.all_tasks())
    task = asyncio.create_task(run())
    await waiting.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert set(asyncio.all_tasks()) == before


@pytest.mark.parametrize("driver", ["agenerate", "astream"])
async def test_cancelling_during_backoff_leaves_no_task_and_a_consistent_history(
    anthropic_emulator: Any, driver: str
) -> None:
    """Cancel agenerate / astream while it waits to retry a 529: no stray task, history as
    it was."""
    anthropic_emulator.script(Fault(529, headers={"retry-after": "30"}))
    conversation = MessageList(USER_ONLY)
    async with anthropic_emulator.async_client() as client:
        await _cancel_while_waiting_to_retry(client, driver, conversation)
    assert len(anthropic_emulator.message_requests) == 1
    assert conversation.to_api() == USER_ONLY


@pytest.mark.parametrize("driver", ["agenerate", "astream"])
async def test_cancelling_after_a_repair_keeps_the_repair_and_adds_no_reply(
    anthropic_emulator: Any, driver: str
) -> None:
    """Cancel while waiting to retry a 529 that followed a prefill repair: the MessageList
    keeps the hidden reminder (the rule of docs/retries.md: repairs stay, a reply never comes
    without success), so the next call sends a valid request at once."""
    from prefill_guard import Agent

    anthropic_emulator.script(
        Fault(529, headers={"retry-after": "30"}),
        when=lambda request: request.body["messages"][-1]["role"] == "user",
    )
    conversation = MessageList(ENDS_WITH_ASSISTANT)
    processors = [PrefillErrorHandler()]
    async with anthropic_emulator.async_client() as client:
        await _cancel_while_waiting_to_retry(
            client, driver, conversation, error_processors=processors
        )
        assert len(anthropic_emulator.message_requests) == 2
        assert conversation.to_api() == [*ENDS_WITH_ASSISTANT, REMINDER_ON_WIRE]
        assert is_system_reminder(conversation[-1])
        again = Agent("claude-opus-4-6", client=client, error_processors=processors)
        result = await again.agenerate(conversation)
    assert [a.error for a in result.attempts] == [None]
    assert conversation.to_api() == [*ENDS_WITH_ASSISTANT, REMINDER_ON_WIRE, REPLY_ON_WIRE]


async def test_exhausted_disconnects_reach_the_processors_as_api_errors(harness: Harness) -> None:
    """Streams and plain calls alike: a dropped connection is an APIConnectionError, and once
    the transient budget is spent, the processors see it."""

    seen = ErrorRecorder()
    harness.emulator.script(*(Fault.disconnect(),) * 3)
    with pytest.raises(anthropic.APIConnectionError):
        await harness.run(harness.agent(error_processors=[seen]), USER_ONLY)
    assert len(harness.emulator.message_requests) == 3
    assert [type(e) for e in seen.errors] == [anthropic.APIConnectionError]


async def test_on_retry_details_and_the_log_line(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Hooks get the failed attempt's number, error and request id; the INFO log names them."""
    import logging

    harness.emulator.script(Fault(529, headers={"retry-after-ms": "5"}))
    agent = harness.agent(error_processors=[PrefillErrorHandler()])
    with caplog.at_level(logging.INFO, logger="prefill_guard"):
        await harness.run(agent, MessageList(ENDS_WITH_ASSISTANT))
    first, second = harness.retries
    assert (first.kind, first.attempt, first.wait) == ("transient", 1, 0.005)
    assert isinstance(first.error, anthropic.OverloadedError)
    assert first.request_id == first.error.request_id
    assert first.request_id is not None
    assert (second.kind, second.attempt, second.processor_id) == (
        "processor",
        2,
        "prefill-error-handler",
    )
    assert isinstance(second.error, anthropic.BadRequestError)
    lines = [r.getMessage() for r in caplog.records if r.name == "prefill_guard"]
    assert any(first.request_id in line and "transient" in line for line in lines)
    assert not any("Tell me a joke" in line or "Why did the" in line for line in lines)


async def test_a_stream_cut_short_cleanly_is_not_taken_for_a_reply(harness: Harness) -> None:
    """A body that ends before message_stop: retried before content (2 requests); after
    content it is a connection error with the partial text, and nothing is stored."""
    if not harness.streaming:
        harness.emulator.script(Fault.disconnect(clean=True))  # a plain body cut mid-way
        await harness.run(harness.agent(), MessageList(USER_ONLY))
        assert len(harness.emulator.message_requests) == 2
        return
    harness.emulator.script(Fault.disconnect(clean=True))
    conversation = MessageList(USER_ONLY)
    await harness.run(harness.agent(), conversation)
    assert len(harness.emulator.message_requests) == 2
    assert_invariants(conversation, USER_ONLY, ok=True)

    harness.emulator.reset()
    harness.received.clear()
    harness.emulator.script(Fault.disconnect(after_deltas=2, clean=True))
    conversation = MessageList(USER_ONLY)
    with pytest.raises(anthropic.APIConnectionError, match="before message_stop") as info:
        await harness.run(harness.agent(), conversation)
    assert partial_text(info.value) == "".join(REPLY_CHUNKS[:2])
    assert len(harness.emulator.message_requests) == 1
    assert_invariants(conversation, USER_ONLY, ok=False)
