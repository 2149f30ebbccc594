"""A step's decision core (order, per-processor counts, the cap, raising processors, params,
async, before_send) and the loop that sends one step."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Awaitable
from typing import Any

import anthropic
import pytest

from prefill_guard import MessageList, PrefillErrorHandler, ProcessAPIErrorResult, guard
from prefill_guard.retries import RetryPolicy
from prefill_guard.run import Pipeline, Run, Step, asend_with_retries, send_with_retries
from prefill_guard.testing import PREFILL_MESSAGE, AnthropicEmulator, make_api_error

from .conftest import Harness, SwitchModel

RETRY = ProcessAPIErrorResult(retry=True)


class Recorder:
    """A processor that records its calls and answers from a fixed script."""

    def __init__(self, id: str, answers: list[ProcessAPIErrorResult | None] | None = None) -> None:
        self.id = id
        self.answers = list(answers or [])
        self.calls: list[int] = []

    def process_api_error(
        self, *, error: anthropic.APIError, messages: MessageList, retry_count: int
    ) -> ProcessAPIErrorResult | None:
        self.calls.append(retry_count)
        return self.answers.pop(0) if self.answers else None


class Raiser:
    """A processor with a bug: it changes the conversation, then raises."""

    id = "raiser"

    def process_api_error(
        self, *, error: anthropic.APIError, messages: MessageList, retry_count: int
    ) -> ProcessAPIErrorResult | None:
        messages.add("user", "half-done repair")
        raise RuntimeError("processor bug")


class AsyncRecorder:
    """An async processor that always asks for a retry."""

    id = "async-recorder"

    def __init__(self) -> None:
        self.calls = 0

    async def process_api_error(
        self, *, error: anthropic.APIError, messages: MessageList, retry_count: int
    ) -> ProcessAPIErrorResult | None:
        self.calls += 1
        return RETRY


NO_TRANSIENT = RetryPolicy(max_retries=0)
PROCESSOR_RETRY = 0.0  # what Run.failed answers for a processor's retry: send again at once


def _run(pipeline: Pipeline, params: dict[str, Any] | None = None) -> Step:
    messages = MessageList(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}]
    )
    return Step(
        pipeline, NO_TRANSIENT, messages, params or {"model": "claude-opus-4-6", "max_tokens": 16}
    )


ERROR = make_api_error(400, PREFILL_MESSAGE)


def test_first_processor_that_retries_wins_and_the_rest_are_not_called() -> None:
    """Registration order; after a retry=True, later processors are skipped for that failure."""
    first, second, third = Recorder("a", [None]), Recorder("b", [RETRY]), Recorder("c")
    run = _run(Pipeline([first, second, third]))
    assert run.failed(ERROR) == PROCESSOR_RETRY
    assert (first.calls, second.calls, third.calls) == ([0], [0], [])
    assert run.attempts[-1].retried_by == "b"


def test_retry_count_is_per_processor() -> None:
    """A blind retrier listed first cannot starve a repair processor of its first try."""
    blind = Recorder("blind", [RETRY, None, None])
    repair = Recorder("repair", [RETRY])
    run = _run(Pipeline([blind, repair]))
    assert run.failed(ERROR) == PROCESSOR_RETRY
    assert run.failed(ERROR) == PROCESSOR_RETRY
    assert blind.calls == [0, 1]
    assert repair.calls == [0]
    assert [a.retried_by for a in run.attempts] == ["blind", "repair"]


def test_cap_stops_processor_retries_without_consulting_processors() -> None:
    """Past max_processor_retries the error is given up and processors are not called."""
    always = Recorder("always", [RETRY] * 10)
    run = _run(Pipeline([always], max_processor_retries=2))
    results = [run.failed(ERROR) for _ in range(3)]
    assert results == [PROCESSOR_RETRY, PROCESSOR_RETRY, None]
    assert always.calls == [0, 1]


def test_default_cap_is_three() -> None:
    """max_processor_retries defaults to 3."""
    assert Pipeline().max_processor_retries == 3


def test_raising_processor_is_logged_skipped_and_its_changes_undone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The next processors still run; the half-done change does not reach the next request."""
    after = Recorder("after", [RETRY])
    run = _run(Pipeline([Raiser(), after]))
    with caplog.at_level(logging.ERROR, logger="prefill_guard"):
        assert run.failed(ERROR) == PROCESSOR_RETRY
    assert after.calls == [0]
    assert len(run.messages) == 2
    assert "processor 'raiser' raised" in caplog.text
    assert "processor bug" in caplog.text


def test_wrong_return_value_is_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    """A processor returning True instead of a result does not cause a retry."""
    wrong = Recorder("wrong", [True])  # type: ignore[list-item]
    run = _run(Pipeline([wrong]))
    with caplog.at_level(logging.ERROR, logger="prefill_guard"):
        assert run.failed(ERROR) is None
    assert "expected ProcessAPIErrorResult or None" in caplog.text


def test_params_are_passed_only_to_processors_that_declare_them() -> None:
    """SwitchModel gets params= and its change reaches the next request; Recorder does not."""
    plain = Recorder("plain")
    run = _run(Pipeline([plain, SwitchModel()]))
    assert run.failed(ERROR) == PROCESSOR_RETRY
    assert run.request()["model"] == "claude-haiku-4-5"


def test_request_is_rebuilt_from_the_conversation_without_metadata() -> None:
    """After the prefill repair, the next request ends with the reminder and carries no metadata."""
    run = _run(Pipeline([PrefillErrorHandler()]))
    assert run.failed(ERROR) == PROCESSOR_RETRY
    request = run.request()
    assert request["messages"][-1] == {
        "role": "user",
        "content": "<system-reminder>continue</system-reminder>",
    }
    assert all(set(m) == {"role", "content"} for m in request["messages"])


def test_errors_that_are_not_api_errors_never_reach_processors() -> None:
    """A bug in the caller's own code is not something to repair and retry."""
    recorder = Recorder("r", [RETRY])
    run = _run(Pipeline([recorder]))
    assert run.failed(ValueError("boom")) is None
    assert recorder.calls == []


def test_sync_run_refuses_async_processor_at_start() -> None:
    """require_sync raises a clear TypeError naming the processor."""
    pipeline = Pipeline([AsyncRecorder()])
    with pytest.raises(TypeError, match=r"processor 'async-recorder' has an async .* synchronous"):
        pipeline.require_sync("Agent.generate()")


def test_sync_run_refuses_a_hook_that_returns_an_awaitable() -> None:
    """A sync-looking hook that returns a coroutine is refused, never silently skipped."""

    class Sneaky:
        id = "sneaky"

        def process_api_error(self, **kwargs: Any) -> Awaitable[ProcessAPIErrorResult | None]:
            async def later() -> ProcessAPIErrorResult | None:
                return RETRY

            return later()

    run = _run(Pipeline([Sneaky()]))
    with pytest.raises(TypeError, match="processor 'sneaky' returned an awaitable"):
        run.failed(ERROR)


async def test_afailed_awaits_async_processors() -> None:
    """afailed awaits async def hooks and applies the same decisions."""
    processor = AsyncRecorder()
    run = _run(Pipeline([processor], max_processor_retries=1))
    assert await run.afailed(ERROR) == PROCESSOR_RETRY
    assert await run.afailed(ERROR) is None
    assert processor.calls == 1


async def test_afailed_skips_a_raising_async_processor() -> None:
    """An async processor that raises is skipped like a sync one."""

    class AsyncRaiser:
        id = "async-raiser"

        async def process_api_error(self, **kwargs: Any) -> ProcessAPIErrorResult | None:
            raise RuntimeError("async bug")

    after = Recorder("after", [RETRY])
    run = _run(Pipeline([AsyncRaiser(), after]))
    assert await run.afailed(ERROR) == PROCESSOR_RETRY
    assert after.calls == [0]


@pytest.mark.parametrize(
    ("processors", "error", "text"),
    [
        ([PrefillErrorHandler], TypeError, "got the class PrefillErrorHandler; pass an instance"),
        ([object()], TypeError, "error_processors[0]: <object"),
        ([Recorder("")], TypeError, "needs a non-empty str 'id'"),
        ([Recorder("x"), Recorder("x")], ValueError, "error_processors[1]: duplicate processor id"),
        (PrefillErrorHandler(), TypeError, "must be a list of processors"),
    ],
)
def test_bad_registration_is_refused(processors: Any, error: type[Exception], text: str) -> None:
    """Mistakes in the processor list are caught when registered, naming the position."""
    with pytest.raises(error) as info:
        Pipeline(processors)
    assert text in str(info.value)


def test_negative_cap_is_refused() -> None:
    """max_processor_retries must be a non-negative int."""
    with pytest.raises(ValueError, match="max_processor_retries must be an int >= 0"):
        Pipeline(max_processor_retries=-1)


def test_a_bool_cap_is_refused() -> None:
    """True is not a number of retries, though Python counts it as the int 1."""
    with pytest.raises(ValueError, match="max_processor_retries must be an int >= 0, got True"):
        Pipeline(max_processor_retries=True)


class HalfRepair:
    """Edits everything it can reach, then declines (or raises, or returns junk)."""

    id = "half-repair"

    def __init__(self, outcome: str) -> None:
        self.outcome = outcome

    def process_api_error(
        self,
        *,
        error: anthropic.APIError,
        messages: MessageList,
        retry_count: int,
        params: dict[str, Any],
    ) -> Any:
        messages[0]["content"] = "edited in place"
        messages.add("user", "appended")
        params["model"] = "changed"
        params["nested"]["list"].append("x")
        if self.outcome == "raise":
            raise RuntimeError("bug")
        return None if self.outcome == "pass" else "junk"


@pytest.mark.parametrize("outcome", ["pass", "raise", "junk"])
def test_only_the_winning_processor_keeps_its_changes(outcome: str) -> None:
    """Edits in place, additions and nested params are undone unless the processor won."""
    messages = MessageList(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}]
    )
    first = messages[0]
    run = Step(
        Pipeline([HalfRepair(outcome)]),
        NO_TRANSIENT,
        messages,
        {"model": "m", "nested": {"list": [1]}},
    )
    assert run.failed(ERROR) is None
    assert messages.to_api() == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "a"},
    ]
    assert messages[0] is first  # references held elsewhere stay valid
    assert run.params == {"model": "m", "nested": {"list": [1]}}


async def test_cancellation_inside_an_async_processor_undoes_its_changes() -> None:
    """A CancelledError mid-processor propagates, after the half-done repair is undone."""

    class Slow:
        id = "slow"

        async def process_api_error(
            self, *, error: anthropic.APIError, messages: MessageList, retry_count: int
        ) -> ProcessAPIErrorResult | None:
            messages.add("user", "half-done")
            await asyncio.Event().wait()
            return None

    run = _run(Pipeline([Slow()]))
    task = asyncio.create_task(run.afailed(ERROR))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(run.messages) == 2


class Sees:
    """Records the conversation and parameters it is given, then asks for a retry."""

    id = "sees"

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def process_api_error(
        self,
        *,
        error: anthropic.APIError,
        messages: MessageList,
        retry_count: int,
        params: dict[str, Any],
    ) -> ProcessAPIErrorResult | None:
        self.seen.append((messages.to_api(), copy.deepcopy(params)))
        return RETRY


@pytest.mark.parametrize("outcome", ["pass", "raise", "junk"])
def test_the_processors_after_one_that_did_not_win_see_the_conversation_as_it_was(
    outcome: str,
) -> None:
    """The save taken when the request failed is restored after each processor that did not
    win, and stays good: the processors after it see, and the retry sends, the original."""
    messages = MessageList(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}]
    )
    sees = Sees()
    pipeline = Pipeline([HalfRepair(outcome), Recorder("declines"), sees])
    run = Step(pipeline, NO_TRANSIENT, messages, {"model": "m", "nested": {"list": [1]}})
    assert run.failed(ERROR) == PROCESSOR_RETRY
    original = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}]
    assert sees.seen == [(original, {"model": "m", "nested": {"list": [1]}})]
    assert run.request()["messages"] == original


class Twice(HalfRepair):
    """HalfRepair that declines on its first call and wins on its second."""

    id = "twice"

    def __init__(self) -> None:
        super().__init__("pass")
        self.calls = 0

    def process_api_error(self, **kwargs: Any) -> Any:
        self.calls += 1
        super().process_api_error(**kwargs)
        return RETRY if self.calls == 2 else None


def test_a_second_failure_is_saved_afresh() -> None:
    """Each failure saves the conversation as it is then: a processor that wins the second
    time keeps its changes, made on top of the first repair."""
    twice = Twice()
    run = _run(Pipeline([twice, PrefillErrorHandler()]), {"model": "m", "nested": {"list": [1]}})
    assert run.failed(ERROR) == PROCESSOR_RETRY  # the handler's repair
    assert run.failed(ERROR) == PROCESSOR_RETRY  # twice's, on top of it
    assert [m["content"] for m in run.messages] == [
        "edited in place",
        "a",
        "<system-reminder>continue</system-reminder>",
        "appended",
    ]
    assert run.params == {"model": "changed", "nested": {"list": [1, "x"]}}


def test_bad_return_value_is_logged_by_type_not_content(caplog: pytest.LogCaptureFixture) -> None:
    """A junk return value is logged by its type, never by its (possibly private) contents."""
    wrong = Recorder("wrong", ["secret user text"])  # type: ignore[list-item]
    with caplog.at_level(logging.ERROR, logger="prefill_guard"):
        _run(Pipeline([wrong])).failed(ERROR)
    assert "returned a str" in caplog.text
    assert "secret" not in caplog.text


# -- before_send ---------------------------------------------------------------------------------


class Prepare:
    """A processor whose before_send appends a message and sets a parameter (or raises after)."""

    def __init__(self, id: str, *, fail: bool = False) -> None:
        self.id = id
        self.fail = fail

    def process_api_error(
        self, *, error: anthropic.APIError, messages: MessageList, retry_count: int
    ) -> ProcessAPIErrorResult | None:
        return None

    def before_send(self, *, messages: MessageList, params: dict[str, Any]) -> None:
        messages.add("user", f"appended by {self.id}")
        params["set_by"] = self.id
        if self.fail:
            raise RuntimeError("hook bug")


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def _caller_conversation() -> list[dict[str, Any]]:
    return [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}]


def test_before_send_hooks_prepare_the_first_request_in_order() -> None:
    """Each hook sees what the ones before it appended and set."""
    run = Step(
        Pipeline([Prepare("one"), Prepare("two")]),
        NO_TRANSIENT,
        MessageList(_caller_conversation()),
        {"model": "m"},
    )
    assert run.request() == {
        "model": "m",
        "set_by": "two",
        "messages": [*_caller_conversation(), _user("appended by one"), _user("appended by two")],
    }


def test_a_before_send_hook_that_raises_is_logged_skipped_and_undone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What a raising hook appended is dropped and the parameters it set are put back; the
    next hook still runs. (The contract: a hook appends messages and sets parameters.)"""
    params = {"model": "m", "nested": {"list": [1]}}
    with caplog.at_level(logging.ERROR, logger="prefill_guard"):
        run = Run(
            Pipeline([Prepare("failing", fail=True), Prepare("next")]),
            NO_TRANSIENT,
            MessageList(_caller_conversation()),
            params,
        ).next_step()
    assert "processor 'failing' raised in before_send; skipped" in caplog.text
    assert run.messages.to_api() == [*_caller_conversation(), _user("appended by next")]
    assert run.params == {"model": "m", "nested": {"list": [1]}, "set_by": "next"}
    assert params == {"model": "m", "nested": {"list": [1]}}


def test_a_run_owns_a_deep_copy_of_its_parameters() -> None:
    """A hook or processor that edits a nested parameter in place changes the run's only."""

    class EditsNested:
        id = "edits-nested"

        def before_send(self, *, messages: MessageList, params: dict[str, Any]) -> None:
            params["nested"]["list"].append("hook")

        def process_api_error(self, **kwargs: Any) -> ProcessAPIErrorResult | None:
            return None

    params = {"model": "m", "nested": {"list": [1]}}
    run = Run(Pipeline([EditsNested()]), NO_TRANSIENT, MessageList(_caller_conversation()), params)
    step = run.next_step()
    assert step.params["nested"] == {"list": [1, "hook"]}
    assert run.params is step.params  # a repair in one step holds for the next
    assert params == {"model": "m", "nested": {"list": [1]}}


# -- the loop ------------------------------------------------------------------------------------


def test_the_loop_sends_until_a_processor_repair_succeeds() -> None:
    """send_with_retries: the rejected request, the repair, the request rebuilt from it."""
    sent: list[list[dict[str, Any]]] = []

    def send(request: dict[str, Any]) -> str:
        sent.append(request["messages"])
        if len(sent) == 1:
            raise ERROR
        return "reply"

    run = _run(Pipeline([PrefillErrorHandler()]))
    assert send_with_retries(run, send) == "reply"
    assert len(sent) == 2
    assert sent[1][-1]["content"] == "<system-reminder>continue</system-reminder>"
    assert [a.retry for a in run.attempts] == ["processor"]


def test_the_loop_raises_the_original_error_when_nothing_retries() -> None:
    """The caller gets the very exception object the last attempt raised."""

    def send(request: dict[str, Any]) -> str:
        raise ERROR

    with pytest.raises(anthropic.BadRequestError) as info:
        send_with_retries(_run(Pipeline()), send)
    assert info.value is ERROR


def test_the_loop_waits_what_the_transient_policy_says() -> None:
    """A transient failure is sent again after the policy's wait (here retry-after-ms)."""
    waits: list[float] = []
    policy = RetryPolicy(max_retries=2, sleep=waits.append)
    overloaded = make_api_error(529, headers={"retry-after-ms": "250"})
    failures = [overloaded, overloaded]

    def send(request: dict[str, Any]) -> str:
        if failures:
            raise failures.pop()
        return "reply"

    run = Step(Pipeline(), policy, MessageList(_caller_conversation()), {"model": "m"})
    assert send_with_retries(run, send) == "reply"
    assert waits == [0.25, 0.25]
    assert [a.retry for a in run.attempts] == ["transient", "transient"]  # then the reply


async def test_the_async_loop_awaits_async_processors_and_sleeps() -> None:
    """asend_with_retries is the same loop with await: an async repair, an async sleep."""
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    policy = RetryPolicy(max_retries=1, sleep=sleep)
    failures = [ERROR, make_api_error(529, headers={"retry-after": "1"})]

    async def send(request: dict[str, Any]) -> str:
        if failures:
            raise failures.pop()
        return "reply"

    run = Step(
        Pipeline([AsyncRecorder()]), policy, MessageList(_caller_conversation()), {"model": "m"}
    )
    assert await asend_with_retries(run, send) == "reply"
    assert waits == [1.0]
    assert [a.retry for a in run.attempts] == ["transient", "processor"]


# -- the log record of a change made before sending -----------------------------------------

SECRET = "the caller's private question"
PREFILL = [{"role": "user", "content": SECRET}, {"role": "assistant", "content": "Hm"}]


def _repair_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    event = "prefill_guard.event"
    return [r for r in caplog.records if getattr(r, event, None) == "prefill_guard.repair"]


async def test_a_change_before_sending_is_one_log_record_with_its_fields(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """The adaptive handler's reminder, added before the first request to a model known to
    reject prefill, is one INFO record naming the processor and what it changed (how many
    messages, which parameters), never the text; a request it leaves alone logs nothing."""
    caplog.set_level(logging.INFO, logger="prefill_guard")
    await harness.run(harness.agent("claude-opus-4-6"), PREFILL)
    (record,) = _repair_records(caplog)
    assert getattr(record, "prefill_guard.processor.id") == "adaptive-prefill-handler"
    before, after = "prefill_guard.repair.messages_before", "prefill_guard.repair.messages_after"
    assert (getattr(record, before), getattr(record, after)) == (2, 3)
    assert getattr(record, "prefill_guard.repair.params") == []
    assert SECRET not in repr([vars(r) for r in caplog.records])
    caplog.clear()
    await harness.run(harness.agent("claude-opus-4-6"), PREFILL[:1])
    assert _repair_records(caplog) == []
    await harness.close()


def test_a_guarded_client_logs_its_change_before_sending(
    anthropic_emulator: AnthropicEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Through the middleware, the proactive reminder is the same record."""
    caplog.set_level(logging.INFO, logger="prefill_guard")
    with guard(anthropic_emulator.client()) as client:
        client.messages.create(model="claude-opus-4-6", max_tokens=16, messages=PREFILL)  # type: ignore[arg-type]
    (record,) = _repair_records(caplog)
    assert getattr(record, "prefill_guard.processor.id") == "adaptive-prefill-handler"
    assert len(anthropic_emulator.message_requests) == 1
