"""4. Scale: 1,000 concurrent async conversations through one Agent vs the raw async SDK."""

from __future__ import annotations

import asyncio
import gc
import random
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx2

from prefill_guard import Agent, RunResult, default_processors
from prefill_guard.messages import is_system_reminder

from .common import (
    CONVERSATION_HEADER,
    MODEL,
    Config,
    EmulatorProcess,
    Section,
    emulator_process,
    median,
)
from .server import reply_text

__all__ = ["run"]

THROUGHPUT_TARGET = 0.9
CONNECTIONS = 100
"""The HTTP connection pool both sides share their conversations over (see run())."""
REMINDER: dict[str, Any] = {
    "role": "user",
    "content": "<system-reminder>continue</system-reminder>",
}
"""What the adaptive guard appends (without its metadata, which never goes on the wire)."""


@dataclass(frozen=True)
class Conversation:
    number: int
    messages: list[dict[str, Any]]
    ends_with_assistant: bool  # 10%: the guard must add the reminder
    overloaded_first: bool  # 5%: the first request meets a 529

    def name(self, run: str) -> str:
        """The conversation's name in one run (no spaces: the emulator process's commands are
        split on them)."""
        return f"{run}-{self.number}".replace(" ", "-")

    def headers(self, run: str) -> dict[str, str]:
        return {CONVERSATION_HEADER: self.name(run)}

    def repaired(self) -> list[dict[str, Any]]:
        """The request the raw SDK sends: already repaired, as the guard would repair it."""
        return [*self.messages, REMINDER] if self.ends_with_assistant else self.messages


def conversations(count: int) -> list[Conversation]:
    result = []
    for number in range(count):
        ends_with_assistant = number % 10 == 0
        messages: list[dict[str, Any]] = [
            {"role": "user", "content": f"Conversation {number}: suggest a name for a cat."},
            {"role": "assistant", "content": "How about Ash?"},
        ]
        if not ends_with_assistant:
            messages.append({"role": "user", "content": "Something longer, please."})
        result.append(Conversation(number, messages, ends_with_assistant, number % 20 == 5))
    return result


Side = Callable[[list[Conversation], str], Awaitable[list[Any]]]


def _sides(
    client: anthropic.AsyncAnthropic,
) -> dict[str, Side]:
    agent = Agent(MODEL, client=client, error_processors=default_processors())

    async def through_agent(batch: list[Conversation], run: str) -> list[Any]:
        return await asyncio.gather(
            *(
                agent.agenerate(c.messages, extra_headers=c.headers(run), max_tokens=64)
                for c in batch
            ),
            return_exceptions=True,
        )

    async def raw(batch: list[Conversation], run: str) -> list[Any]:
        # The SDK's own retries (max_retries=2, the default) handle the 529s.
        return await asyncio.gather(
            *(
                client.messages.create(
                    model=MODEL,
                    max_tokens=64,
                    messages=c.repaired(),  # type: ignore[arg-type]
                    extra_headers=c.headers(run),
                )
                for c in batch
            ),
            return_exceptions=True,
        )

    return {"raw SDK": raw, "Agent": through_agent}


def _lost(name: str, batch: list[Conversation], results: list[Any], reply: str) -> list[str]:
    """What went wrong, conversation by conversation (nothing, if nothing is lost)."""
    problems = []
    for conversation, result in zip(batch, results, strict=True):
        if isinstance(result, BaseException):
            problems.append(f"conversation {conversation.number}: {result!r}")
            continue
        if name == "raw SDK":
            text = "".join(b.text for b in result.content if b.type == "text")
            if text != reply:
                problems.append(f"conversation {conversation.number}: reply {text!r}")
            continue
        assert isinstance(result, RunResult)
        expected = len(conversation.messages) + conversation.ends_with_assistant + 1
        attempts = 2 if conversation.overloaded_first else 1
        if (
            result.text != reply
            or len(result.messages) != expected
            or is_system_reminder(result.messages[-2]) != conversation.ends_with_assistant
            or len(result.attempts) != attempts
        ):
            problems.append(f"conversation {conversation.number}: {result.attempts}")
    return problems


async def _measure(
    emulator: EmulatorProcess, section: Section, config: Config, batch: list[Conversation]
) -> None:
    rounds = config.pick(21, 1)
    reply = reply_text(8)
    expected_requests = len(batch) + sum(c.overloaded_first for c in batch)
    rng = random.Random(config.seed)
    throughput: dict[str, list[float]] = {}
    lost: dict[str, int] = {}
    requests: dict[str, list[int]] = {}
    cpu_per_conversation: dict[str, list[float]] = {}
    peaks: dict[str, float] = {}
    limits = httpx2.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    http_client = anthropic.DefaultAsyncHttpxClient(limits=limits)
    async with emulator.async_client(http_client=http_client) as client:
        sides = _sides(client)

        def script_529s(conversations: list[Conversation], run: str) -> None:
            """The first request of each conversation that meets a 529 gets it (untimed)."""
            emulator.fault_first_requests(
                529, [c.name(run) for c in conversations if c.overloaded_first]
            )

        for name, side in sides.items():  # warm up: open the connections
            warm_up = batch[: config.pick(200, 20)]
            script_529s(warm_up, f"warm-{name}")
            await side(warm_up, f"warm-{name}")
        emulator.reset()
        # What exists now (modules, clients) never becomes garbage: keep the collector from
        # walking it again and again, the largest source of run-to-run noise here.
        gc.collect()
        gc.freeze()
        order = list(sides)
        for number in range(rounds):
            rng.shuffle(order)
            for name in order:
                script_529s(batch, f"{name}-{number}")
                cpu = time.process_time()
                start = time.perf_counter()
                results = await sides[name](batch, f"{name}-{number}")
                elapsed = time.perf_counter() - start
                cpu_used = time.process_time() - cpu
                throughput.setdefault(name, []).append(len(batch) / elapsed)
                cpu_per_conversation.setdefault(name, []).append(cpu_used / len(batch))
                problems = _lost(name, batch, results, reply)
                section.check(not problems, f"{name}: {len(problems)} lost: {problems[:3]}")
                lost[name] = lost.get(name, 0) + len(problems)
                served = emulator.message_requests()
                emulator.reset()
                requests.setdefault(name, []).append(served)
                section.check(
                    served == expected_requests,
                    f"{name}: the emulator served {served} requests, expected {expected_requests}",
                )
        for name in order:  # one more, untimed, run per side for the peak of traced memory
            script_529s(batch, f"{name}-memory")
            tracemalloc.start()
            tracemalloc.reset_peak()
            await sides[name](batch, f"{name}-memory")
            peaks[name] = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            emulator.reset()
        gc.unfreeze()
    for name in sides:
        completed = rounds * len(batch) - lost[name]
        section.add(
            f"{name}: conversations completed",
            completed,
            f"of {rounds * len(batch):,}",
            target="all",
            met=lost[name] == 0,
            detail=f"requests per run {', '.join(map(str, sorted(set(requests[name]))))} "
            f"(expected {expected_requests:,}: one each, plus one retry per 529)",
        )
    medians = {name: median(values) for name, values in throughput.items()}
    for name in sides:
        section.add(
            f"{name}: conversations completed per second",
            medians[name],
            "/s",
            detail=f"median of {rounds} runs: {', '.join(f'{v:,.0f}' for v in throughput[name])}",
        )
    ratio = medians["Agent"] / medians["raw SDK"]
    paired = [a / r for a, r in zip(throughput["Agent"], throughput["raw SDK"], strict=True)]
    section.add(
        "Agent / raw SDK throughput",
        ratio,
        "x",
        target=f">= {THROUGHPUT_TARGET}",
        met=ratio >= THROUGHPUT_TARGET,
        detail=f"ratio of the medians; run by run {min(paired):.2f} to {max(paired):.2f}, "
        f"median {median(paired):.2f}",
    )
    cpu_medians = {name: median(values) for name, values in cpu_per_conversation.items()}
    for name in sides:
        section.add(
            f"{name}: client CPU per conversation",
            cpu_medians[name] * 1e6,
            "µs",
            detail=f"median of {rounds} runs (process_time / conversations)",
        )
    for name in sides:
        section.add(
            f"{name}: peak traced memory during a run",
            peaks[name],
            "MiB",
            detail="tracemalloc, one extra untimed run",
        )
    section.data.update(
        {
            "conversations": len(batch),
            "ending_with_assistant": sum(c.ends_with_assistant for c in batch),
            "overloaded_first": sum(c.overloaded_first for c in batch),
            "requests_per_run": expected_requests,
            "throughput_per_s": {k: [round(v, 1) for v in vs] for k, vs in throughput.items()},
            "cpu_per_conversation_us": {
                k: [round(v * 1e6, 1) for v in vs] for k, vs in cpu_per_conversation.items()
            },
            "ratio": round(ratio, 4),
            "peak_traced_mib": {k: round(v, 2) for k, v in peaks.items()},
        }
    )


def _max_rss_mib() -> float | None:
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    import sys

    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value / 2**20 if sys.platform == "darwin" else value / 2**10


def run(config: Config) -> Section:
    count = config.pick(1000, 100)
    section = Section(
        "scale",
        f"4. Scale: {count:,} concurrent async conversations "
        "(10% end with an assistant turn, 5% meet a 529 first)",
    )
    batch = conversations(count)
    with emulator_process(retry_after_ms=10) as emulator:
        asyncio.run(_measure(emulator, section, config, batch))
    rss = _max_rss_mib()
    if rss is not None:
        section.add(
            "benchmark process: peak resident memory", rss, "MiB", detail="ru_maxrss, whole run"
        )
        section.data["max_rss_mib"] = round(rss, 1)
    section.notes.append(
        "the 529s carry retry-after-ms: 10, which the Agent and the SDK both honour, so neither "
        "side sleeps its default backoff (0.5 s and more)"
    )
    section.notes.append(
        f"both sides send over one pool of {CONNECTIONS} keep-alive connections; with the SDK's "
        "default pool (up to 1,000 connections) the emulator's listen backlog (128) overflows "
        "and connections fail, and httpx's pool management becomes the client's bottleneck"
    )
    return section
