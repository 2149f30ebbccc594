"""The emulator process the timed benchmarks talk to: ``python -m benchmarks.server``.

Prints ``listening <base_url>``, then answers commands read line by line on stdin:
``count`` (the ``POST /v1/messages`` requests received since the last reset), ``reset``, and
``cpu`` (the CPU seconds the emulator process has used).
It stops at the end of its input, so it never outlives the benchmark that started it.

One addition to the emulator: a *per-conversation* fault. A request with the header
``x-bench-fault-once: 529`` and ``x-bench-conversation: <id>`` is answered with a 529 (and
``retry-after-ms``) the first time that conversation is seen, whatever other requests are in
flight. The emulator's own ``script(Fault(...))`` queue is shared by all requests in arrival
order, so with a thousand conversations in flight it cannot pick *which* conversations meet
the fault.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from prefill_guard.testing import AnthropicEmulator, Fault

from .common import CONVERSATION_HEADER, FAULT_HEADER

__all__ = ["BenchmarkEmulator", "main", "reply_text"]


def reply_text(words: int) -> str:
    """A reply of ``words`` words (the emulator streams one text delta per word)."""
    return " ".join(f"word{index}" for index in range(words)) + "."


class BenchmarkEmulator(AnthropicEmulator):
    """The emulator, plus a fault that applies to the first request of a named conversation.

    Built on the public ``script()``: the fault is queued and the request handled while a lock
    is held that every request takes, so the fault goes to exactly that request. Python runs
    one handler at a time anyway (the interpreter lock), so the lock costs next to nothing.
    It overrides the emulator's private ``_respond``; the public feature proposed in
    docs/performance.md would replace it.
    """

    def __init__(self, *, retry_after_ms: int, **options: Any) -> None:
        super().__init__(**options)
        self._retry_after_ms = retry_after_ms
        self._conversation_lock = threading.Lock()
        self._faulted: set[str] = set()

    def _respond(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        raw: bytes,
        *,
        wait: Callable[[float], bool],
    ) -> Any:
        conversation = headers.get(CONVERSATION_HEADER)
        status = headers.get(FAULT_HEADER)
        with self._conversation_lock:
            if (
                conversation is not None
                and status is not None
                and conversation not in self._faulted
            ):
                self._faulted.add(conversation)
                self.script(
                    Fault(int(status), headers={"retry-after-ms": str(self._retry_after_ms)})
                )
            return super()._respond(method, path, headers, raw, wait=wait)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.server")
    parser.add_argument("--reply-words", type=int, default=8)
    parser.add_argument("--retry-after-ms", type=int, default=10)
    args = parser.parse_args(argv)
    emulator = BenchmarkEmulator(
        reply=reply_text(args.reply_words), retry_after_ms=args.retry_after_ms
    ).start()
    print(f"listening {emulator.base_url}", flush=True)
    try:
        for line in sys.stdin:
            command = line.strip()
            if command == "count":
                print(len(emulator.message_requests), flush=True)
            elif command == "cpu":
                print(time.process_time(), flush=True)
            elif command == "reset":
                emulator.reset()
                print("ok", flush=True)
            else:
                print(f"unknown command {command!r}", flush=True)
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
