"""7. Learned knowledge shared through PostgreSQL: round trips over conversations spread over
four processes, for a model the model table does not know.

Each process runs an Agent with the default processors. With ``shared_knowledge().share(store)``
(a PostgresStore on one database) the deployment pays the model's first rejection once; on
their own, each process pays it. One process runs the very first conversation alone; the four
then run the rest at the same time. Needs a PostgreSQL server (``PREFILL_GUARD_POSTGRES_URL``,
as for the tests); without one the section says it was not measured.
"""

from __future__ import annotations

import importlib
import importlib.util
import multiprocessing
import os
from collections import Counter
from multiprocessing.synchronize import Event
from typing import Any

from prefill_guard import Agent, default_processors, shared_knowledge

from .common import (
    UNKNOWN_MODEL,
    Config,
    EmulatorProcess,
    RequestCounter,
    Section,
    emulator_process,
)
from .round_trips import ENDS_WITH_ASSISTANT
from .server import reply_text

__all__ = ["run"]

PROCESSES = 4


def _worker(
    emulator: EmulatorProcess,
    conninfo: str | None,
    index: int,
    conversations: int,
    first_done: Event,
    results: Any,
) -> None:
    """One process of the deployment: its Agent, its knowledge (shared or not), its counts.
    Forked: ``emulator`` is the parent's, used for its address only."""
    postgres = importlib.import_module("prefill_guard.postgres")
    knowledge = shared_knowledge()
    knowledge.clear()  # forked: start as a new process does
    store = None if conninfo is None else postgres.PostgresStore(conninfo, max_connections=1)
    knowledge.share(store)
    counter = RequestCounter()
    counts: list[int] = []
    try:
        with counter.client(emulator) as client:
            agent = Agent(UNKNOWN_MODEL, client=client, error_processors=default_processors())
            if index:
                first_done.wait(60)
            for number in range(conversations):
                before = counter.requests
                text = agent.generate(ENDS_WITH_ASSISTANT).text
                counts.append(counter.requests - before if text == reply_text(8) else -1)
                if index == 0 and number == 0:
                    first_done.set()
    finally:
        first_done.set()
        knowledge.clear()
        if store is not None:
            store.close()
        results.put((index, counts))


def _deployment(
    emulator: EmulatorProcess, conninfo: str | None, conversations: int
) -> list[list[int]]:
    """The round trips of each conversation, per process (process 0 ran the very first)."""
    context = multiprocessing.get_context("fork")
    first_done, results = context.Event(), context.Queue()
    shares = [
        conversations // PROCESSES + (i < conversations % PROCESSES) for i in range(PROCESSES)
    ]
    processes = [
        context.Process(
            target=_worker, args=(emulator, conninfo, index, share, first_done, results)
        )
        for index, share in enumerate(shares)
    ]
    for process in processes:
        process.start()
    by_process = dict(results.get(timeout=300) for _ in processes)
    for process in processes:
        process.join(60)
    return [by_process[index] for index in range(PROCESSES)]


def run(config: Config) -> Section:
    section = Section("shared_knowledge", "7. Learned knowledge shared by 4 processes")
    conversations = config.pick(1000, 40)
    url = os.environ.get("PREFILL_GUARD_POSTGRES_URL", "")
    if not url or importlib.util.find_spec("psycopg") is None:
        reason = "not measured: no PostgreSQL server (set PREFILL_GUARD_POSTGRES_URL) or psycopg"
        section.notes.append(reason)
        required = os.environ.get("PREFILL_GUARD_REQUIRE_EXTRAS", "").split(",")
        section.check("postgres" not in required, reason)
        return section
    section.data = {"conversations": conversations, "processes": PROCESSES, "scenarios": {}}
    postgres_testing = importlib.import_module("prefill_guard.testing.postgres")
    with (
        emulator_process() as emulator,
        postgres_testing.temporary_schema(url, "bench") as conninfo,
    ):
        scenarios = [
            ("shared through PostgreSQL (share(store))", conninfo, "2 for the very first, then 1"),
            ("each process on its own (no store)", None, "2 for each process's first, then 1"),
        ]
        for name, where, target in scenarios:
            per_process = _deployment(emulator, where, conversations)
            counts = [count for counts in per_process for count in counts]
            section.check(-1 not in counts, f"{name}: a conversation got the wrong reply")
            section.check(
                len(counts) == conversations, f"{name}: {len(counts)} of {conversations} ran"
            )
            firsts = [counts[0] for counts in per_process]
            rest = [count for counts in per_process for count in counts[1:]]
            if where is None:
                met = firsts == [2] * PROCESSES and set(rest) == {1}
            else:
                met = firsts == [2] + [1] * (PROCESSES - 1) and set(rest) == {1}
            section.check(met, f"{name}: first per process {firsts}, then {dict(Counter(rest))}")
            served = emulator.message_requests()
            emulator.reset()
            section.check(served == sum(counts), f"{name}: sent {sum(counts)}, served {served}")
            section.add(
                name,
                sum(counts),
                f"requests for {conversations}",
                target=target,
                met=met,
                detail=f"first conversation of each process: {firsts}; then "
                f"{', '.join(f'{k} x{n}' for k, n in sorted(Counter(rest).items()))}",
            )
            section.data["scenarios"][name] = {"firsts": firsts, "requests": sum(counts)}
    return section
