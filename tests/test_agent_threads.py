"""The Agent with a thread store: load, append, run, save; input kept even when a run fails."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prefill_guard import (
    Agent,
    MessageList,
    PrefillErrorHandler,
    ProcessAPIErrorResult,
    StoreError,
    default_processors,
)
from prefill_guard.messages import append_system_reminder, is_system_reminder
from prefill_guard.stores import ThreadStore
from prefill_guard.testing import DEFAULT_REPLY_TEXT, AnthropicEmulator, Fault, tool_use

from .conftest import STORE_KINDS, open_store, store_class, store_location

MODEL = "claude-opus-4-6"
REPLY = {"role": "assistant", "content": [{"type": "text", "text": DEFAULT_REPLY_TEXT}]}


@pytest.fixture
def store(any_store: ThreadStore) -> ThreadStore:
    """Each test runs against every store."""
    return any_store


def _agent(emulator: AnthropicEmulator, store: Any, client: Any, **kwargs: Any) -> Agent:
    return Agent(
        MODEL, client=client, store=store, error_processors=[PrefillErrorHandler()], **kwargs
    )


def test_a_run_saves_input_and_reply(anthropic_emulator: AnthropicEmulator, store: Any) -> None:
    """generate(text, thread_id=...) appends the input and the reply to the thread."""
    with anthropic_emulator.client() as client:
        result = _agent(anthropic_emulator, store, client).generate("hello", thread_id="t1")
    assert store.recall("t1") == [{"role": "user", "content": "hello"}, REPLY]
    assert result.messages.to_ui() == store.recall("t1")


def test_reply_again_without_input_recovers_and_keeps_the_reminder(
    anthropic_emulator: AnthropicEmulator, store: Any
) -> None:
    """No new input on a thread ending with a reply: the prefill 400 is repaired, the hidden
    reminder is stored (raw) and hidden from the UI view."""
    with anthropic_emulator.client() as client:
        agent = _agent(anthropic_emulator, store, client)
        agent.generate("hello", thread_id="t1")
        agent.generate(thread_id="t1")
    raw = store.recall("t1", include_system_reminders=True)
    assert [m["role"] for m in raw] == ["user", "assistant", "user", "assistant"]
    assert is_system_reminder(raw[2])
    assert store.recall("t1") == [{"role": "user", "content": "hello"}, REPLY, REPLY]
    assert len(anthropic_emulator.message_requests) == 3
    assert anthropic_emulator.message_requests[-1].body["messages"][-1] == {
        "role": "user",
        "content": "<system-reminder>continue</system-reminder>",
    }


def test_the_next_turn_reuses_the_stored_reminder(
    anthropic_emulator: AnthropicEmulator, store: Any
) -> None:
    """The stored prefix is what was sent before (reminder included): no re-injection."""
    with anthropic_emulator.client() as client:
        agent = _agent(anthropic_emulator, store, client)
        agent.generate("hello", thread_id="t1")
        agent.generate(thread_id="t1")
        agent.generate("and now?", thread_id="t1")
    third, fourth = (r.body["messages"] for r in anthropic_emulator.message_requests[2:])
    assert fourth[: len(third)] == third  # the earlier request is an exact prefix
    reminders = [m for m in store.load("t1") if is_system_reminder(m)]
    assert len(reminders) == 1


def test_a_failed_run_keeps_the_input_and_stores_no_reply(
    anthropic_emulator: AnthropicEmulator, store: Any
) -> None:
    """What the user typed survives an API failure; no assistant message is stored."""
    anthropic_emulator.script(Fault(400))
    with anthropic_emulator.client() as client, pytest.raises(anthropic.BadRequestError):
        _agent(anthropic_emulator, store, client, max_retries=0).generate("typed", thread_id="t1")
    assert store.recall("t1", include_system_reminders=True) == [
        {"role": "user", "content": "typed"}
    ]


def test_an_interrupted_stream_stores_no_partial_reply(
    anthropic_emulator: AnthropicEmulator, store: Any
) -> None:
    """A stream cut after content: the input is kept, the partial text is not."""
    anthropic_emulator.script(Fault.sse_error(after_deltas=2))
    with anthropic_emulator.client() as client:
        agent = _agent(anthropic_emulator, store, client)
        with pytest.raises(anthropic.APIStatusError), agent.stream("hi", thread_id="t1") as stream:
            stream.get_final_message()
        with agent.stream(thread_id="t1") as stream:
            assert "".join(stream.text_stream) == DEFAULT_REPLY_TEXT
    assert store.recall("t1") == [{"role": "user", "content": "hi"}, REPLY]


async def test_async_drivers_use_the_thread(
    anthropic_emulator: AnthropicEmulator, store: Any
) -> None:
    """agenerate and astream load and save the thread the same way."""
    async with anthropic_emulator.async_client() as client:
        agent = _agent(anthropic_emulator, store, client)
        await agent.agenerate("one", thread_id="t1")
        async with agent.astream(thread_id="t1") as stream:
            await stream.get_final_message()
    assert [m["role"] for m in store.load("t1")] == ["user", "assistant", "user", "assistant"]


def test_a_processor_that_trims_history_trims_the_stored_thread(
    anthropic_emulator: AnthropicEmulator, store: Any
) -> None:
    """The thread keeps what the successful request sent: a processor that drops a stored
    message drops it from the thread too (the rule of docs/threads.md), stored once."""

    class TrimThenRemind:
        id = "trim-then-remind"

        def process_api_error(
            self, *, error: anthropic.APIError, messages: MessageList, retry_count: int
        ) -> ProcessAPIErrorResult | None:
            del messages[0]
            return PrefillErrorHandler().process_api_error(
                error=error, messages=messages, retry_count=retry_count
            )

    store.append("t1", [{"role": "user", "content": "old"}, {"role": "assistant", "content": "a"}])
    with anthropic_emulator.client() as client:
        Agent(MODEL, client=client, store=store, error_processors=[TrimThenRemind()]).generate(
            thread_id="t1"
        )
    sent = anthropic_emulator.message_requests[-1].body["messages"]
    assert sent[0]["content"] == "a"
    assert [m["content"] for m in store.load("t1").to_api()] == [
        *(m["content"] for m in sent),
        REPLY["content"],
    ]


def test_thread_misuse_is_a_clear_error(anthropic_emulator: AnthropicEmulator, store: Any) -> None:
    """thread_id without a store, nothing to send, an empty thread, a wrong store."""
    with anthropic_emulator.client() as client:
        with pytest.raises(ValueError, match="thread_id needs a store"):
            Agent(MODEL, client=client).generate("hi", thread_id="t1")
        with pytest.raises(TypeError, match=r"Agent\.generate\(\) needs messages"):
            Agent(MODEL, client=client).generate()
        with pytest.raises(ValueError, match="thread 'empty' is empty"):
            Agent(MODEL, client=client, store=store).generate(thread_id="empty")
    with pytest.raises(TypeError, match="store must be a ThreadStore"):
        Agent(MODEL, store=object())  # type: ignore[arg-type]
    assert anthropic_emulator.message_requests == []


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_two_processes_on_one_thread_lose_nothing(kind: str, tmp_path: Path) -> None:
    """Two real processes, each running 10 turns on the same thread at once (an SQLite file,
    or a PostgreSQL database): all 20 inputs and 20 replies are stored, each reply after its
    own input."""

    def echo(body: dict[str, Any]) -> str:
        users = [m for m in body["messages"] if m["role"] == "user"]
        return f"echo {users[-1]['content']}"

    script = textwrap.dedent(
        """
        import sys
        import anthropic
        from prefill_guard import Agent, SQLiteStore
        base_url, kind, where, name = sys.argv[1:]
        if kind == "postgres":
            from prefill_guard.postgres import PostgresStore as open_store
        else:
            open_store = SQLiteStore
        with open_store(where) as store, anthropic.Anthropic(api_key="k", base_url=base_url) as c:
            agent = Agent("claude-haiku-4-5", client=c, store=store)
            for i in range(10):
                agent.generate(f"{name}-{i}", thread_id="shared")
        """
    )
    with store_location(kind, tmp_path) as where:
        with AnthropicEmulator(reply=echo) as emulator:
            workers = [
                subprocess.Popen(
                    [sys.executable, "-c", script, emulator.base_url, kind, where, name]
                )
                for name in ("a", "b")
            ]
            assert [w.wait(timeout=120) for w in workers] == [0, 0]
        with store_class(kind)(where) as store:
            thread = store.recall("shared")
    inputs = [m["content"] for m in thread if m["role"] == "user"]
    replies = [m["content"][0]["text"] for m in thread if m["role"] == "assistant"]
    expected = sorted(f"{n}-{i}" for n in "ab" for i in range(10))
    assert sorted(inputs) == expected
    assert sorted(replies) == sorted(f"echo {text}" for text in expected)
    for name in "ab":
        mine = [m for m in thread if name + "-" in str(m["content"])]
        order = [m["content"] if m["role"] == "user" else m["content"][0]["text"] for m in mine]
        assert order == [x for i in range(10) for x in (f"{name}-{i}", f"echo {name}-{i}")]


# -- what a run stores: each message once, repairs of stored messages included ---------------

HAIKU = "claude-haiku-4-5"  # accepts prefill: the whitespace and orphan repairs stand alone


def _haiku(store: Any, client: Any) -> Agent:
    return Agent(HAIKU, client=client, store=store, error_processors=default_processors())


def _sent_then_reply(emulator: AnthropicEmulator) -> list[dict[str, Any]]:
    """What the last (successful) request sent, plus the emulator's reply."""
    return [*emulator.message_requests[-1].body["messages"], REPLY]


def test_a_trailing_whitespace_repair_is_stored_once(
    anthropic_emulator: AnthropicEmulator, store: Any
) -> None:
    """Input ending in "Sure " (a prefill with trailing whitespace, which the API refuses):
    the repaired "Sure" replaces it in the thread; nothing is stored twice, and the next turn
    sends the repaired history without paying the 400 again."""
    with anthropic_emulator.client() as client:
        agent = _haiku(store, client)
        agent.generate(
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Sure "}],
            thread_id="t1",
        )
        assert len(anthropic_emulator.message_requests) == 2
        assert store.load("t1").to_api() == _sent_then_reply(anthropic_emulator)
        assert [m["content"] for m in store.load("t1")][:2] == ["Hi", "Sure"]
        agent.generate("next", thread_id="t1")
    assert len(anthropic_emulator.message_requests) == 3  # no second 400
    assert len(store.load("t1")) == 5
    assert store.load("t1").to_api() == _sent_then_reply(anthropic_emulator)


def test_an_orphaned_tool_use_repair_stores_the_users_message_once(
    anthropic_emulator: AnthropicEmulator, store: Any
) -> None:
    """A thread ending in a tool_use, then new text: the handler answers the call inside the
    stored user message, which is rewritten, not stored a second time."""
    tool_use = {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}}
    store.append(
        "t1", [{"role": "user", "content": "look"}, {"role": "assistant", "content": [tool_use]}]
    )
    with anthropic_emulator.client() as client:
        _haiku(store, client).generate("never mind", thread_id="t1")
    stored = store.load("t1")
    assert len(anthropic_emulator.message_requests) == 2
    assert stored.to_api() == _sent_then_reply(anthropic_emulator)
    assert [m["role"] for m in stored] == ["user", "assistant", "user", "assistant"]
    assert stored[2]["content"][0]["type"] == "tool_result"
    assert stored[2]["content"][-1] == {"type": "text", "text": "never mind"}


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("caf\udce9", r"messages\[0\]: text 'caf\\udce9' holds a lone surrogate"),
        ("   ", r"messages\[0\]: the content is empty or only whitespace"),
        ("", r"messages\[0\]: the content is empty or only whitespace"),
        ([{"role": "user", "content": []}], r"messages\[0\]: the content is an empty list"),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "ok"}, {"type": "text", "text": "\n"}],
                }
            ],
            r"messages\[0\]\.content\[1\]: the text is empty or only whitespace",
        ),
        (
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t", "content": float("nan")}
                    ],
                }
            ],
            r"messages\[0\]: the number nan is not valid JSON",
        ),
    ],
)
def test_input_no_request_can_carry_is_refused_before_it_is_saved(
    anthropic_emulator: AnthropicEmulator, store: Any, bad: Any, problem: str
) -> None:
    """Such input raises a ValueError naming it, nothing is stored or sent, and the thread's
    next turns work (before, it was stored and every later turn failed)."""
    with anthropic_emulator.client() as client:
        agent = _agent(anthropic_emulator, store, client)
        agent.generate("Hello", thread_id="t1")
        with pytest.raises(ValueError, match=problem):
            agent.generate(bad, thread_id="t1")
        assert len(store.load("t1")) == 2
        assert len(anthropic_emulator.message_requests) == 1
        agent.generate("Still there?", thread_id="t1")
        agent.generate(thread_id="t1")
    assert [m["role"] for m in store.recall("t1")] == ["user", "assistant"] * 2 + ["assistant"]


def test_empty_input_to_a_thread_is_a_clear_error(
    anthropic_emulator: AnthropicEmulator, store: Any
) -> None:
    """generate([], thread_id=...) is refused: leave messages out to ask for another reply."""
    with (
        anthropic_emulator.client() as client,
        pytest.raises(ValueError, match="messages is empty"),
    ):
        _agent(anthropic_emulator, store, client).generate([], thread_id="t1")
    assert store.list_threads() == []


async def test_astream_refuses_bad_input_to_a_thread_when_called(
    anthropic_emulator: AnthropicEmulator, store: Any
) -> None:
    """astream(..., thread_id=...) checks the new input and the thread id at the call, as it
    does without a thread, before anything is saved or sent."""
    async with anthropic_emulator.async_client() as client:
        agent = _agent(anthropic_emulator, store, client)
        with pytest.raises(ValueError, match="messages is empty"):
            agent.astream([], thread_id="t1")
        with pytest.raises(ValueError, match="role"):
            agent.astream([{"role": "system", "content": "x"}], thread_id="t1")
        with pytest.raises(ValueError, match="non-blank"):
            agent.astream("hi", thread_id=" ")
    assert store.list_threads() == []
    assert anthropic_emulator.message_requests == []


@pytest.mark.parametrize("driver", ["stream", "astream"])
async def test_a_stream_left_at_message_stop_is_stored_and_has_a_result(
    anthropic_emulator: AnthropicEmulator, store: Any, driver: str
) -> None:
    """A consumer that breaks out of the event loop at message_stop has the whole reply: it is
    stored and .result works."""
    if driver == "stream":
        with anthropic_emulator.client() as client:
            with _agent(anthropic_emulator, store, client).stream("hi", thread_id="t1") as stream:
                for event in stream:
                    if event.type == "message_stop":
                        break
            result = stream.result
    else:
        async with anthropic_emulator.async_client() as aclient:
            astream = _agent(anthropic_emulator, store, aclient).astream("hi", thread_id="t1")
            async with astream:
                async for event in astream:
                    if event.type == "message_stop":
                        break
            result = astream.result
    assert result.text == DEFAULT_REPLY_TEXT
    assert store.recall("t1") == [{"role": "user", "content": "hi"}, REPLY]


def test_a_stream_left_before_message_stop_stores_no_reply(
    anthropic_emulator: AnthropicEmulator, store: Any
) -> None:
    """Breaking out at message_delta (the reply not yet complete) stores nothing more."""
    with anthropic_emulator.client() as client:
        with _agent(anthropic_emulator, store, client).stream("hi", thread_id="t1") as stream:
            for event in stream:
                if event.type == "message_delta":
                    break
        with pytest.raises(RuntimeError, match="has not finished"):
            stream.result  # noqa: B018
    assert store.recall("t1") == [{"role": "user", "content": "hi"}]


def test_a_rewrite_that_lost_a_race_is_a_store_error_and_stores_nothing_twice(
    anthropic_emulator: AnthropicEmulator, store: Any
) -> None:
    """If another writer changed the messages a run repaired (here: deleted the thread) before
    the run saved, the run's outcome is not stored over it, and the caller is told."""

    class RepairThenDelete:
        id = "repair-then-delete"

        def process_api_error(
            self, *, error: anthropic.APIError, messages: MessageList, retry_count: int
        ) -> ProcessAPIErrorResult | None:
            messages[0] = {"role": "user", "content": "repaired"}
            store.delete("t1")  # another writer, racing this run
            return ProcessAPIErrorResult(retry=True)

    anthropic_emulator.script(Fault(400))
    with anthropic_emulator.client() as client:
        agent = Agent(MODEL, client=client, store=store, error_processors=[RepairThenDelete()])
        with pytest.raises(StoreError, match="changed while this run repaired"):
            agent.generate("original", thread_id="t1")
    assert store.list_threads() == []


class _RandomEdits:
    """A processor making a scripted list of edits: append, remind, replace, edit in place,
    delete, insert; as an error processor (after a scripted 400) or in before_send."""

    id = "random-edits"

    def __init__(self) -> None:
        self.edits: list[tuple[Any, ...]] = []
        self.in_before_send = False

    def _apply(self, messages: MessageList) -> None:
        for kind, where, text in self.edits:
            size = len(messages)
            if kind == "append":
                messages.append({"role": "user", "content": text})
            elif kind == "remind":
                append_system_reminder(messages, text, "test-reminder")
            elif kind == "replace":
                messages[where % size] = {**messages[where % size], "content": text}
            elif kind == "edit":
                messages[where % size]["content"] = text
            elif kind == "delete" and size > 1:
                del messages[where % size]
            elif kind == "insert":
                messages.insert(where % (size + 1), {"role": "assistant", "content": text})

    def before_send(self, *, messages: MessageList, params: dict[str, Any]) -> None:
        if self.in_before_send:
            self._apply(messages)

    def process_api_error(
        self, *, error: anthropic.APIError, messages: MessageList, retry_count: int
    ) -> ProcessAPIErrorResult | None:
        if retry_count or self.in_before_send:
            return None
        self._apply(messages)
        return ProcessAPIErrorResult(retry=True)


_WORD = st.text(alphabet="abcdefgh", min_size=1, max_size=6)
_EDIT = st.tuples(
    st.sampled_from(["append", "remind", "replace", "edit", "delete", "insert"]),
    st.integers(0, 40),
    _WORD,
)
_TURN = st.tuples(
    st.none() | _WORD,  # the new input, or none: reply again
    st.sampled_from([None, "error", "before_send"]),  # where the processor edits, if at all
    st.lists(_EDIT, max_size=4),
)


@pytest.fixture(scope="module")
def thread_emulator() -> Iterator[AnthropicEmulator]:
    """One emulator for all of the property test's examples (each resets it)."""
    with AnthropicEmulator() as emulator:
        yield emulator


@pytest.mark.parametrize("kind", STORE_KINDS)
@settings(max_examples=40, deadline=None)
@given(turns=st.lists(_TURN, min_size=1, max_size=4))
def test_a_thread_stores_exactly_what_each_successful_request_sent_plus_the_reply(
    thread_emulator: AnthropicEmulator,
    tmp_path_factory: pytest.TempPathFactory,
    kind: str,
    turns: list[tuple[Any, ...]],
) -> None:
    """Property: whatever processors append, replace, edit or delete, after every run the
    stored thread is the history the successful request sent plus the reply (raw: the
    run's own messages, hidden metadata included), each message once, in order."""
    thread_emulator.reset()
    editor = _RandomEdits()
    with (
        open_store(kind, tmp_path_factory.mktemp("threads")) as store,
        thread_emulator.client() as client,
    ):
        agent = Agent(HAIKU, client=client, store=store, error_processors=[editor])
        for number, (text, where, edits) in enumerate(turns):
            editor.edits = edits
            editor.in_before_send = where == "before_send"
            if where == "error":
                thread_emulator.script(Fault(400))
            result = agent.generate(text if number else (text or "start"), thread_id="t")
            stored = store.load("t")
            assert stored.to_api() == _sent_then_reply(thread_emulator)
            assert list(stored) == list(result.messages)


def lookup(n: int) -> str:
    """Look up an entry.

    Args:
        n: the entry's number
    """
    return f"entry {n}"


class _RandomAppends:
    """Appends messages or reminders in the steps it is told to: before sending, or as the
    repair of a 400 (then asks for a retry). Appends only, so tool calls stay answered."""

    id = "random-appends"

    def __init__(self) -> None:
        self.edits: list[tuple[str, str]] = []
        self.at_steps: set[int] = set()
        self.in_before_send = False

    def _apply(self, messages: MessageList) -> None:
        for kind, text in self.edits:
            if kind == "append":
                messages.append({"role": "user", "content": text})
            else:
                append_system_reminder(messages, text, "test-reminder")

    def before_send(self, *, messages: MessageList, params: dict[str, Any], step: int) -> None:
        if self.in_before_send and step in self.at_steps:
            self._apply(messages)

    def process_api_error(
        self, *, error: anthropic.APIError, messages: MessageList, retry_count: int, step: int
    ) -> ProcessAPIErrorResult | None:
        if retry_count or self.in_before_send or step not in self.at_steps:
            return None
        self._apply(messages)
        return ProcessAPIErrorResult(retry=True)


_STEP_TURN = st.tuples(
    st.none() | _WORD,  # the new input, or none: reply again
    st.integers(0, 2),  # tool calls before the answer: the run's steps are this plus one
    st.sampled_from([None, "error", "before_send"]),  # where the processor appends, if at all
    st.sets(st.integers(0, 2)),  # in which steps
    st.lists(st.tuples(st.sampled_from(["append", "remind"]), _WORD), max_size=3),
)


@pytest.mark.parametrize("kind", STORE_KINDS)
@settings(max_examples=40, deadline=None)
@given(turns=st.lists(_STEP_TURN, min_size=1, max_size=3))
def test_a_thread_of_multi_step_runs_holds_each_message_once(
    thread_emulator: AnthropicEmulator,
    tmp_path_factory: pytest.TempPathFactory,
    kind: str,
    turns: list[tuple[Any, ...]],
) -> None:
    """Property: runs of up to three steps (tool calls answered by the Agent), with a
    processor appending at random steps before sending or after a 400: after every run the
    stored thread is the run's conversation, and the last request sent plus the reply; no
    tool_use id is stored twice, and every tool call is answered in the next message."""
    thread_emulator.reset()
    appender = _RandomAppends()
    with (
        open_store(kind, tmp_path_factory.mktemp("threads")) as store,
        thread_emulator.client() as client,
    ):
        agent = Agent(
            HAIKU, client=client, store=store, tools=[lookup], error_processors=[appender]
        )
        for number, (text, tool_calls, where, steps, edits) in enumerate(turns):
            appender.edits, appender.at_steps = edits, steps
            appender.in_before_send = where == "before_send"
            thread_emulator.reply_with(
                *[
                    [tool_use("lookup", {"n": i}, id=f"toolu_{number}_{i}")]
                    for i in range(tool_calls)
                ]
            )
            if where == "error" and 0 in steps:
                thread_emulator.script(Fault(400))
            result = agent.generate(text if number else (text or "start"), thread_id="t")
            assert len(result.steps) == tool_calls + 1
            stored = store.load("t")
            assert list(stored) == list(result.messages)
            assert stored.to_api() == _sent_then_reply(thread_emulator)
        api: list[Any] = list(store.load("t").to_api())
    uses = [
        (index, block["id"])
        for index, message in enumerate(api)
        if isinstance(message["content"], list)
        for block in message["content"]
        if block["type"] == "tool_use"
    ]
    assert len({tool_id for _, tool_id in uses}) == len(uses)
    for index, tool_id in uses:
        answer = api[index + 1]["content"]
        assert [b["tool_use_id"] for b in answer if b["type"] == "tool_result"] == [tool_id]
