"""What every benchmark shares: results, statistics, interleaving, the emulator process."""

from __future__ import annotations

import json
import os
import platform
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any, TypeVar

import anthropic
import httpx2

from prefill_guard import Agent, MessageList
from prefill_guard.messages import check_input
from prefill_guard.run import Run, Step

__all__ = [
    "CONVERSATION_HEADER",
    "MODEL",
    "UNKNOWN_MODEL",
    "Config",
    "EmulatorProcess",
    "RequestCounter",
    "Row",
    "Section",
    "child_environment",
    "cpu_per_call",
    "emulator_process",
    "interleave",
    "machine",
    "median",
    "percentile",
    "prepared_step",
    "ratio_interval",
    "write_json",
]

C = TypeVar("C")
K = TypeVar("K", bound=Hashable)
M = TypeVar("M")

CONVERSATION_HEADER = "x-bench-conversation"
"""Names the conversation a request belongs to (for the per-conversation fault)."""

MODEL = "claude-sonnet-4-6"
"""A model that rejects prefill, and that the model table knows does."""
UNKNOWN_MODEL = "acme-nova-1"
"""An alias (a gateway's, a fine-tune's) for a model that rejects prefill: the benchmark's
emulator rejects prefill for it, and the model table cannot read its version."""


@dataclass(frozen=True)
class Config:
    """How much work each benchmark does: the full run or the quick (CI) run."""

    quick: bool
    seed: int = 7

    def pick(self, full: int, quick: int) -> int:
        return quick if self.quick else full


@dataclass
class Row:
    """One figure of the table: its value, and the target it must meet (if any)."""

    name: str
    value: float
    unit: str
    target: str | None = None
    met: bool | None = None
    detail: str = ""

    def formatted(self) -> str:
        value = self.value
        if self.unit in ("x", "ratio"):
            text = f"{value:.3f}"
        elif abs(value) >= 100 or value == int(value):
            text = f"{value:,.0f}"
        else:
            text = f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"
        return f"{text} {self.unit}".strip() if self.unit not in ("x", "ratio") else text


@dataclass
class Section:
    """The rows of one benchmark, its raw figures (for the JSON), and its correctness checks."""

    key: str
    title: str
    rows: list[Row] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(
        self,
        name: str,
        value: float,
        unit: str,
        target: str | None = None,
        met: bool | None = None,
        detail: str = "",
    ) -> Row:
        row = Row(name, value, unit, target, met, detail)
        self.rows.append(row)
        return row

    def check(self, ok: bool, failure: str) -> None:
        """A correctness check (not a speed target): failing one fails the run, quick or not."""
        if not ok:
            self.failures.append(failure)

    @classmethod
    def from_json(cls, key: str, data: dict[str, Any]) -> Section:
        section = cls(key, data["title"], data=data["data"])
        section.rows = [Row(**row) for row in data["rows"]]
        section.failures = list(data["failures"])
        section.notes = list(data["notes"])
        section.seconds = float(data["seconds"])
        return section

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "seconds": round(self.seconds, 2),
            "rows": [asdict(row) for row in self.rows],
            "data": self.data,
            "failures": self.failures,
            "notes": self.notes,
        }


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        raise ValueError("median of no values")
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` in 0..1)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def ratio_interval(
    numerator: Sequence[float],
    denominator: Sequence[float],
    *,
    seed: int,
    resamples: int = 400,
    level: float = 0.95,
) -> tuple[float, float]:
    """A bootstrap interval for ``median(numerator) / median(denominator)``.

    The two lists are paired by round (see :func:`interleave`), so rounds are resampled
    whole. It says how far the ratio could move from sampling alone; a busy spell of the
    machine moves it further, which only other runs show.
    """
    if len(numerator) != len(denominator) or not numerator:
        raise ValueError("ratio_interval needs two non-empty lists of the same length")
    rng = random.Random(seed)
    rounds = range(len(numerator))
    ratios = []
    for _ in range(resamples):
        chosen = rng.choices(rounds, k=len(rounds))
        ratios.append(
            median([numerator[i] for i in chosen]) / median([denominator[i] for i in chosen])
        )
    ratios.sort()
    tail = (1 - level) / 2
    return ratios[int(tail * (resamples - 1))], ratios[round((1 - tail) * (resamples - 1))]


def interleave(
    sides: dict[K, C],
    rounds: int,
    *,
    seed: int,
    measure: Callable[[C], M],
) -> dict[K, list[M]]:
    """Measure every side once per round, in a new random order each round.

    So a slow spell of the (shared, noisy) machine hits every side alike, and no side always
    runs right after another.
    """
    rng = random.Random(seed)
    names = list(sides)
    samples: dict[K, list[M]] = {name: [] for name in names}
    for _ in range(rounds):
        rng.shuffle(names)
        for name in names:
            samples[name].append(measure(sides[name]))
    return samples


def cpu_per_call(call: Callable[[], object], iterations: int) -> float:
    """Seconds of this process's CPU time per call, over ``iterations`` calls in a row."""
    start = time.process_time()
    for _ in range(iterations):
        call()
    return (time.process_time() - start) / iterations


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for package in ("prefill-guard", "anthropic", "tenacity", "httpx2"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "?"
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu": model,
        "cpus": os.cpu_count(),
        "load_average": None if load is None else [round(value, 2) for value in load],
        "versions": versions,
    }


def child_environment() -> dict[str, str]:
    """The environment for a child ``python -m benchmarks...``: this checkout importable."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


class EmulatorProcess:
    """The emulator (``benchmarks.server``) in a child process, on 127.0.0.1.

    In a process of its own, the emulator's work does not share this process's interpreter
    lock: this process's CPU time is the client's alone, and on two or more cores the server
    answers in parallel with the client's work instead of taking turns with it. With
    ``tool_calls``, a request that offers tools is answered as a tool loop of that many calls
    (``benchmarks.server``).
    """

    def __init__(
        self, *, reply_words: int = 8, retry_after_ms: int = 10, tool_calls: int = 0
    ) -> None:
        command = [
            sys.executable,
            "-m",
            "benchmarks.server",
            "--reply-words",
            str(reply_words),
            "--retry-after-ms",
            str(retry_after_ms),
            "--tool-calls",
            str(tool_calls),
        ]
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_environment(),
        )
        line = self._read_line()
        match = re.fullmatch(r"listening (\S+)", line)
        if match is None:
            self.close()
            raise RuntimeError(f"the emulator process did not start: {line!r}")
        self.base_url = match[1]

    def _read_line(self) -> str:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("the emulator process exited")
        return line.strip()

    def _ask(self, command: str) -> str:
        assert self._process.stdin is not None
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        return self._read_line()

    def message_requests(self) -> int:
        """How many ``POST /v1/messages`` requests it received since the last reset."""
        return int(self._ask("count"))

    def cpu_seconds(self) -> float:
        """The CPU time the emulator process has used so far."""
        return float(self._ask("cpu"))

    def reset(self) -> None:
        """Forget the recorded requests (the emulator keeps every body until then) and drop
        the faults not yet consumed."""
        self._ask("reset")

    def fault_first_requests(self, status: int, conversations: list[str]) -> None:
        """Answer the first request of each conversation (named in the request's
        ``CONVERSATION_HEADER``) with ``status``, whatever else is in flight."""
        for name in conversations:
            if not name or name.split() != [name]:
                raise ValueError(f"a conversation name must be one word, got {name!r}")
        if conversations:
            answer = self._ask(f"fault {status} {' '.join(conversations)}")
            if answer != "ok":
                raise RuntimeError(f"the emulator process refused the faults: {answer}")

    def sync_client(self, **options: Any) -> anthropic.Anthropic:
        return anthropic.Anthropic(api_key="bench-key", base_url=self.base_url, **options)

    def async_client(self, **options: Any) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(api_key="bench-key", base_url=self.base_url, **options)

    def close(self) -> None:
        process = self._process
        if process.poll() is None:
            if process.stdin is not None:
                process.stdin.close()  # the server stops at the end of its input
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


class RequestCounter:
    """Counts the HTTP requests a client sends (an httpx event hook)."""

    def __init__(self) -> None:
        self.requests = 0

    def __call__(self, request: httpx2.Request) -> None:
        self.requests += 1

    def client(self, emulator: EmulatorProcess) -> anthropic.Anthropic:
        """A client of ``emulator`` (no SDK retries) whose requests this counts."""
        http_client = httpx2.Client(event_hooks={"request": [self]})
        return emulator.sync_client(http_client=http_client, max_retries=0)


@contextmanager
def emulator_process(**options: Any) -> Iterator[EmulatorProcess]:
    emulator = EmulatorProcess(**options)
    try:
        yield emulator
    finally:
        emulator.close()


def write_json(path: str, payload: dict[str, Any]) -> None:
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        json.dump(payload, out, indent=2)
        out.write("\n")


def prepared_step(agent: Agent, conversation: list[dict[str, Any]] | MessageList) -> Step:
    """What ``Agent.generate`` makes before its first request, through the public parts: the
    conversation (a list copied, a MessageList used in place), its check, the run (its
    parameters copied) and its first step (the ``before_send`` hooks run)."""
    messages = conversation if isinstance(conversation, MessageList) else MessageList(conversation)
    check_input(messages)
    params = {"model": agent.model, **agent.default_params}
    return Run(agent.pipeline, agent.retry_policy, messages, params).next_step()
