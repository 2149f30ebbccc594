"""8. What OpenTelemetry costs: CPU per successful request with no provider, and with one.

The happy path (no retry) of ``Agent.generate`` and of a guarded client, through the real SDK
over an in-memory transport, beside the raw SDK call. First with no provider configured (what
every user without OpenTelemetry set up pays: its no-op objects), then with the OpenTelemetry
SDK's tracer and meter providers set globally (spans made, ended and handed to a processor that
counts them; the histogram aggregated in memory), the anthropic SDK's own tracing off (the
Agent's ``invoke_agent`` and ``chat`` spans) and on (its call span instead of ``chat``). A
process can set global providers once, so the phases run in that order; the sides of each phase
are interleaved. Needs ``opentelemetry-sdk`` (the test extra).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from typing import Any

try:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
except ImportError:  # the test extra
    SpanProcessor = object  # type: ignore[assignment,misc]

from .common import MODEL, Config, Section, cpu_per_call, interleave, median
from .overhead import compared_sides, in_memory_client

__all__ = ["run"]

PHASES = ("no provider", "provider, SDK tracing off", "provider, SDK tracing on")


class _Counting(SpanProcessor):
    """Counts the spans that end, by name, and keeps nothing else."""

    def __init__(self) -> None:
        self.names: dict[str, int] = {}

    def on_end(self, span: ReadableSpan) -> None:
        self.names[span.name] = self.names.get(span.name, 0) + 1


SIDES = {"raw": "raw SDK", "agent": "Agent.generate", "guarded": "guarded client"}
RUN_SPAN = f"invoke_agent {MODEL}"
"""The Agent's run span (the Agent is named after its model)."""


def _sides(options: dict[str, Any]) -> dict[str, Callable[[], object]]:
    """Benchmark 1's raw SDK, Agent and guarded client, on a client made with ``options``."""
    sides = compared_sides(in_memory_client(**options))
    return {label: sides[key] for key, label in SIDES.items()}


def _measure(
    sides: dict[str, Callable[[], object]], config: Config
) -> tuple[dict[str, float], dict[str, list[float]]]:
    batch = config.pick(500, 50)
    for call in sides.values():
        cpu_per_call(call, batch // 5)  # warm up
    samples = interleave(
        sides,
        config.pick(15, 3),
        seed=config.seed,
        measure=lambda call: cpu_per_call(call, batch),
    )
    return {name: median(values) * 1e6 for name, values in samples.items()}, samples


def run(config: Config) -> Section:
    section = Section("telemetry", "8. OpenTelemetry: no provider, and a provider configured")
    if importlib.util.find_spec("opentelemetry.sdk") is None:
        reason = "not measured: opentelemetry-sdk is not installed (the test extra)"
        section.notes.append(reason)
        required = os.environ.get("PREFILL_GUARD_REQUIRE_EXTRAS", "").split(",")
        section.check("opentelemetry.sdk" not in required, reason)
        return section
    sdk_traces = hasattr(in_memory_client(), "open_telemetry")  # anthropic 1.14 and later
    figures: dict[str, dict[str, float]] = {}
    counting = _Counting()
    for phase in PHASES:
        if phase == "provider, SDK tracing off":
            provider = TracerProvider()
            provider.add_span_processor(counting)
            trace.set_tracer_provider(provider)
            metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
        if phase == "provider, SDK tracing on" and not sdk_traces:
            section.notes.append(f"{phase}: not measured (this anthropic SDK has no tracing)")
            continue
        options = {"open_telemetry": False} if sdk_traces and phase == PHASES[1] else {}
        counting.names.clear()
        medians, samples = _measure(_sides(options), config)
        figures[phase] = medians
        section.data[phase] = {
            "cpu_us_median": {k: round(v, 2) for k, v in medians.items()},
            "cpu_us_runs": {k: [round(v * 1e6, 2) for v in vs] for k, vs in samples.items()},
            "spans_ended": dict(counting.names),
        }
        for name in ("Agent.generate", "guarded client"):
            section.add(
                f"{phase}: {name} - raw SDK, CPU per request",
                medians[name] - medians["raw SDK"],
                "µs",
                detail=f"raw {medians['raw SDK']:,.0f} µs, {name} {medians[name]:,.0f} µs",
            )
        if phase == PHASES[1]:
            section.check(
                counting.names.get(RUN_SPAN, 0) == counting.names.get(f"chat {MODEL}", 0) > 0,
                f"{phase}: expected one invoke_agent and one chat span per generation, "
                f"got {counting.names}",
            )
        if phase == PHASES[2]:
            section.check(
                counting.names.get(RUN_SPAN, 0) > 0 and f"chat {MODEL}" not in counting.names,
                f"{phase}: expected the SDK's spans and no chat span, got {counting.names}",
            )
    for name in ("Agent.generate", "guarded client"):
        for phase in PHASES[1:]:
            if phase in figures:
                section.add(
                    f"{name}: {phase} - no provider, CPU per request",
                    figures[phase][name] - figures[PHASES[0]][name],
                    "µs",
                    detail="the whole call's CPU, the SDK's own spans included when on",
                )
    return section
