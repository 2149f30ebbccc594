"""6. A 5-step tool loop: the Agent, a loop written by hand over the raw SDK, the SDK's runner."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

import anthropic
from anthropic.types import Message, MessageParam, ToolResultBlockParam

from prefill_guard import Agent
from prefill_guard.testing import AnthropicEmulator

from .common import (
    MODEL,
    Config,
    RequestCounter,
    Section,
    emulator_process,
    interleave,
    median,
    percentile,
    ratio_interval,
)
from .server import TOOL_CALLS, reply_text, tool_loop_reply

__all__ = ["run"]

ASK = "Look up four entries, then answer."
QUESTION: list[MessageParam] = [{"role": "user", "content": ASK}]
MAX_TOKENS = 64
STEPS = TOOL_CALLS + 1
"""Model calls per loop: one per tool call, and the reply after the last."""
LATENCY_TARGET = 1.03


def lookup(n: int) -> str:
    """Look up an entry.

    Args:
        n: the entry's number
    """
    return f"entry {n}"


LOOKUP = anthropic.beta_tool(lookup)


def _text(message: Any) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def _hand_written(client: anthropic.Anthropic) -> Callable[[], str]:
    """The loop the SDK's documentation shows: send, run the tool calls, send their results."""
    tools = [LOOKUP.to_dict()]

    def loop() -> str:
        messages = list(QUESTION)
        while True:
            reply: Message = client.messages.create(
                model=MODEL, max_tokens=MAX_TOKENS, messages=messages, tools=tools
            )
            calls = [block for block in reply.content if block.type == "tool_use"]
            if not calls:
                return _text(reply)
            messages.append({"role": "assistant", "content": reply.content})
            results: list[ToolResultBlockParam] = [
                {"type": "tool_result", "tool_use_id": call.id, "content": lookup(**call.input)}  # type: ignore[arg-type]
                for call in calls
            ]
            messages.append({"role": "user", "content": results})

    return loop


def _agent(client: anthropic.Anthropic) -> Callable[[], str]:
    """The Agent with its default processors and the tool as a plain function."""
    agent = Agent(MODEL, client=client, tools=[lookup], max_tokens=MAX_TOKENS)

    def loop() -> str:
        result = agent.generate(QUESTION)
        if len(result.steps) != STEPS or len(result.tool_calls) != TOOL_CALLS:
            raise AssertionError(f"the Agent ran {len(result.steps)} steps")
        return result.text

    return loop


def _tool_runner(client: anthropic.Anthropic) -> Callable[[], str]:
    """The SDK's own runner (``client.beta.messages.tool_runner``), sending the whole
    conversation each step as the other two do: SDKs that know server-side threads would
    otherwise send only the new turns (``thread=False`` turns that off; the emulator keeps no
    server-side threads)."""
    create = client.beta.messages.tool_runner
    options: dict[str, Any] = (
        {"thread": False} if "thread" in inspect.signature(create).parameters else {}
    )

    def loop() -> str:
        runner = create(
            model=MODEL,
            max_tokens=MAX_TOKENS,
            messages=[{"role": "user", "content": ASK}],
            tools=[LOOKUP],
            **options,
        )
        return _text(runner.until_done())

    return loop


SIDES: dict[str, Callable[[anthropic.Anthropic], Callable[[], str]]] = {
    "hand-written loop": _hand_written,
    "Agent": _agent,
    "SDK tool_runner": _tool_runner,
}


def _in_memory(section: Section, config: Config) -> None:
    """The same loops over the emulator's in-memory transport, in this process: the fastest
    of many loops, so the difference is the Agent's extra work per step, without the
    scheduling noise of two processes sharing the machine (``timeit``'s rule: the minimum)."""
    emulator = AnthropicEmulator(reply=tool_loop_reply(reply_text(8), TOOL_CALLS))
    rounds = config.pick(400, 10)
    with emulator.client(in_memory=True) as client:
        loops = {name: build(client) for name, build in SIDES.items()}
        for loop in loops.values():
            for _ in range(config.pick(20, 2)):
                loop()
        emulator.reset()

        def timed(loop: Callable[[], str]) -> float:
            start = time.perf_counter()
            loop()
            seconds = time.perf_counter() - start
            emulator.reset()
            return seconds

        samples = interleave(loops, rounds, seed=config.seed, measure=timed)
    fastest = {name: min(values) for name, values in samples.items()}
    extra = (fastest["Agent"] - fastest["hand-written loop"]) / STEPS
    section.add(
        "Agent - hand-written, in memory: extra work per step",
        extra * 1e6,
        "µs",
        detail=f"fastest of {rounds} loops each: hand-written "
        f"{fastest['hand-written loop'] * 1e6:,.0f} µs, Agent {fastest['Agent'] * 1e6:,.0f} µs, "
        f"tool_runner {fastest['SDK tool_runner'] * 1e6:,.0f} µs (the emulator's work included)",
    )
    section.data["in_memory_fastest_us"] = {k: round(v * 1e6, 1) for k, v in fastest.items()}


def run(config: Config) -> Section:
    section = Section("tool_loop", f"6. A {STEPS}-step tool loop (sync, {TOOL_CALLS} tool calls)")
    rounds = config.pick(1000, 10)
    warmup = config.pick(20, 2)
    expected = reply_text(8)
    with emulator_process(tool_calls=TOOL_CALLS) as emulator:
        counters = {name: RequestCounter() for name in SIDES}
        clients = {name: counters[name].client(emulator) for name in SIDES}
        loops = {name: build(clients[name]) for name, build in SIDES.items()}
        requests: dict[str, list[int]] = {name: [] for name in SIDES}
        cpu: dict[str, list[float]] = {name: [] for name in SIDES}

        def once(name: str) -> float:
            before = counters[name].requests
            spent = time.process_time()
            start = time.perf_counter()
            text = loops[name]()
            wall = time.perf_counter() - start
            cpu[name].append(time.process_time() - spent)
            requests[name].append(counters[name].requests - before)
            section.check(text == expected, f"{name}: the loop ended with {text!r}")
            return wall

        for name in SIDES:  # warm up: connections, caches, lazy imports
            for _ in range(warmup):
                once(name)
        for counts in requests.values():
            counts.clear()
        for seconds in cpu.values():
            seconds.clear()
        wall = interleave({name: name for name in SIDES}, rounds, seed=config.seed, measure=once)
        served = emulator.message_requests()
        for client in clients.values():
            client.close()
    total = (warmup + rounds) * len(SIDES) * STEPS
    section.check(served == total, f"the emulator saw {served} requests, expected {total}")
    for name, counts in requests.items():
        section.check(
            set(counts) == {STEPS}, f"{name}: requests per loop {sorted(set(counts))}, not {STEPS}"
        )
    medians = {name: median(values) for name, values in wall.items()}
    cpu_medians = {name: median(values) for name, values in cpu.items()}
    for name in SIDES:
        section.add(
            f"{name}: median latency per loop",
            medians[name] * 1e6,
            "µs",
            detail=f"{STEPS} requests per loop; p90 {percentile(wall[name], 0.9) * 1e6:,.0f} µs; "
            f"client CPU {cpu_medians[name] * 1e6:,.0f} µs",
        )
    base = "hand-written loop"
    for name in ("Agent", "SDK tool_runner"):
        ratio = medians[name] / medians[base]
        low, high = ratio_interval(wall[name], wall[base], seed=config.seed)
        target = f"<= {LATENCY_TARGET}" if name == "Agent" else None
        section.add(
            f"{name} / hand-written latency",
            ratio,
            "x",
            target=target,
            met=ratio <= LATENCY_TARGET if target else None,
            detail=f"{(medians[name] - medians[base]) * 1e6:+,.0f} µs at the median "
            f"({(medians[name] - medians[base]) * 1e6 / STEPS:+,.0f} µs per step); "
            f"95% bootstrap interval {low:.3f} to {high:.3f}; "
            f"client CPU {(cpu_medians[name] - cpu_medians[base]) * 1e6:+,.0f} µs",
        )
    section.data.update(
        {
            "loops_per_side": rounds,
            "requests_per_loop": STEPS,
            "median_us": {name: round(value * 1e6, 1) for name, value in medians.items()},
            "p90_us": {name: round(percentile(wall[name], 0.9) * 1e6, 1) for name in wall},
            "client_cpu_median_us": {name: round(v * 1e6, 1) for name, v in cpu_medians.items()},
            "ratio_to_hand_written": {
                name: round(v / medians[base], 4) for name, v in medians.items()
            },
        }
    )
    _in_memory(section, config)
    return section
