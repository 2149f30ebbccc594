"""The decision core: order, per-processor counts, the cap, raising processors, params, async."""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Awaitable
from typing import Any

import anthropic
import pytest

from prefill_guard import (
    MessageList,
    Pipeline,
    PrefillErrorHandler,
    ProcessAPIErrorResult,
    default_processors,
)
from prefill_guard.pipeline import (
    Attempt,
    Generation,
    RunResult,
    appends_only,
    run_async,
    run_sync,
)
from prefill_guard.processors import changes_only_on_retry, only_on_prefill
from prefill_guard.testing import PREFILL_MESSAGE, make_api_error

from .conftest import SwitchModel

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


def _generation(pipeline: Pipeline) -> Any:
    messages = MessageList(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}]
    )
    return pipeline.begin(messages, {"model": "claude-opus-4-6", "max_tokens": 16})


ERROR = make_api_error(400, PREFILL_MESSAGE)


def test_first_processor_that_retries_wins_and_the_rest_are_not_called() -> None:
    """Registration order; after a retry=True, later processors are skipped for that failure."""
    first, second, third = Recorder("a", [None]), Recorder("b", [RETRY]), Recorder("c")
    generation = _generation(Pipeline([first, second, third]))
    assert run_sync(generation.failed(ERROR)) is True
    assert (first.calls, second.calls, third.calls) == ([0], [0], [])
    assert generation.attempts[-1].retried_by == "b"


def test_retry_count_is_per_processor() -> None:
    """A blind retrier listed first cannot starve a repair processor of its first try."""
    blind = Recorder("blind", [RETRY, None, None])
    repair = Recorder("repair", [RETRY])
    generation = _generation(Pipeline([blind, repair]))
    assert run_sync(generation.failed(ERROR)) is True
    assert run_sync(generation.failed(ERROR)) is True
    assert blind.calls == [0, 1]
    assert repair.calls == [0]
    assert [a.retried_by for a in generation.attempts] == ["blind", "repair"]


def test_cap_stops_processor_retries_without_consulting_processors() -> None:
    """Past max_processor_retries the error is given up and processors are not called."""
    always = Recorder("always", [RETRY] * 10)
    generation = _generation(Pipeline([always], max_processor_retries=2))
    results = [run_sync(generation.failed(ERROR)) for _ in range(3)]
    assert results == [True, True, False]
    assert always.calls == [0, 1]


def test_default_cap_is_three() -> None:
    """max_processor_retries defaults to 3."""
    assert Pipeline().max_processor_retries == 3


def test_raising_processor_is_logged_skipped_and_its_changes_undone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The next processors still run; the half-done change does not reach the next request."""
    after = Recorder("after", [RETRY])
    generation = _generation(Pipeline([Raiser(), after]))
    with caplog.at_level(logging.ERROR, logger="prefill_guard"):
        assert run_sync(generation.failed(ERROR)) is True
    assert after.calls == [0]
    assert len(generation.messages) == 2
    assert "processor 'raiser' raised" in caplog.text
    assert "processor bug" in caplog.text


def test_wrong_return_value_is_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    """A processor returning True instead of a result does not cause a retry."""
    wrong = Recorder("wrong", [True])  # type: ignore[list-item]
    generation = _generation(Pipeline([wrong]))
    with caplog.at_level(logging.ERROR, logger="prefill_guard"):
        assert run_sync(generation.failed(ERROR)) is False
    assert "expected ProcessAPIErrorResult or None" in caplog.text


def test_params_are_passed_only_to_processors_that_declare_them() -> None:
    """SwitchModel gets params= and its change reaches the next request; Recorder does not."""
    plain = Recorder("plain")
    generation = _generation(Pipeline([plain, SwitchModel()]))
    assert run_sync(generation.failed(ERROR)) is True
    assert generation.request()["model"] == "claude-haiku-4-5"


def test_request_is_rebuilt_from_the_conversation_without_metadata() -> None:
    """After the prefill repair, the next request ends with the reminder and carries no metadata."""
    generation = _generation(Pipeline([PrefillErrorHandler()]))
    assert run_sync(generation.failed(ERROR)) is True
    request = generation.request()
    assert request["messages"][-1] == {
        "role": "user",
        "content": "<system-reminder>continue</system-reminder>",
    }
    assert all(set(m) == {"role", "content"} for m in request["messages"])


def test_errors_that_are_not_api_errors_never_reach_processors() -> None:
    """A bug in the caller's own code is not something to repair and retry."""
    recorder = Recorder("r", [RETRY])
    generation = _generation(Pipeline([recorder]))
    assert run_sync(generation.failed(ValueError("boom"))) is False
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

    generation = _generation(Pipeline([Sneaky()]))
    with pytest.raises(TypeError, match="processor 'sneaky' returned an awaitable"):
        run_sync(generation.failed(ERROR))


async def test_async_driver_awaits_async_processors() -> None:
    """run_async awaits async def hooks and applies the same decisions."""
    processor = AsyncRecorder()
    generation = _generation(Pipeline([processor], max_processor_retries=1))
    assert await run_async(generation.failed(ERROR)) is True
    assert await run_async(generation.failed(ERROR)) is False
    assert processor.calls == 1


async def test_async_driver_skips_a_raising_async_processor() -> None:
    """An async processor that raises is skipped like a sync one."""

    class AsyncRaiser:
        id = "async-raiser"

        async def process_api_error(self, **kwargs: Any) -> ProcessAPIErrorResult | None:
            raise RuntimeError("async bug")

    after = Recorder("after", [RETRY])
    generation = _generation(Pipeline([AsyncRaiser(), after]))
    assert await run_async(generation.failed(ERROR)) is True
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
    generation = Pipeline([HalfRepair(outcome)]).begin(
        messages, {"model": "m", "nested": {"list": [1]}}
    )
    assert run_sync(generation.failed(ERROR)) is False
    assert messages.to_api() == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "a"},
    ]
    assert messages[0] is first  # references held elsewhere stay valid
    assert generation.params == {"model": "m", "nested": {"list": [1]}}


async def test_cancellation_inside_an_async_processor_undoes_its_changes() -> None:
    """A CancelledError mid-processor propagates, after the half-done repair is undone."""
    import asyncio

    class Slow:
        id = "slow"

        async def process_api_error(
            self, *, error: anthropic.APIError, messages: MessageList, retry_count: int
        ) -> ProcessAPIErrorResult | None:
            messages.add("user", "half-done")
            await asyncio.Event().wait()
            return None

    generation = _generation(Pipeline([Slow()]))
    task = asyncio.create_task(run_async(generation.failed(ERROR)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(generation.messages) == 2


class MarkedHalfRepair(HalfRepair):
    """HalfRepair marked ``changes_only_on_retry``, used only to raise or return junk after
    its edits: the two cases in which a marked processor's changes must still be undone."""

    id = "marked-half-repair"

    @changes_only_on_retry
    def process_api_error(self, **kwargs: Any) -> Any:
        return super().process_api_error(**kwargs)


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
        self.seen.append((messages.to_api(), dict(params)))
        return RETRY


@pytest.mark.parametrize("outcome", ["raise", "junk"])
def test_a_marked_processor_that_raises_or_returns_junk_is_still_undone(outcome: str) -> None:
    """The shared save is restored after a marked processor that raises or returns junk, and
    the processors after it see (and the retry sends) the conversation as it was."""
    messages = MessageList(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}]
    )
    sees = Sees()
    pipeline = Pipeline([MarkedHalfRepair(outcome), MarkedDecliner("after"), sees])
    generation = pipeline.begin(messages, {"model": "m", "nested": {"list": [1]}})
    assert run_sync(generation.failed(ERROR)) is True
    original = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}]
    assert sees.seen == [(original, {"model": "m", "nested": {"list": [1]}})]
    assert generation.request()["messages"] == original


class MarkedDecliner:
    """Declines without changing anything, and is marked as such."""

    def __init__(self, id: str) -> None:
        self.id = id

    @changes_only_on_retry
    def process_api_error(
        self, *, error: anthropic.APIError, messages: MessageList, retry_count: int
    ) -> ProcessAPIErrorResult | None:
        return None


class OverriddenDecliner(MarkedDecliner):
    """The same, overridden in a subclass: the override is not marked."""

    def process_api_error(
        self, *, error: anthropic.APIError, messages: MessageList, retry_count: int
    ) -> ProcessAPIErrorResult | None:
        return None


def _saves_in_one_repair(processors: list[Any], monkeypatch: pytest.MonkeyPatch) -> int:
    saves = 0
    save = Generation._save

    def counted(self: Generation) -> Any:
        nonlocal saves
        saves += 1
        return save(self)

    monkeypatch.setattr(Generation, "_save", counted)
    generation = _generation(Pipeline(processors))
    assert run_sync(generation.failed(ERROR)) is True
    return saves


@pytest.mark.parametrize(
    ("kinds", "saves"),
    [
        ("MMM", 1),  # one save serves every marked processor and the winner
        ("MUM", 2),  # an unmarked one that declines is undone; the next needs a new save
        ("UUU", 4),  # one save per processor, as without marks
        ("OOM", 3),  # an override in a subclass is not marked
    ],
)
def test_marked_processors_that_decline_share_one_save(
    kinds: str, saves: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Conversation and params are saved before the first processor, and again only after
    one that may have changed them was undone (M marked, U unmarked, O a subclass's override
    of a marked hook; a winner that is not marked follows). All of them decline."""
    kind = {"M": MarkedDecliner, "U": Recorder, "O": OverriddenDecliner}
    processors = [kind[k](f"{k}{i}") for i, k in enumerate(kinds)]
    assert _saves_in_one_repair([*processors, Recorder("wins", [RETRY])], monkeypatch) == saves


def test_the_built_in_processors_share_one_save(monkeypatch: pytest.MonkeyPatch) -> None:
    """A prefill 400 through the whole default stack saves the conversation once: every
    built-in is marked ``changes_only_on_retry`` (it changes nothing when it declines)."""
    assert _saves_in_one_repair(default_processors(), monkeypatch) == 1


def test_bad_return_value_is_logged_by_type_not_content(caplog: pytest.LogCaptureFixture) -> None:
    """A junk return value is logged by its type, never by its (possibly private) contents."""
    wrong = Recorder("wrong", ["secret user text"])  # type: ignore[list-item]
    with caplog.at_level(logging.ERROR, logger="prefill_guard"):
        run_sync(_generation(Pipeline([wrong])).failed(ERROR))
    assert "returned a str" in caplog.text
    assert "secret" not in caplog.text


class Prepare:
    """A processor whose before_send edits the first message and the params, or only appends."""

    def __init__(self, id: str, *, edit: bool, fail: bool = False) -> None:
        self.id = id
        self.edit = edit
        self.fail = fail

    def process_api_error(
        self, *, error: anthropic.APIError, messages: MessageList, retry_count: int
    ) -> ProcessAPIErrorResult | None:
        return None

    def before_send(self, *, messages: MessageList, params: dict[str, Any]) -> None:
        if self.edit:
            messages[0]["content"] = f"edited by {self.id}"
            params["nested"]["list"].append(self.id)
        messages.add("user", f"appended by {self.id}")
        if self.fail:
            raise RuntimeError("hook bug")


class AppendOnly(Prepare):
    """The same hook, marked append-only (so it must not be given edit=True)."""

    @appends_only
    def before_send(self, *, messages: MessageList, params: dict[str, Any]) -> None:
        super().before_send(messages=messages, params=params)


def _caller_conversation() -> list[dict[str, Any]]:
    return [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}]


@pytest.mark.parametrize("hook", [Prepare, AppendOnly])
def test_a_before_send_hook_that_raises_is_logged_skipped_and_undone(
    hook: type[Prepare], caplog: pytest.LogCaptureFixture
) -> None:
    """What a raising hook appended (and, unmarked, edited) is undone; the next hook still runs."""
    raw = _caller_conversation()
    params = {"model": "m", "nested": {"list": [1]}}
    failing = hook("failing", edit=hook is Prepare, fail=True)
    with caplog.at_level(logging.ERROR, logger="prefill_guard"):
        generation = Pipeline([failing, AppendOnly("next", edit=False)]).begin(
            MessageList(raw), params
        )
    assert "processor 'failing' raised in before_send; skipped" in caplog.text
    assert generation.messages.to_api() == [*_caller_conversation(), _user("appended by next")]
    assert generation.params == {"model": "m", "nested": {"list": [1]}}
    assert params == {"model": "m", "nested": {"list": [1]}}


def test_hooks_on_a_borrowed_conversation_change_the_generations_copy_only() -> None:
    """An append-only hook after one that edits works on the copy the first one made: both
    changes reach the request, and the borrowed dicts and params stay as the caller's."""
    raw = _caller_conversation()
    borrowed = MessageList._borrow(raw)
    params = {"model": "m", "nested": {"list": [1]}}
    pipeline = Pipeline([Prepare("edit", edit=True), AppendOnly("append", edit=False)])
    generation = pipeline.begin(borrowed, params, borrowed=True)
    assert not generation.borrowed
    assert generation.request()["messages"] == [
        {"role": "user", "content": "edited by edit"},
        {"role": "assistant", "content": "a"},
        _user("appended by edit"),
        _user("appended by append"),
    ]
    assert generation.params["nested"] == {"list": [1, "edit"]}
    assert raw == _caller_conversation()
    assert params == {"model": "m", "nested": {"list": [1]}}


@pytest.mark.parametrize("appends", [False, True])
def test_an_append_only_hook_leaves_a_borrowed_conversation_borrowed(appends: bool) -> None:
    """Append-only hooks copy nothing: the generation still shares the caller's dicts."""
    raw = _caller_conversation()
    borrowed = MessageList._borrow(raw)
    generation = Pipeline([Maybe("maybe", appends=appends)]).begin(borrowed, {}, borrowed=True)
    assert generation.borrowed
    assert all(ours is theirs for ours, theirs in zip(generation.messages, raw, strict=False))
    assert len(generation.messages) == (3 if appends else 2)
    assert raw == _caller_conversation()


class Maybe:
    """An append-only hook that appends a user message only when told to (or raises)."""

    def __init__(self, id: str, *, appends: bool, fail: bool = False) -> None:
        self.id = id
        self.appends = appends
        self.fail = fail

    @appends_only
    def before_send(self, *, messages: MessageList, params: dict[str, Any]) -> None:
        if self.appends:
            messages.add("user", f"appended by {self.id}")
        if self.fail:
            raise RuntimeError(f"{self.id} failed")

    def process_api_error(
        self, *, error: anthropic.APIError, messages: MessageList, retry_count: int
    ) -> ProcessAPIErrorResult | None:
        return None


@pytest.mark.parametrize(
    ("hooks", "appended"),
    [
        ([], False),
        ([Maybe("a", appends=False)], False),
        ([Maybe("a", appends=True)], True),
        ([Maybe("a", appends=False), Maybe("b", appends=True)], True),
        ([Maybe("a", appends=True, fail=True)], False),
        ([Maybe("a", appends=True, fail=True), Maybe("b", appends=True)], True),
    ],
)
def test_run_appending_hooks_says_whether_a_hook_appended(
    hooks: list[Maybe], appended: bool
) -> None:
    """What a raising hook appended is dropped and does not count; the next hook still runs."""
    raw = _caller_conversation()
    borrowed = MessageList._borrow(raw)
    assert Pipeline(hooks).run_appending_hooks(borrowed, {"model": "m"}) is appended
    kept = [hook.id for hook in hooks if hook.appends and not hook.fail]
    assert borrowed.to_api() == [
        *_caller_conversation(),
        *(_user(f"appended by {k}") for k in kept),
    ]
    assert raw == _caller_conversation()


@pytest.mark.parametrize(
    "hooks",
    [
        [Maybe("a", appends=True)],
        [Maybe("a", appends=True, fail=True), Maybe("b", appends=False)],
        [Maybe("a", appends=True), Maybe("b", appends=True, fail=True)],
    ],
)
def test_a_generation_made_after_run_appending_hooks_is_the_one_begin_makes(
    hooks: list[Maybe],
) -> None:
    """The middleware's lazy path and begin() leave a generation in the same state: same
    conversation, parameters and request, still borrowed, and the same repair on a failure."""
    pipeline = Pipeline([*hooks, PrefillErrorHandler()])
    params = {"model": "m", "max_tokens": 8}
    borrowed, messages = (MessageList._borrow(_caller_conversation()) for _ in range(2))
    begun = pipeline.begin(borrowed, dict(params), borrowed=True)
    lazy_params = dict(params)
    pipeline.run_appending_hooks(messages, lazy_params)
    lazy = Generation(pipeline, messages, lazy_params, borrowed=True)
    assert (lazy.request(), lazy.borrowed, lazy.params) == (
        begun.request(),
        begun.borrowed,
        begun.params,
    )
    for generation in (begun, lazy):
        assert run_sync(generation.failed(make_api_error(400, PREFILL_MESSAGE)))
    assert lazy.request() == begun.request()
    assert [a.retried_by for a in lazy.attempts] == [a.retried_by for a in begun.attempts]


def test_run_appending_hooks_refuses_a_hook_that_may_edit() -> None:
    """A pipeline with a hook not marked appends_only must go through begin(), which can undo
    an edit: asking it to run its hooks the cheap way is a clear TypeError."""
    with pytest.raises(TypeError, match="all marked appends_only; use begin"):
        Pipeline([Prepare("edit", edit=True)]).run_appending_hooks(MessageList(), {})


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


class SeesRoles:
    """A ``before_send`` hook, not marked, that records the last role at each call."""

    def __init__(self, id: str) -> None:
        self.id = id
        self.seen: list[str | None] = []

    def before_send(self, *, messages: MessageList, params: dict[str, Any]) -> None:
        last = messages.last
        self.seen.append(None if last is None else last["role"])

    def process_api_error(self, **kwargs: Any) -> ProcessAPIErrorResult | None:
        return None


class OnPrefill(SeesRoles):
    """The same hook, marked ``only_on_prefill`` and ``appends_only``."""

    @appends_only
    @only_on_prefill
    def before_send(self, *, messages: MessageList, params: dict[str, Any]) -> None:
        super().before_send(messages=messages, params=params)


class OnPrefillMayEdit(SeesRoles):
    """Marked ``only_on_prefill`` only: a pipeline with it runs its hooks through begin()."""

    @only_on_prefill
    def before_send(self, *, messages: MessageList, params: dict[str, Any]) -> None:
        super().before_send(messages=messages, params=params)


class OverridesOnPrefill(OnPrefill):
    """A subclass's override of the marked hook, itself not marked."""

    def before_send(self, *, messages: MessageList, params: dict[str, Any]) -> None:
        super().before_send(messages=messages, params=params)


class AppendsAnAssistantTurn(SeesRoles):
    """An append-only hook that makes the conversation a prefill."""

    @appends_only
    def before_send(self, *, messages: MessageList, params: dict[str, Any]) -> None:
        super().before_send(messages=messages, params=params)
        messages.add("assistant", "prefilled by a hook")


_BY_LAST_ROLE = {
    "user": [_user("hi")],
    "assistant": [_user("hi"), {"role": "assistant", "content": "a"}],
    "empty": [],
}


@pytest.mark.parametrize("last", list(_BY_LAST_ROLE))
@pytest.mark.parametrize(
    ("how", "marked"),
    [("begin", OnPrefill), ("begin", OnPrefillMayEdit), ("run_appending_hooks", OnPrefill)],
)
def test_an_only_on_prefill_hook_is_called_only_when_the_conversation_ends_with_an_assistant_turn(
    last: str, how: str, marked: type[SeesRoles]
) -> None:
    """Through begin() (either way it runs hooks) and run_appending_hooks(), a marked hook is
    called for a prefill only; an unmarked one beside it is called every time."""
    hook, unmarked = marked("marked"), SeesRoles("unmarked")
    stack = [hook] if how == "run_appending_hooks" else [hook, unmarked]
    pipeline = Pipeline(stack)
    messages = MessageList(_BY_LAST_ROLE[last])
    if how == "begin":
        pipeline.begin(messages, {"model": "m"})
        assert unmarked.seen == [None if last == "empty" else last]
    else:
        assert pipeline.run_appending_hooks(messages, {"model": "m"}) is False
    assert hook.seen == (["assistant"] if last == "assistant" else [])


def test_an_only_on_prefill_hook_sees_what_the_hooks_before_it_appended() -> None:
    """Whether a conversation is a prefill is asked at each marked hook's turn: after a hook
    appends an assistant turn, the marked hook after it is called."""
    first, marked = AppendsAnAssistantTurn("first"), OnPrefill("marked")
    messages = MessageList([_user("hi")])
    assert Pipeline([first, marked]).run_appending_hooks(messages, {}) is True
    assert (first.seen, marked.seen) == (["user"], ["assistant"])


@pytest.mark.parametrize(
    ("stack", "flag"),
    [
        ([], True),
        ([OnPrefill("a")], True),
        ([OnPrefill("a"), OnPrefillMayEdit("b"), PrefillErrorHandler()], True),
        ([OnPrefill("a"), SeesRoles("b")], False),
        ([OverridesOnPrefill("a")], False),
        (default_processors(), True),
    ],
)
def test_before_send_only_on_prefill_says_whether_every_hook_is_marked(
    stack: list[Any], flag: bool
) -> None:
    """The flag the middleware reads to send a non-prefill request without calling any hook:
    true with no hooks, or all marked (the default stack); an override is not marked."""
    assert Pipeline(stack).before_send_only_on_prefill is flag


@pytest.mark.parametrize("record", [Attempt, RunResult])
def test_records_take_their_fields_in_order_with_their_defaults(record: type) -> None:
    """Attempt and RunResult write their fields in a hand-written __init__ (one of each per
    request): it takes exactly the dataclass fields, and the records stay frozen."""
    taken = [(p.name, p.default) for p in inspect.signature(record).parameters.values()]
    declared = [
        (f.name, inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default)
        for f in dataclasses.fields(record)
    ]
    assert taken == declared
    values = {name: object() for name, _ in declared}
    made = record(**values)
    assert all(getattr(made, name) is value for name, value in values.items())
    assert made == record(**values)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.number = 2
