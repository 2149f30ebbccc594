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

from prefill_guard import (
    Agent,
    MemoryStore,
    MessageList,
    PrefillErrorHandler,
    ProcessAPIErrorResult,
    SQLiteStore,
    is_system_reminder,
)
from prefill_guard.testing import DEFAULT_REPLY_TEXT, AnthropicEmulator, Fault

MODEL = "claude-opus-4-6"
REPLY = {"role": "assistant", "content": [{"type": "text", "text": DEFAULT_REPLY_TEXT}]}


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MemoryStore | SQLiteStore]:
    """Each test runs against both stores."""
    with MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "t.db") as made:
        yield made


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


def test_a_processor_that_trims_history_does_not_lose_stored_messages(
    anthropic_emulator: AnthropicEmulator, store: Any
) -> None:
    """The store is append-only: trimming changes that run's request, not the saved thread."""

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
    assert anthropic_emulator.message_requests[-1].body["messages"][0]["content"] == "a"
    assert [m["content"] for m in store.recall("t1")] == ["old", "a", REPLY["content"]]


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


def test_two_processes_on_one_thread_lose_nothing(tmp_path: Path) -> None:
    """Two real processes, each running 10 turns on the same SQLite thread at once: all 20
    inputs and 20 replies are stored, each reply after its own input."""
    db = tmp_path / "shared.db"

    def echo(body: dict[str, Any]) -> str:
        users = [m for m in body["messages"] if m["role"] == "user"]
        return f"echo {users[-1]['content']}"

    script = textwrap.dedent(
        """
        import sys
        import anthropic
        from prefill_guard import Agent, SQLiteStore
        base_url, db, name = sys.argv[1:]
        with SQLiteStore(db) as store, anthropic.Anthropic(api_key="k", base_url=base_url) as c:
            agent = Agent("claude-haiku-4-5", client=c, store=store)
            for i in range(10):
                agent.generate(f"{name}-{i}", thread_id="shared")
        """
    )
    with AnthropicEmulator(reply=echo) as emulator:
        workers = [
            subprocess.Popen([sys.executable, "-c", script, emulator.base_url, str(db), name])
            for name in ("a", "b")
        ]
        assert [w.wait(timeout=120) for w in workers] == [0, 0]
    with SQLiteStore(db) as store:
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
