"""OpenTelemetry span events: every retry and repair is an event on the current span (the SDK's
call span inside a guarded client, when its tracing is on), with the log record's fields and no
message content."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from prefill_guard import Agent, PrefillErrorHandler, guard
from prefill_guard.testing import AnthropicEmulator, Fault

from .conftest import Harness, require, treat_like

require("opentelemetry.sdk")
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

SECRET = "Suggest a name for a grey cat."
ENDS_WITH_ASSISTANT: list[Any] = [
    {"role": "user", "content": SECRET},
    {"role": "assistant", "content": "How about Ash?"},
]
SDK_TRACES = hasattr(anthropic.Anthropic(api_key="k"), "open_telemetry")
"""Whether the installed SDK traces its calls (anthropic 1.14 and later)."""


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """A tracer provider of the test's own, recording into memory (the global one is left
    alone: the SDK without options uses it, and no span of its own is made)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


@pytest.fixture
def acme_emulator() -> Iterator[AnthropicEmulator]:
    """An emulator on which the made-up model 'acme-1' (unknown to the model table) rejects
    prefill: its first request gets the 400, and the handler repairs it."""
    with AnthropicEmulator(no_prefill_models=["acme-1"]) as emulator:
        yield emulator


def _events(span: ReadableSpan, name: str) -> list[dict[str, Any]]:
    return [dict(event.attributes or {}) for event in span.events if event.name == name]


def _named(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    (span,) = [s for s in exporter.get_finished_spans() if s.name == name]
    return span


def test_a_reactive_repair_is_a_retry_event_on_the_callers_span(
    spans: tuple[TracerProvider, InMemorySpanExporter], acme_emulator: AnthropicEmulator
) -> None:
    provider, exporter = spans
    options = {"open_telemetry": False} if SDK_TRACES else {}
    with (
        acme_emulator.client(**options) as client,
        guard(client) as guarded,
        provider.get_tracer("test").start_as_current_span("invoke_agent test"),
    ):
        guarded.messages.create(model="acme-1", max_tokens=16, messages=ENDS_WITH_ASSISTANT)
    (event,) = _events(_named(exporter, "invoke_agent test"), "prefill_guard.retry")
    assert event["prefill_guard.retry.kind"] == "processor"
    assert event["prefill_guard.processor.id"] == "prefill-error-handler"
    assert event["prefill_guard.attempt"] == 1
    assert event["error.type"] == "BadRequestError"
    assert event["http.response.status_code"] == 400
    assert str(event["prefill_guard.request_id"]).startswith("req_")
    assert SECRET not in repr(event)


@pytest.mark.skipif(not SDK_TRACES, reason="this anthropic SDK has no tracing (1.14 and later)")
def test_inside_a_guarded_client_the_events_go_on_the_sdks_call_span(
    spans: tuple[TracerProvider, InMemorySpanExporter], acme_emulator: AnthropicEmulator
) -> None:
    """With the SDK's tracing on, the retry is an event on its anthropic.messages.create span,
    which nests under the caller's: one recovered call, one trace."""
    provider, exporter = spans
    with (
        acme_emulator.client(open_telemetry={"tracer_provider": provider}) as client,
        guard(client) as guarded,
        provider.get_tracer("test").start_as_current_span("invoke_agent test"),
    ):
        guarded.messages.create(model="acme-1", max_tokens=16, messages=ENDS_WITH_ASSISTANT)
    outer = _named(exporter, "invoke_agent test")
    call = _named(exporter, "anthropic.messages.create")
    assert call.parent is not None
    assert call.parent.span_id == outer.context.span_id
    assert call.context.trace_id == outer.context.trace_id
    assert _events(outer, "prefill_guard.retry") == []
    (event,) = _events(call, "prefill_guard.retry")
    assert event["prefill_guard.processor.id"] == "prefill-error-handler"


def test_a_proactive_repair_is_a_repair_event(
    spans: tuple[TracerProvider, InMemorySpanExporter], anthropic_emulator: AnthropicEmulator
) -> None:
    """The adaptive handler adds the reminder before sending for a known model: no retry, and
    a repair event saying what changed (counts and names, never contents)."""
    provider, exporter = spans
    options = {"open_telemetry": False} if SDK_TRACES else {}
    with (
        anthropic_emulator.client(**options) as client,
        guard(client) as guarded,
        provider.get_tracer("test").start_as_current_span("call"),
    ):
        guarded.messages.create(
            model="claude-opus-4-6", max_tokens=16, messages=ENDS_WITH_ASSISTANT
        )
    span = _named(exporter, "call")
    assert _events(span, "prefill_guard.retry") == []
    (event,) = _events(span, "prefill_guard.repair")
    assert event["prefill_guard.processor.id"] == "adaptive-prefill-handler"
    assert event["prefill_guard.repair.messages_before"] == 2
    assert event["prefill_guard.repair.messages_after"] == 3
    assert SECRET not in repr(event)


async def test_an_agent_runs_retries_are_events_in_every_driver(
    spans: tuple[TracerProvider, InMemorySpanExporter],
    anthropic_emulator: AnthropicEmulator,
    harness: Harness,
) -> None:
    """A 529, then the prefill 400 of a model the table does not know: a transient and a
    processor retry event, in generate, agenerate, stream and astream."""
    provider, exporter = spans
    treat_like(anthropic_emulator, {"acme-1": "claude-opus-4-6"})
    anthropic_emulator.script(Fault(529, headers={"retry-after-ms": "1"}))
    agent = harness.agent("acme-1", error_processors=[PrefillErrorHandler()])
    with provider.get_tracer("test").start_as_current_span("run"):
        await harness.run(agent, ENDS_WITH_ASSISTANT)
    transient, processor = _events(_named(exporter, "run"), "prefill_guard.retry")
    assert transient["prefill_guard.retry.kind"] == "transient"
    assert transient["error.type"] == "OverloadedError"
    assert transient["http.response.status_code"] == 529
    assert "prefill_guard.processor.id" not in transient  # None is left out
    assert processor["prefill_guard.retry.kind"] == "processor"
    assert processor["prefill_guard.processor.id"] == "prefill-error-handler"
    assert processor["prefill_guard.attempt"] == 2
    assert SECRET not in repr([transient, processor])


def test_without_a_recording_span_nothing_is_recorded_and_nothing_fails(
    acme_emulator: AnthropicEmulator,
) -> None:
    with acme_emulator.client() as client:
        agent = Agent("acme-1", client=client, error_processors=[PrefillErrorHandler()])
        assert agent.generate(ENDS_WITH_ASSISTANT).text
