"""The emulator process the timed benchmarks talk to: ``python -m benchmarks.server``.

Prints ``listening <base_url>``, then answers commands read line by line on stdin:

- ``count``: the ``POST /v1/messages`` requests received since the last reset;
- ``reset``: forget them, and drop any faults not yet consumed;
- ``cpu``: the CPU seconds the emulator process has used;
- ``fault <status> <conversation> [<conversation> ...]``: answer the first request of each
  named conversation (the one whose ``x-bench-conversation`` header names it) with ``status``
  and ``retry-after-ms``, whatever other requests are in flight. This is the emulator's own
  ``script(Fault(...), when=...)``.

It stops at the end of its input, so it never outlives the benchmark that started it.
"""

from __future__ import annotations

import argparse
import sys
import time

from prefill_guard.models import rejects_prefill
from prefill_guard.testing import AnthropicEmulator, Fault, RecordedRequest, RequestPredicate

from .common import CONVERSATION_HEADER, UNKNOWN_MODEL

__all__ = ["main", "reply_text"]


def reply_text(words: int) -> str:
    """A reply of ``words`` words (the emulator streams one text delta per word)."""
    return " ".join(f"word{index}" for index in range(words)) + "."


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
    args = parser.parse_args(argv)
    emulator = AnthropicEmulator(
        reply=reply_text(args.reply_words),
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
