"""2. Streaming: time to first text and total time, raw SDK stream vs ``agent.stream``."""

from __future__ import annotations

import time
from collections.abc import Callable

import anthropic

from prefill_guard import Agent, default_processors

from .common import MODEL, Config, Section, emulator_process, interleave, median, percentile
from .overhead import CONVERSATION, MAX_TOKENS
from .server import reply_text

__all__ = ["run"]

REPLY_WORDS = 40
"""The reply streams as 40 text deltas."""
OVERHEAD_TARGET_MS = 1.0

Timing = tuple[float, float, str]
"""Time to the first text, total time, and the text received."""


def _sides(client: anthropic.Anthropic) -> dict[str, Callable[[], Timing]]:
    agent = Agent(MODEL, client=client, error_processors=default_processors())

    def raw() -> Timing:
        start = time.perf_counter()
        first = 0.0
        texts: list[str] = []
        with client.messages.stream(
            model=MODEL,
            max_tokens=MAX_TOKENS,
            messages=CONVERSATION,  # type: ignore[arg-type]
        ) as stream:
            for text in stream.text_stream:
                if not texts:
                    first = time.perf_counter()
                texts.append(text)
        return first - start, time.perf_counter() - start, "".join(texts)

    def through_agent() -> Timing:
        start = time.perf_counter()
        first = 0.0
        texts: list[str] = []
        with agent.stream(CONVERSATION, max_tokens=MAX_TOKENS) as stream:
            for text in stream.text_stream:
                if not texts:
                    first = time.perf_counter()
                texts.append(text)
        return first - start, time.perf_counter() - start, "".join(texts)

    return {"raw stream": raw, "agent.stream": through_agent}


def run(config: Config) -> Section:
    section = Section("streaming", "2. Streaming (sync, 40 text deltas per reply)")
    rounds = config.pick(1000, 40)
    expected = reply_text(REPLY_WORDS)
    with emulator_process(reply_words=REPLY_WORDS) as emulator, emulator.sync_client() as client:
        sides = _sides(client)
        for call in sides.values():
            for _ in range(config.pick(50, 5)):
                call()
        samples = interleave(sides, rounds, seed=config.seed, measure=lambda call: call())
    for name, timings in samples.items():
        wrong = sum(1 for _, _, text in timings if text != expected)
        section.check(wrong == 0, f"{name}: {wrong} streams did not deliver the whole reply")
    first = {name: [t[0] for t in timings] for name, timings in samples.items()}
    total = {name: [t[1] for t in timings] for name, timings in samples.items()}
    for name in samples:
        section.add(
            f"{name}: time to first text",
            median(first[name]) * 1e6,
            "µs",
            detail=f"p90 {percentile(first[name], 0.9) * 1e6:,.0f} µs",
        )
        section.add(
            f"{name}: total time",
            median(total[name]) * 1e6,
            "µs",
            detail=f"p90 {percentile(total[name], 0.9) * 1e6:,.0f} µs",
        )
    for label, values in (("time to first text", first), ("total time", total)):
        extra = (median(values["agent.stream"]) - median(values["raw stream"])) * 1e3
        ratio = median(values["agent.stream"]) / median(values["raw stream"])
        section.add(
            f"agent.stream - raw, {label}",
            extra * 1000,
            "µs",
            target=f"< {OVERHEAD_TARGET_MS * 1000:.0f} µs",
            met=extra < OVERHEAD_TARGET_MS,
            detail=f"ratio {ratio:.3f}",
        )
    section.data = {
        "streams_per_side": rounds,
        "reply_deltas": REPLY_WORDS,
        "first_text_median_us": {k: round(median(v) * 1e6, 1) for k, v in first.items()},
        "total_median_us": {k: round(median(v) * 1e6, 1) for k, v in total.items()},
    }
    return section
