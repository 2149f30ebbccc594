"""3. Round trips per recovered conversation, on models that reject assistant prefill."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import anthropic

from prefill_guard import Agent, PrefillErrorHandler, default_processors, guard, shared_knowledge
from prefill_guard.knowledge import PrefillKnowledge

from .common import (
    MODEL,
    UNKNOWN_MODEL,
    Config,
    EmulatorProcess,
    RequestCounter,
    Section,
    emulator_process,
)
from .server import reply_text

__all__ = ["run"]

ENDS_WITH_ASSISTANT: list[dict[str, Any]] = [
    {"role": "user", "content": "Suggest a name for a grey cat."},
    {"role": "assistant", "content": "How about Ash?"},
]
"""Every conversation here ends with an assistant turn: the request the 4.6 models reject."""


Scenario = tuple[str, str, Callable[[anthropic.Anthropic], Callable[[], str]]]


def _scenarios() -> list[Scenario]:
    def reactive(client: anthropic.Anthropic) -> Callable[[], str]:
        agent = Agent(MODEL, client=client, error_processors=[PrefillErrorHandler()])
        return lambda: agent.generate(ENDS_WITH_ASSISTANT).text

    def adaptive(model: str) -> Callable[[anthropic.Anthropic], Callable[[], str]]:
        def build(client: anthropic.Anthropic) -> Callable[[], str]:
            agent = Agent(model, client=client, error_processors=default_processors())
            return lambda: agent.generate(ENDS_WITH_ASSISTANT).text

        return build

    def guarded(client: anthropic.Anthropic) -> Callable[[], str]:
        guarded_client = guard(client)

        def send() -> str:
            message = guarded_client.messages.create(
                model=UNKNOWN_MODEL,
                max_tokens=64,
                messages=ENDS_WITH_ASSISTANT,  # type: ignore[arg-type]
            )
            return "".join(block.text for block in message.content if block.type == "text")

        return send

    return [
        ("reactive handler alone (PrefillErrorHandler), known model", "2", reactive),
        ("adaptive handler + handler, model the table knows", "1", adaptive(MODEL)),
        (
            "adaptive handler + handler, model the table does not know",
            "2 first, then 1",
            adaptive(UNKNOWN_MODEL),
        ),
        (
            "guarded client (middleware), model the table does not know",
            "2 first, then 1",
            guarded,
        ),
        (
            "a second guarded client in the same process",
            "1",
            guarded,
        ),
    ]


def _expected(target: str, conversations: int) -> list[int]:
    if target == "2 first, then 1":
        return [2] + [1] * (conversations - 1)
    return [int(target)] * conversations


def _unguarded(emulator: EmulatorProcess, conversations: int) -> int:
    """Without prefill_guard, how many of the conversations fail (every one, with a 400)."""
    failed = 0
    with emulator.sync_client(max_retries=0) as client:
        for _ in range(conversations):
            try:
                client.messages.create(
                    model=MODEL,
                    max_tokens=64,
                    messages=ENDS_WITH_ASSISTANT,  # type: ignore[arg-type]
                )
            except anthropic.BadRequestError:
                failed += 1
    return failed


def run(config: Config) -> Section:
    section = Section("round_trips", "3. Round trips per recovered conversation")
    conversations = config.pick(1000, 20)
    section.check(
        not PrefillKnowledge().rejects_prefill(UNKNOWN_MODEL),
        f"the model table knows {UNKNOWN_MODEL!r} now: pick another unknown model",
    )
    reply = reply_text(8)
    section.data = {"conversations": conversations, "scenarios": {}}
    with emulator_process() as emulator:
        failed = _unguarded(emulator, conversations)
        section.check(failed == conversations, f"raw SDK: only {failed} conversations failed")
        section.add(
            "raw SDK, no prefill_guard: conversations that fail",
            failed,
            f"of {conversations}",
            detail="400 invalid_request_error (assistant message prefill)",
        )
        emulator.reset()
        for name, target, build in _scenarios():
            if not name.startswith("a second"):  # what a process learned, it keeps
                shared_knowledge().clear()
            counter = RequestCounter()
            with counter.client(emulator) as client:
                send = build(client)
                counts = []
                for _ in range(conversations):
                    before = counter.requests
                    text = send()
                    counts.append(counter.requests - before)
                    section.check(text == reply, f"{name}: a conversation got {text!r}")
            served = emulator.message_requests()
            emulator.reset()
            section.check(served == sum(counts), f"{name}: sent {sum(counts)}, served {served}")
            expected = _expected(target, conversations)
            histogram = Counter(counts)
            met = counts == expected
            section.check(met, f"{name}: round trips {dict(histogram)}, expected {target}")
            section.add(
                name,
                sum(counts) / conversations,
                "per conversation",
                target=target,
                met=met,
                detail=f"first conversation {counts[0]}, then "
                f"{', '.join(f'{k} x{n}' for k, n in sorted(Counter(counts[1:]).items()))}"
                f"; {sum(counts)} requests for {conversations} conversations",
            )
            section.data["scenarios"][name] = {
                "target": target,
                "first": counts[0],
                "histogram": {str(k): v for k, v in sorted(histogram.items())},
                "requests": sum(counts),
            }
    return section
