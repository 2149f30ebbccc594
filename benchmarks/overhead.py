"""1. Happy-path overhead: raw SDK vs Agent vs guarded client, and the library's own CPU time."""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import anthropic
import httpx2
from anthropic import APIRequest
from anthropic.types import Message

from prefill_guard import (
    Agent,
    Attempt,
    ErrorProcessorMiddleware,
    MessageList,
    RunResult,
    default_processors,
    guard,
)
from prefill_guard.messages import check_input
from prefill_guard.run import Run

from .common import (
    MODEL,
    Config,
    Section,
    cpu_per_call,
    emulator_process,
    interleave,
    median,
    percentile,
    prepared_step,
    ratio_interval,
)

__all__ = [
    "CONVERSATION",
    "MAX_TOKENS",
    "RequestRecorder",
    "compared_sides",
    "in_memory_client",
    "run",
]

CONVERSATION: list[dict[str, Any]] = [
    {"role": "user", "content": "Suggest a name for a grey cat."},
    {"role": "assistant", "content": "How about Ash?"},
    {"role": "user", "content": "Something longer, please."},
]
"""A short conversation that ends with a user turn: no processor has anything to do."""
MAX_TOKENS = 64
LATENCY_TARGET = 1.03
CPU_TARGET_US = 50.0

REPLY_BODY: dict[str, Any] = {
    "id": "msg_bench",
    "type": "message",
    "role": "assistant",
    "model": MODEL,
    "content": [{"type": "text", "text": "How about Ashcroft?"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 20, "output_tokens": 4},
}


class _NoOpMiddleware(anthropic.Middleware):
    """Passes every request through: what the SDK's middleware chain itself costs."""

    def handle(self, request: APIRequest, call_next: Callable[[APIRequest], Any]) -> Any:
        return call_next(request)


class RequestRecorder(anthropic.Middleware):
    """Keeps the last request the SDK hands to middleware (to replay it without the SDK)."""

    def __init__(self) -> None:
        self.request: APIRequest | None = None

    def handle(self, request: APIRequest, call_next: Callable[[APIRequest], Any]) -> Any:
        self.request = request
        return call_next(request)


def in_memory_client(**options: Any) -> anthropic.Anthropic:
    """A real SDK client whose transport answers in memory: the SDK's work without a network.
    ``options`` go to its constructor."""
    body = json.dumps(REPLY_BODY).encode()

    def answer(request: httpx2.Request) -> httpx2.Response:
        headers = {"content-type": "application/json", "request-id": "req_bench"}
        return httpx2.Response(200, headers=headers, content=body)

    http_client = httpx2.Client(transport=httpx2.MockTransport(answer))
    return anthropic.Anthropic(
        api_key="bench-key", base_url="http://127.0.0.1:9", http_client=http_client, **options
    )


def compared_sides(client: anthropic.Anthropic) -> dict[str, Callable[[], object]]:
    """The compared sides, each one non-streaming request with the same conversation."""
    agent = Agent(MODEL, client=client, error_processors=default_processors())
    guarded = guard(client)
    no_op = client.with_middleware(_NoOpMiddleware())

    def raw() -> object:
        return client.messages.create(model=MODEL, max_tokens=MAX_TOKENS, messages=CONVERSATION)  # type: ignore[arg-type]

    def through_agent() -> object:
        return agent.generate(CONVERSATION, max_tokens=MAX_TOKENS)

    def through_guard() -> object:
        return guarded.messages.create(model=MODEL, max_tokens=MAX_TOKENS, messages=CONVERSATION)  # type: ignore[arg-type]

    def through_no_op() -> object:
        return no_op.messages.create(model=MODEL, max_tokens=MAX_TOKENS, messages=CONVERSATION)  # type: ignore[arg-type]

    return {"raw": raw, "agent": through_agent, "guarded": through_guard, "no-op mw": through_no_op}


def _timed(call: Callable[[], object]) -> tuple[float, float]:
    cpu = time.process_time()
    start = time.perf_counter()
    call()
    return time.perf_counter() - start, time.process_time() - cpu


def _latency(section: Section, config: Config) -> None:
    """Loopback HTTP against the emulator process: wall time and this process's CPU time."""
    rounds = config.pick(6000, 100)
    with emulator_process() as emulator, emulator.sync_client() as client:
        sides = compared_sides(client)
        for call in sides.values():  # warm up: connections, caches, lazy imports
            for _ in range(config.pick(100, 10)):
                call()
        cpu: dict[str, list[float]] = {name: [] for name in sides}
        names = {call: name for name, call in sides.items()}

        def measure(call: Callable[[], object]) -> float:
            wall, spent = _timed(call)
            cpu[names[call]].append(spent)
            return wall

        wall = interleave(sides, rounds, seed=config.seed, measure=measure)
        served = emulator.message_requests()
    warmup = config.pick(100, 10) * len(sides)
    section.check(
        served == warmup + rounds * len(sides),
        f"the emulator saw {served} requests, expected {warmup + rounds * len(sides)}",
    )
    medians = {name: median(values) for name, values in wall.items()}
    cpu_medians = {name: median(values) for name, values in cpu.items()}
    for name in sides:
        section.add(
            f"{name}: median latency",
            medians[name] * 1e6,
            "µs",
            detail=f"p90 {percentile(wall[name], 0.9) * 1e6:,.0f} µs; "
            f"client CPU {cpu_medians[name] * 1e6:,.0f} µs",
        )
    block = max(1, rounds // 6)  # the same ratio over stretches of the run: how steady it is
    intervals = {}
    for name in ("agent", "guarded"):
        ratio = medians[name] / medians["raw"]
        low, high = intervals[name] = ratio_interval(wall[name], wall["raw"], seed=config.seed)
        by_block = [
            median(wall[name][i : i + block]) / median(wall["raw"][i : i + block])
            for i in range(0, rounds - block + 1, block)
        ]
        section.add(
            f"{name} / raw latency",
            ratio,
            "x",
            target=f"<= {LATENCY_TARGET}",
            met=ratio <= LATENCY_TARGET,
            detail=f"+{(medians[name] - medians['raw']) * 1e6:,.0f} µs at the median; "
            f"95% bootstrap interval {low:.3f} to {high:.3f}; "
            f"client CPU +{(cpu_medians[name] - cpu_medians['raw']) * 1e6:,.0f} µs; "
            f"{min(by_block):.3f} to {max(by_block):.3f} over blocks of {block} rounds",
        )
    section.data["latency"] = {
        "requests_per_side": rounds,
        "median_us": {name: round(value * 1e6, 1) for name, value in medians.items()},
        "p90_us": {name: round(percentile(wall[name], 0.9) * 1e6, 1) for name in wall},
        "client_cpu_median_us": {name: round(v * 1e6, 1) for name, v in cpu_medians.items()},
        "ratio_to_raw": {name: round(medians[name] / medians["raw"], 4) for name in medians},
        "ratio_95_interval": {
            name: [round(low, 4), round(high, 4)] for name, (low, high) in intervals.items()
        },
    }


def _library_calls() -> dict[str, Callable[[], object]]:
    """The library's own work for one successful request, without HTTP and without the SDK."""
    reply = Message.model_validate(REPLY_BODY)
    reply._request_id = "req_bench"  # as the SDK sets it on every reply
    client = in_memory_client()
    agent = Agent(MODEL, client=client, error_processors=default_processors())
    # The SDK client the Agent calls, replaced by one whose raw-response create answers at once
    # with a response that parses to the reply.
    response = SimpleNamespace(parse=lambda: reply)
    answering = SimpleNamespace(
        messages=SimpleNamespace(
            with_raw_response=SimpleNamespace(create=lambda **request: response)
        )
    )
    agent._sync_client = answering  # type: ignore[assignment]

    def agent_request() -> object:
        return agent.generate(CONVERSATION, max_tokens=MAX_TOKENS)

    recorder = RequestRecorder()
    client.with_middleware(recorder).messages.create(
        model=MODEL,
        max_tokens=MAX_TOKENS,
        messages=CONVERSATION,  # type: ignore[arg-type]
    )
    request = recorder.request
    assert request is not None
    middleware = ErrorProcessorMiddleware()
    success = SimpleNamespace(http_response=SimpleNamespace(status_code=200))

    def middleware_request() -> object:
        return middleware.handle(request, lambda sent: success)

    return {"Agent.generate": agent_request, "guarded client (middleware)": middleware_request}


def _library_cpu(section: Section, config: Config) -> None:
    iterations = config.pick(20_000, 2_000)
    repeats = config.pick(7, 3)
    calls = _library_calls()
    for call in calls.values():
        cpu_per_call(call, iterations // 10)  # warm up
    samples = interleave(
        calls, repeats, seed=config.seed, measure=lambda call: cpu_per_call(call, iterations)
    )
    section.data["library_cpu_us"] = {}
    for name, values in samples.items():
        value = median(values) * 1e6
        section.add(
            f"library CPU per request, {name}",
            value,
            "µs",
            target=f"< {CPU_TARGET_US:.0f} µs",
            met=value < CPU_TARGET_US,
            detail=f"median of {repeats} x {iterations:,} calls (process_time)",
        )
        section.data["library_cpu_us"][name] = {
            "median": round(value, 2),
            "runs": [round(v * 1e6, 2) for v in values],
        }
    _stages(section, config)
    section.data["profile"] = {
        name: _profile(call, config.pick(5_000, 500)) for name, call in calls.items()
    }


def _stages(section: Section, config: Config) -> None:
    """Where Agent.generate's library time goes, stage by stage (each timed on its own)."""
    reply = Message.model_validate(REPLY_BODY)
    reply._request_id = "req_bench"
    agent = Agent(MODEL, client=in_memory_client(), error_processors=default_processors())
    conversation = MessageList(CONVERSATION)
    params = {"model": MODEL, "max_tokens": MAX_TOKENS}
    stages: dict[str, Callable[[], object]] = {
        "the run before its first request (all of it)": lambda: prepared_step(
            agent, CONVERSATION
        ).request(),
        "  copy the caller's 3 messages into a MessageList": lambda: MessageList(CONVERSATION),
        "  check the input (check_input)": lambda: check_input(conversation),
        "  make the run and its step (parameters copied, before_send hooks)": lambda: Run(
            agent.pipeline, agent.retry_policy, conversation, params
        ).next_step(),
        "the request's messages (MessageList.to_api)": conversation.to_api,
        "store the reply (its blocks as dicts)": lambda: MessageList().append(reply),
        "Attempt + RunResult records": lambda: (
            Attempt(1, None, "req_bench"),
            RunResult(reply, conversation, (), "end_turn"),
        ),
    }
    iterations = config.pick(50_000, 5_000)
    section.data["stages_us"] = {}
    for name, call in stages.items():
        cpu_per_call(call, iterations // 10)
        value = median([cpu_per_call(call, iterations) for _ in range(config.pick(5, 2))])
        section.add(f"where it goes: {name}", value * 1e6, "µs")
        section.data["stages_us"][name] = round(value * 1e6, 2)


def _profile(call: Callable[[], object], iterations: int) -> list[dict[str, Any]]:
    """Where the time goes: cProfile's own time per function, as shares of the total."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(iterations):
        call()
    profiler.disable()
    stats: Any = pstats.Stats(profiler)
    total = sum(entry[2] for entry in stats.stats.values()) or 1.0
    rows = []
    for (filename, _, function), entry in stats.stats.items():
        module = os.path.basename(filename)
        if "prefill_guard" in filename:
            where = f"prefill_guard/{module}:{function}"
        elif filename == "~":
            where = function
        else:
            package = filename.split("site-packages" + os.sep)[-1].split(os.sep)[0]
            where = (
                f"{package}:{function}" if "site-packages" in filename else f"{module}:{function}"
            )
        rows.append((entry[2], entry[1], where))
    rows.sort(reverse=True)
    return [
        {"function": where, "share": round(own / total, 3), "calls_per_request": calls / iterations}
        for own, calls, where in rows[:12]
    ]


def _in_memory(section: Section, config: Config) -> None:
    """The whole SDK call with an in-memory transport: client CPU per request, side by side."""
    rounds = config.pick(3000, 200)
    sides = compared_sides(in_memory_client())
    for call in sides.values():
        for _ in range(config.pick(200, 20)):
            call()

    def cpu_of(call: Callable[[], object]) -> float:
        return _timed(call)[1]

    samples = interleave(sides, rounds, seed=config.seed, measure=cpu_of)
    medians = {name: median(values) * 1e6 for name, values in samples.items()}
    for name in ("agent", "guarded", "no-op mw"):
        section.add(
            f"SDK call, in-memory transport: {name} - raw CPU",
            medians[name] - medians["raw"],
            "µs",
            detail=f"raw {medians['raw']:,.0f} µs, {name} {medians[name]:,.0f} µs (medians)",
        )
    section.data["in_memory_cpu_median_us"] = {k: round(v, 1) for k, v in medians.items()}


def run(config: Config) -> Section:
    section = Section("overhead", "1. Happy-path overhead (non-streaming)")
    _latency(section, config)
    _library_cpu(section, config)
    _in_memory(section, config)
    return section
