"""5. Long conversations: the cost of building one request from 10, 1,000 and 10,000 messages."""

from __future__ import annotations

import copy
import gc
import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from prefill_guard import Agent, ErrorProcessorMiddleware, MessageList, default_processors
from prefill_guard.testing import PREFILL_MESSAGE, make_api_error

from .common import MODEL, Config, Section, cpu_per_call, interleave, median, prepared_step
from .overhead import RequestRecorder, in_memory_client

__all__ = ["SIZES", "long_conversation", "run"]

SIZES = (10, 1_000, 10_000)
LINEAR_TARGET = 1.5
"""Per message, 10,000 messages may cost at most 1.5 times what 1,000 do, times the growth of
``json.dumps`` on the same messages when that is above 1 (quadratic growth would be 10 times).
Not 1.0: 10,000 messages no longer fit in the CPU's caches, which slows even ``json.dumps``, a
C loop that is linear by construction, by up to 1.6 times per message on the reference VM."""
REFERENCE = "reference: json.dumps of the body"


def long_conversation(size: int) -> list[dict[str, Any]]:
    """``size`` messages, alternating and ending with a user turn; every fifth assistant turn
    calls a tool, and the user turn after it carries the result."""
    messages: list[dict[str, Any]] = []
    pending: str | None = None
    for number in range(size):
        content: Any
        if (size - 1 - number) % 2 == 0:  # user
            content = f"Question {number}: what should a careful agent do next, and why?"
            if pending is not None:
                content = [
                    {"type": "tool_result", "tool_use_id": pending, "content": "18 C, sunny"},
                    {"type": "text", "text": content},
                ]
                pending = None
            messages.append({"role": "user", "content": content})
        elif number % 10 in (4, 5):  # every fifth assistant turn
            pending = f"toolu_{number:06d}"
            content = [
                {"type": "text", "text": "Let me look that up."},
                {
                    "type": "tool_use",
                    "id": pending,
                    "name": "get_weather",
                    "input": {"city": "Paris", "units": "metric"},
                },
            ]
            messages.append({"role": "assistant", "content": content})
        else:
            content = f"Answer {number}: it checks its inputs, then acts, then reports back."
            messages.append({"role": "assistant", "content": content})
    return messages


def _paths(size: int) -> dict[str, Callable[[], object]]:
    messages = long_conversation(size)
    in_place = MessageList(messages)
    agent = Agent(MODEL, client=in_memory_client(), error_processors=default_processors())

    def first_request(conversation: list[dict[str, Any]] | MessageList) -> object:
        return prepared_step(agent, conversation).request()

    def from_list() -> object:
        return first_request(messages)

    def from_message_list() -> object:
        return first_request(in_place)

    recorder = RequestRecorder()
    client = in_memory_client().with_middleware(recorder)
    client.messages.create(model=MODEL, max_tokens=64, messages=messages)  # type: ignore[arg-type]
    request = recorder.request
    assert request is not None
    middleware = ErrorProcessorMiddleware()
    success = SimpleNamespace(http_response=SimpleNamespace(status_code=200))
    body = {"model": MODEL, "max_tokens": 64, "messages": messages}

    def through_middleware() -> object:
        return middleware.handle(request, lambda sent: success)

    def json_encoding() -> object:
        return json.dumps(body)

    # The error path: a prefill 400 goes through every processor of the default stack (the
    # conversation is saved once, and put back after each that passes if it changed it).
    ends_with_assistant = [*messages, {"role": "assistant", "content": "And then?"}]
    rejection = make_api_error(400, PREFILL_MESSAGE)

    def repair() -> object:
        step = prepared_step(agent, ends_with_assistant)
        if step.failed(rejection) is None:
            raise AssertionError("the prefill rejection was not repaired")
        return step.request()

    return {
        "Agent, list of dicts (copied)": from_list,
        "Agent, MessageList (in place)": from_message_list,
        "guarded client (middleware)": through_middleware,
        "Agent, a repair (a 400 through all processors)": repair,
        REFERENCE: json_encoding,
        "reference: copy.deepcopy of the messages (stdlib)": lambda: copy.deepcopy(messages),
    }


def _calibrated(call: Callable[[], object], seconds: float) -> int:
    """How many calls take about ``seconds``."""
    once = cpu_per_call(call, 1)
    return max(1, min(100_000, round(seconds / max(once, 1e-7))))


def _sample(entry: tuple[Callable[[], object], int, bool]) -> float:
    """CPU per call over a sample; ``paused``: with the cyclic garbage collector paused."""
    call, iterations, paused = entry
    gc.collect()  # every sample starts from the same collector state
    if not paused:
        return cpu_per_call(call, iterations)
    gc.disable()
    try:
        return cpu_per_call(call, iterations)
    finally:
        gc.enable()


def run(config: Config) -> Section:
    section = Section("long", "5. Long conversations: library CPU to build one request")
    repeats = config.pick(5, 2)
    sample_seconds = config.pick(100, 15) / 1000
    costs: dict[tuple[str, bool], dict[int, float]] = {}
    for size in SIZES:
        paths = _paths(size)
        calls = {
            (name, paused): (call, _calibrated(call, sample_seconds), paused)
            for name, call in paths.items()
            for paused in (False, True)
        }
        samples = interleave(calls, repeats, seed=config.seed, measure=_sample)
        for key, values in samples.items():
            costs.setdefault(key, {})[size] = median(values)
    names = list(dict.fromkeys(name for name, _ in costs))

    def growth(by_size: dict[int, float]) -> float:
        return (by_size[SIZES[2]] / SIZES[2]) / (by_size[SIZES[1]] / SIZES[1])

    allowed = LINEAR_TARGET * max(1.0, growth(costs[(REFERENCE, True)]))
    for name in names:
        collected, paused = costs[(name, False)], costs[(name, True)]

        # The library's own work must grow linearly: judged with the collector paused, as
        # CPython's collector costs any code that keeps 30,000 new objects alive about the
        # same (the stdlib reference shows it). A repair and the references are for scale.
        reference = name.startswith("reference") or "repair" in name
        section.add(
            name,
            collected[SIZES[2]] * 1e3,
            "ms at 10,000",
            target=None if reference else f"linear (<= {allowed:.2f}x)",
            met=None if reference else growth(paused) <= allowed,
            detail=", ".join(
                f"{size:,}: {collected[size] * 1e6:,.0f} µs "
                f"({collected[size] / size * 1e6:.2f} µs/msg)"
                for size in SIZES
            )
            + f"; per message, 10,000 vs 1,000: {growth(paused):.2f}x with the collector "
            f"paused, {growth(collected):.2f}x with it running",
        )
    section.data = {
        "sizes": list(SIZES),
        "median_us": {
            name: {str(size): round(s * 1e6, 1) for size, s in costs[(name, False)].items()}
            for name in names
        },
        "median_us_collector_paused": {
            name: {str(size): round(s * 1e6, 1) for size, s in costs[(name, True)].items()}
            for name in names
        },
    }
    return section
