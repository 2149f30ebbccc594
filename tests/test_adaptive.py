"""The adaptive prefill guard: the extra round trip is paid at most once per model."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from prefill_guard import (
    AdaptivePrefillHandler,
    Agent,
    MemoryStore,
    MessageList,
    PrefillErrorHandler,
    default_processors,
    guard,
    shared_knowledge,
)
from prefill_guard import knowledge as knowledge_module
from prefill_guard.knowledge import REJECTS_PREFILL, PrefillKnowledge
from prefill_guard.testing import PREFILL_MESSAGE, AnthropicEmulator, Fault

from .conftest import postgres_schema, require

REMINDER_ON_WIRE = {"role": "user", "content": "<system-reminder>continue</system-reminder>"}


def _ends_with_assistant(i: int = 0) -> list[Any]:
    return [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]


@pytest.mark.parametrize(
    "model",
    [
        "claude-opus-4-6",
        "claude-opus-4-6-20260101",
        "claude-sonnet-4-6",
        "claude-opus-4-8",
        "claude-sonnet-5-5",
        "claude-mythos-5-1",
        "anthropic.claude-opus-4-7-v1:0",
        "us.anthropic.claude-sonnet-4-6-v1:0",
        "claude-opus-4-6@20260101",
    ],
)
def test_builtin_families_are_known(model: str) -> None:
    """4.6-and-later families match in plain, dated, Bedrock and Vertex spellings."""
    assert PrefillKnowledge().rejects_prefill(model)


@pytest.mark.parametrize("model", ["claude-haiku-4-5", "claude-sonnet-4-5", "claude-3-5-sonnet"])
def test_models_that_accept_prefill_are_not_listed(model: str) -> None:
    """Haiku 4.5 and older models are left alone."""
    assert not PrefillKnowledge().rejects_prefill(model)


def test_learn_export_and_preload() -> None:
    """Learned names are exported sorted and can start a new process's knowledge."""
    knowledge = PrefillKnowledge(["configured-model"])
    assert knowledge.learn("acme-2") is True
    assert knowledge.learn("acme-2") is False
    assert knowledge.export() == ["acme-2", "configured-model"]
    fresh = PrefillKnowledge()
    fresh.preload(knowledge.export())
    assert fresh.rejects_prefill("acme-2")
    assert not PrefillKnowledge(builtin=False).rejects_prefill("claude-opus-4-6")


def test_preload_rejects_bad_input() -> None:
    """A bare string or a non-name is a clear TypeError, not a set of characters."""
    with pytest.raises(TypeError, match="not a single str"):
        PrefillKnowledge().preload("acme")
    with pytest.raises(TypeError, match=r"models\[1\]: expected a non-empty model name"):
        PrefillKnowledge(["ok", ""])


def test_learning_is_thread_safe() -> None:
    """Many threads learning at once: every name kept, each reported new exactly once."""
    knowledge = PrefillKnowledge()
    news: list[bool] = []
    lock = threading.Lock()

    def learn(i: int) -> None:
        for j in range(200):
            new = knowledge.learn(f"model-{j}")
            with lock:
                news.append(new)

    threads = [threading.Thread(target=learn, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(knowledge.export()) == 200
    assert news.count(True) == 200


def test_before_send_adds_the_reminder_only_when_needed() -> None:
    """Only for a known model and a conversation that ends with an assistant turn."""
    guard_step = AdaptivePrefillHandler()
    ends_with_user = MessageList([{"role": "user", "content": "hi"}])
    guard_step.before_send(messages=ends_with_user, params={"model": "claude-opus-4-6"})
    assert len(ends_with_user) == 1
    accepting = MessageList(_ends_with_assistant())
    guard_step.before_send(messages=accepting, params={"model": "claude-haiku-4-5"})
    assert len(accepting) == 2
    known = MessageList(_ends_with_assistant())
    guard_step.before_send(messages=known, params={"model": "claude-opus-4-6"})
    assert known.to_api()[-1] == REMINDER_ON_WIRE
    assert known[-1]["metadata"] == {
        "systemReminder": {"type": "anthropic-prefill-processor-retry"}
    }


def test_agent_known_model_takes_one_request(anthropic_emulator: AnthropicEmulator) -> None:
    """A built-in no-prefill model: the reminder goes out with the first request."""
    with anthropic_emulator.client() as client:
        agent = Agent(
            "claude-opus-4-6",
            client=client,
            error_processors=[AdaptivePrefillHandler(), PrefillErrorHandler()],
        )
        result = agent.generate(_ends_with_assistant())
    assert len(anthropic_emulator.message_requests) == 1
    assert anthropic_emulator.message_requests[0].body["messages"][-1] == REMINDER_ON_WIRE
    assert result.messages.to_ui()[-1]["role"] == "assistant"


def test_agent_unknown_model_two_requests_first_then_one(anthropic_emulator_acme: Any) -> None:
    """A model the built-in list does not know: 2 requests the first time, then 1 each."""
    emulator: AnthropicEmulator = anthropic_emulator_acme
    with emulator.client() as client:
        agent = Agent(
            "acme-1",
            client=client,
            error_processors=[AdaptivePrefillHandler(), PrefillErrorHandler()],
        )
        counts = []
        for i in range(4):
            before = len(emulator.message_requests)
            agent.generate(_ends_with_assistant(i))
            counts.append(len(emulator.message_requests) - before)
    assert counts == [2, 1, 1, 1]


async def test_middleware_unknown_model_two_requests_first_then_one(
    anthropic_emulator_acme: Any,
) -> None:
    """The same through guard(), with one shared guard learning across requests."""
    emulator: AnthropicEmulator = anthropic_emulator_acme
    async with emulator.async_client() as client:
        guarded = guard(client, [AdaptivePrefillHandler(), PrefillErrorHandler()])
        counts = []
        for i in range(3):
            before = len(emulator.message_requests)
            await guarded.messages.create(
                model="acme-1", max_tokens=16, messages=_ends_with_assistant(i)
            )
            counts.append(len(emulator.message_requests) - before)
    assert counts == [2, 1, 1]


def test_prefill_accepting_model_is_never_changed(anthropic_emulator: AnthropicEmulator) -> None:
    """Haiku 4.5 continues the prefill: one request, sent exactly as given."""
    with anthropic_emulator.client() as client:
        agent = Agent(
            "claude-haiku-4-5",
            client=client,
            error_processors=[AdaptivePrefillHandler(), PrefillErrorHandler()],
        )
        agent.generate(_ends_with_assistant())
    assert [r.body["messages"] for r in anthropic_emulator.message_requests] == [
        _ends_with_assistant()
    ]


def test_a_wrong_entry_costs_one_reminder_never_a_failure(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """Listing a model that accepts prefill only adds the harmless reminder."""
    knowledge = PrefillKnowledge(["claude-haiku-4-5"])
    with anthropic_emulator.client() as client:
        agent = Agent(
            "claude-haiku-4-5",
            client=client,
            error_processors=[AdaptivePrefillHandler(knowledge), PrefillErrorHandler()],
        )
        result = agent.generate(_ends_with_assistant())
    assert len(anthropic_emulator.message_requests) == 1
    assert anthropic_emulator.message_requests[0].body["messages"][-1] == REMINDER_ON_WIRE
    assert result.text


def test_exported_knowledge_saves_the_first_round_trip(anthropic_emulator_acme: Any) -> None:
    """Knowledge exported by one guard and preloaded into another: 1 request from the start."""
    emulator: AnthropicEmulator = anthropic_emulator_acme
    first = AdaptivePrefillHandler()
    with emulator.client() as client:
        Agent("acme-1", client=client, error_processors=[first, PrefillErrorHandler()]).generate(
            _ends_with_assistant()
        )
        emulator.reset()
        second = AdaptivePrefillHandler(PrefillKnowledge(first.knowledge.export()))
        Agent("acme-1", client=client, error_processors=[second, PrefillErrorHandler()]).generate(
            _ends_with_assistant()
        )
    assert len(emulator.message_requests) == 1


@pytest.fixture
def anthropic_emulator_acme() -> Any:
    """An emulator on which only the made-up model 'acme-1' rejects prefill."""
    with AnthropicEmulator(no_prefill_models=["acme-1"]) as emulator:
        yield emulator


def test_what_one_guard_learns_every_guard_of_the_process_knows(
    anthropic_emulator_acme: Any,
) -> None:
    """Three clients, each guarded on its own, and an Agent: a model outside the table costs
    one failed request in the whole process, not one per client (5 requests, not 8)."""
    emulator: AnthropicEmulator = anthropic_emulator_acme
    with emulator.client() as client:
        for i in range(3):
            guard(client).messages.create(
                model="acme-1", max_tokens=16, messages=_ends_with_assistant(i)
            )
        Agent("acme-1", client=client, error_processors=default_processors()).generate(
            _ends_with_assistant(3)
        )
    assert len(emulator.message_requests) == 5
    assert shared_knowledge().export() == ["acme-1"]


def test_an_explicit_knowledge_object_is_still_its_own(anthropic_emulator_acme: Any) -> None:
    """A guard given its own PrefillKnowledge learns there, and the process does not."""
    emulator: AnthropicEmulator = anthropic_emulator_acme
    own = PrefillKnowledge()
    with emulator.client() as client:
        guarded = guard(client, [AdaptivePrefillHandler(own), PrefillErrorHandler()])
        guarded.messages.create(model="acme-1", max_tokens=16, messages=_ends_with_assistant())
    assert own.export() == ["acme-1"]
    assert shared_knowledge().export() == []


_TOKEN = {"fallback_credit_token": "fct_abc"}
_THREAD = {"thread": {"type": "continue", "previous_message_id": "msg_01"}}
_COMPACTION = [{"role": "assistant", "content": [{"type": "compaction", "content": "so far"}]}]


@pytest.mark.parametrize(
    ("messages", "extra"),
    [
        (_ends_with_assistant(), _TOKEN),
        (_ends_with_assistant(), _THREAD),
        (_COMPACTION, {}),
    ],
    ids=["fallback-credit-token", "server-thread", "compaction"],
)
def test_a_server_state_continuation_goes_out_as_built(
    anthropic_emulator: AnthropicEmulator, messages: list[Any], extra: dict[str, Any]
) -> None:
    """A request the API authorises to end with an assistant turn is sent exactly as the
    caller built it, also for a model known to reject prefill (before, the reminder was
    added and one message too many went out)."""
    with anthropic_emulator.client() as client:
        guard(client).beta.messages.create(
            model="claude-opus-4-8", max_tokens=16, messages=messages, extra_body=extra
        )
    (sent,) = anthropic_emulator.message_requests
    assert sent.body["messages"] == messages
    assert {key: sent.body[key] for key in extra} == extra


def test_a_real_rejection_of_a_continuation_is_still_repaired(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """The proactive half leaves the request alone; if the API rejects it anyway, the
    reactive handler still repairs it."""
    anthropic_emulator.script(
        Fault(
            400,
            {
                "type": "error",
                "error": {"type": "invalid_request_error", "message": PREFILL_MESSAGE},
            },
        )
    )
    with anthropic_emulator.client() as client:
        guard(client).beta.messages.create(
            model="claude-opus-4-8",
            max_tokens=16,
            messages=_ends_with_assistant(),
            extra_body=_TOKEN,
        )
    first, second = (r.body["messages"] for r in anthropic_emulator.message_requests)
    assert first == _ends_with_assistant()
    assert second == [*_ends_with_assistant(), REMINDER_ON_WIRE]


def test_the_agent_leaves_a_continuation_alone_too(anthropic_emulator: AnthropicEmulator) -> None:
    """Through the Agent (fields the SDK does not know go in extra_body): one request, as built."""
    with anthropic_emulator.client() as client:
        agent = Agent("claude-opus-4-8", client=client, extra_body=_THREAD)
        agent.generate(_ends_with_assistant())
    assert [r.body["messages"] for r in anthropic_emulator.message_requests] == [
        _ends_with_assistant()
    ]


# -- knowledge shared through a store ----------------------------------------------------------


@pytest.fixture
def database() -> Iterator[str]:
    """A connection string to a PostgreSQL database of this test's own."""
    with postgres_schema() as conninfo:
        yield conninfo


@pytest.fixture
def knowledge_store(database: str) -> Iterator[Any]:
    """A PostgresStore on that database (what a deployment's processes share)."""
    with require("prefill_guard.postgres").PostgresStore(database) as store:
        yield store


def test_a_model_learned_by_one_process_is_known_to_another_sharing_the_store(
    database: str, knowledge_store: Any, anthropic_emulator_acme: Any
) -> None:
    """Two processes' knowledge (two objects on two connections to one database): the model
    the first learns from a rejection costs the second no failed request, although the second
    started sharing before the first learned it."""
    emulator: AnthropicEmulator = anthropic_emulator_acme
    first, second = PrefillKnowledge(), PrefillKnowledge()
    with require("prefill_guard.postgres").PostgresStore(database) as other, emulator.client() as c:
        first.share(knowledge_store)
        second.share(other)

        def requests_for_one_conversation(knowledge: PrefillKnowledge) -> int:
            before = len(emulator.message_requests)
            Agent(
                "acme-1",
                client=c,
                error_processors=[AdaptivePrefillHandler(knowledge), PrefillErrorHandler()],
            ).generate(_ends_with_assistant())
            return len(emulator.message_requests) - before

        assert requests_for_one_conversation(first) == 2
        assert requests_for_one_conversation(second) == 1
    assert second.export() == ["acme-1"]
    assert knowledge_store.known(REJECTS_PREFILL) == ["acme-1"]


def test_sharing_reads_what_the_store_already_knows(knowledge_store: Any) -> None:
    knowledge_store.remember(REJECTS_PREFILL, "acme-1")
    knowledge = PrefillKnowledge()
    knowledge.share(knowledge_store)
    assert knowledge.export() == ["acme-1"]


def test_a_store_error_is_logged_and_the_knowledge_goes_on(
    knowledge_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    knowledge = PrefillKnowledge()
    knowledge.share(knowledge_store)
    knowledge_store.close()
    with caplog.at_level(logging.WARNING, logger="prefill_guard"):
        assert knowledge.learn("acme-1") is True
        assert knowledge.rejects_prefill("acme-1")
        assert not knowledge.rejects_prefill("acme-2")
    messages = [record.getMessage() for record in caplog.records]
    assert any("could not store that model 'acme-1' rejects prefill" in m for m in messages)
    assert any("could not read the models known to reject prefill" in m for m in messages)


def test_share_none_or_clear_stops_sharing(knowledge_store: Any) -> None:
    knowledge = PrefillKnowledge()
    knowledge.share(knowledge_store)
    knowledge.share(None)
    knowledge.learn("acme-1")
    knowledge.share(knowledge_store)
    knowledge.clear()
    knowledge.learn("acme-2")
    assert knowledge_store.known(REJECTS_PREFILL) == []


def test_share_refuses_what_is_not_a_knowledge_store() -> None:
    with pytest.raises(TypeError, match="store must be a KnowledgeStore"):
        PrefillKnowledge().share(MemoryStore())  # type: ignore[arg-type]


class CountingKnowledgeStore:
    """A KnowledgeStore in memory that counts its reads and can be made to fail."""

    def __init__(self) -> None:
        self.facts: set[tuple[str, str]] = set()
        self.reads = 0
        self.failing = False

    def known(self, fact: str) -> list[str]:
        self.reads += 1
        if self.failing:
            raise OSError("the database is unreachable")
        return sorted(subject for f, subject in self.facts if f == fact)

    def remember(self, fact: str, subject: str) -> None:
        self.facts.add((fact, subject))


def test_a_model_the_store_does_not_know_is_looked_up_once_per_recheck_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Requests ending with an assistant turn to a model that accepts prefill do not read the
    store each time: once, then again only after RECHECK_SECONDS."""
    store = CountingKnowledgeStore()
    knowledge = PrefillKnowledge()
    knowledge.share(store)
    assert store.reads == 1  # sharing reads what the store holds
    for _ in range(5):
        assert not knowledge.rejects_prefill("acme-accepts")
    assert store.reads == 2
    monkeypatch.setattr(knowledge_module, "RECHECK_SECONDS", 0.0)
    store.remember(REJECTS_PREFILL, "acme-accepts")  # another process learned it meanwhile
    assert knowledge.rejects_prefill("acme-accepts")
    assert store.reads == 3


def test_after_a_store_error_the_store_is_left_alone_for_the_backoff() -> None:
    store = CountingKnowledgeStore()
    knowledge = PrefillKnowledge()
    knowledge.share(store)
    store.failing = True
    assert not knowledge.rejects_prefill("acme-1")
    assert not knowledge.rejects_prefill("acme-2")
    assert store.reads == 2  # the share() read and the failed one; acme-2 waits out the backoff
