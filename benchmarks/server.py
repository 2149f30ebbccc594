"""The emulator process the timed benchmarks talk to: ``python -m benchmarks.server``.

Prints ``listening <base_url>``, then answers commands read line by line on stdin:

- ``count``: the ``POST /v1/messages`` requests received since the last reset;
- ``reset``: forget them, and drop any faults not yet consumed;
- ``cpu``: the CPU seconds the emulator process has used;
- ``fault <status> <conversation> [<conversation> ...]``: answer the first request of each
  named conversation (the one whose ``x-bench-conversation`` header names it) with ``status``
  and ``retry-after-ms``, whatever other requests are in flight. This is the emulator's own
  ``script(Fault(...), when=...)``.

With ``--tool-calls N``, a request that offers tools is answered as a tool loop: a call to its
first tool while the conversation holds fewer than N tool results, the text reply after that.

It stops at the end of its input, so it never outlives the benchmark that started it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from prefill_guard.models import rejects_prefill
from prefill_guard.testing import (
    AnthropicEmulator,
    Fault,
    RecordedRequest,
    Reply,
    RequestPredicate,
    tool_use,
)

from .common import CONVERSATION_HEADER, UNKNOWN_MODEL

__all__ = ["TOOL_CALLS", "main", "reply_text", "tool_loop_reply"]

TOOL_CALLS = 4
"""Tool calls per tool loop: with the reply after the last one, 5 model calls."""


def reply_text(words: int) -> str:
    """A reply of ``words`` words (the emulator streams one text delta per word)."""
    return " ".join(f"word{index}" for index in range(words)) + "."


def tool_loop_reply(text: str, tool_calls: int) -> Callable[[dict[str, Any]], Reply]:
    """The reply for a request body: ``text``, or a call to the request's first tool while the
    conversation has fewer than ``tool_calls`` tool results (the call's id and input say which
    call of the loop it is)."""

    def reply(body: dict[str, Any]) -> Reply:
        tools = body.get("tools") or []
        answered = sum(
            1
            for message in body["messages"]
            if message["role"] == "user" and isinstance(message["content"], list)
            for block in message["content"]
            if block.get("type") == "tool_result"
        )
        if not tools or answered >= tool_calls:
            return text
        call = tool_use(tools[0]["name"], {"n": answered}, id=f"toolu_{answered:02d}")
        return [{"type": "text", "text": f"Looking up {answered}."}, call]

    return reply


def _in_conversation(conversation: str) -> RequestPredicate:
    def applies(request: RecordedRequest) -> bool:
        return request.headers.get(CONVERSATION_HEADER) == conversation

    return applies


def _answer(emulator: AnthropicEmulator, command: str, retry_after_ms: int) -> str:
    name, *arguments = command.split()
    if name == "count" and not arguments:
        return str(len(emulator.message_requests))
    if name == "cpu" and not arguments:
        return str(time.process_time())
    if name == "reset" and not arguments:
        emulator.reset()
        return "ok"
    if name == "fault" and len(arguments) >= 2 and arguments[0].isdigit():
        fault = Fault(int(arguments[0]), headers={"retry-after-ms": str(retry_after_ms)})
        for conversation in arguments[1:]:
            emulator.script(fault, when=_in_conversation(conversation))
        return "ok"
    return f"unknown command {command!r}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.server")
    parser.add_argument("--reply-words", type=int, default=8)
    parser.add_argument("--retry-after-ms", type=int, default=10)
    parser.add_argument("--tool-calls", type=int, default=0)
    args = parser.parse_args(argv)
    text = reply_text(args.reply_words)
    emulator = AnthropicEmulator(
        reply=tool_loop_reply(text, args.tool_calls) if args.tool_calls else text,
        rules={"prefill": lambda model: rejects_prefill(model) or model == UNKNOWN_MODEL},
    ).start()
    print(f"listening {emulator.base_url}", flush=True)
    try:
        for line in sys.stdin:
            if line.strip():
                print(_answer(emulator, line.strip(), args.retry_after_ms), flush=True)
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
