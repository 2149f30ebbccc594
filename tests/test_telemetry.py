"""OpenTelemetry: an Agent run is one trace (invoke_agent, chat or the SDK's call spans,
execute_tool), every retry and repair is a span event and a count, and no message content is
recorded unless content capture is on, and then what was actually sent.

The spans go to a tracer provider of the tests' own, which the clients name in their
``open_telemetry`` option (anthropic 1.14 and later; before that, the Agent's spans go to the
global provider, set to it once for the session: OpenTelemetry allows that only once per
process). It records only while a test of this module asks. The metrics go to the global meter
provider (the SDK has none), set once for the session with an in-memory reader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import pytest

from prefill_guard import Abort, Agent, PrefillErrorHandler, guard, install, uninstall
from prefill_guard.testing import AnthropicEmulator, Fault, tool_use

from .conftest import Harness, require, treat_like

require("opentelemetry.sdk")
from opentelemetry import metrics, trace  # noqa: E402
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import (  # noqa: E402
    AggregationTemporality,
    InMemoryMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.sampling import (  # noqa: E402
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

SECRET = "Suggest a name for a grey cat."
TOOL_SECRET = "Hammerfest"
ENDS_WITH_ASSISTANT: list[Any] = [
    {"role": "user", "content": SECRET},
    {"role": "assistant", "content": "How about Ash?"},
]
SDK_TRACES = hasattr(anthropic.Anthropic(api_key="k"), "open_telemetry")
"""Whether the installed SDK traces its calls (anthropic 1.14 and later)."""


class _Recorder(SpanProcessor):
    """Keeps the spans that end while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        if self.on:
            self.spans.append(span)


PROVIDER = TracerProvider()
RECORDER = _Recorder()
PROVIDER.add_span_processor(RECORDER)
TRACER = PROVIDER.get_tracer("test")


def client_options(*, sdk: bool, content: bool = False) -> dict[str, Any]:
    """A client's options: its spans to PROVIDER, the SDK's own tracing on or off, content
    capture on or off (before anthropic 1.14: none; see the ``content_capture`` fixture)."""
    if not SDK_TRACES:
        return {}
    traces = {"enabled": sdk, "content_mode": "content" if content else "metadata_only"}
    return {"open_telemetry": {"tracer_provider": PROVIDER, "traces": traces}}


SDK_OFF = client_options(sdk=False)
SDK_ON = client_options(sdk=True)


@dataclass
class Telemetry:
    recorder: _Recorder
    reader: InMemoryMetricReader

    @property
    def spans(self) -> list[ReadableSpan]:
        return list(self.recorder.spans)

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.recorder.spans if span.name == name]

    def one(self, name: str) -> ReadableSpan:
        (span,) = self.named(name)
        return span

    def points(self) -> dict[str, list[Any]]:
        """The data points of every metric since the last read, by metric name."""
        data = self.reader.get_metrics_data()
        found: dict[str, list[Any]] = {}
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found.setdefault(metric.name, []).extend(metric.data.data_points)
        return found

    def everything(self) -> str:
        """Every attribute of every span, event and metric point recorded, as text."""
        parts = []
        for span in self.recorder.spans:
            parts.append(repr(dict(span.attributes or {})))
            parts.extend(repr(dict(event.attributes or {})) for event in span.events)
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    parts.extend(repr(dict(p.attributes or {})) for p in metric.data.data_points)
        return "\n".join(parts)


@pytest.fixture(scope="session")
def global_providers() -> InMemoryMetricReader:
    delta = AggregationTemporality.DELTA
    reader = InMemoryMetricReader(preferred_temporality={Counter: delta, Histogram: delta})
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    if not SDK_TRACES:
        trace.set_tracer_provider(PROVIDER)
        if trace.get_tracer_provider() is not PROVIDER:
            pytest.fail("another global tracer provider was set before these tests")
    return reader


@pytest.fixture
def otel(global_providers: InMemoryMetricReader) -> Iterator[Telemetry]:
    recorder, reader = RECORDER, global_providers
    recorder.spans.clear()
    reader.get_metrics_data()  # what earlier tests counted is dropped
    recorder.on = True
    yield Telemetry(recorder, reader)
    recorder.on = False
    recorder.spans.clear()


@pytest.fixture
def acme_emulator() -> Iterator[AnthropicEmulator]:
    """An emulator on which the made-up model 'acme-1' (unknown to the model table) rejects
    prefill: its first request gets the 400, and the handler repairs it."""
    with AnthropicEmulator(no_prefill_models=["acme-1"]) as emulator:
        yield emulator


def _events(span: ReadableSpan, name: str) -> list[dict[str, Any]]:
    return [dict(event.attributes or {}) for event in span.events if event.name == name]


def _guarded_call(emulator: AnthropicEmulator, model: str, options: dict[str, Any]) -> None:
    """One call through a guarded client, inside the caller's span "caller"."""
    with (
        emulator.client(**options) as client,
        guard(client) as guarded,
        TRACER.start_as_current_span("caller"),
    ):
        guarded.messages.create(model=model, max_tokens=16, messages=ENDS_WITH_ASSISTANT)


def _is_child(span: ReadableSpan, parent: ReadableSpan) -> bool:
    return span.parent is not None and span.parent.span_id == parent.context.span_id


def _acme_agent(harness: Harness, options: dict[str, Any], **kwargs: Any) -> Agent:
    """An Agent for 'acme-1', which the emulator treats as a model that rejects prefill."""
    treat_like(harness.emulator, {"acme-1": "claude-opus-4-6"})
    kwargs.setdefault("error_processors", [PrefillErrorHandler()])
    return harness.agent("acme-1", name="cat-namer", client_kwargs=options, **kwargs)


def get_weather(city: str) -> str:
    """The weather in a city.

    Args:
        city: the city's name
    """
    with TRACER.start_as_current_span("weather lookup"):
        return f"18 C and sunny in {city}"


def broken(city: str) -> str:
    """A tool that always fails.

    Args:
        city: the city's name
    """
    raise RuntimeError("the weather service is down")


# -- spans -------------------------------------------------------------------------------------


async def test_a_recovered_run_is_one_trace_with_a_chat_span_per_request(
    otel: Telemetry, harness: Harness
) -> None:
    """The SDK's tracing off: the run is invoke_agent, each request a chat span under it (the
    rejected one ERROR, with its type and status), and the retry an event on the run's span."""
    agent = _acme_agent(harness, SDK_OFF)
    await harness.run(agent, ENDS_WITH_ASSISTANT)
    run = otel.one("invoke_agent cat-namer")
    assert run.parent is None
    assert run.kind is SpanKind.INTERNAL
    assert run.attributes is not None
    assert run.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert run.attributes["gen_ai.agent.name"] == "cat-namer"
    assert run.attributes["gen_ai.request.model"] == "acme-1"
    assert run.attributes["gen_ai.provider.name"] == "anthropic"
    assert run.attributes["prefill_guard.run.steps"] == 1
    assert run.status.status_code is StatusCode.UNSET
    rejected, answered = sorted(otel.named("chat acme-1"), key=lambda s: s.start_time or 0)
    for chat in (rejected, answered):
        assert _is_child(chat, run)
        assert chat.kind is SpanKind.CLIENT
        assert chat.context.trace_id == run.context.trace_id
    assert rejected.status.status_code is StatusCode.ERROR
    assert rejected.attributes is not None
    assert rejected.attributes["error.type"] == "BadRequestError"
    assert rejected.attributes["http.response.status_code"] == 400
    assert answered.status.status_code is StatusCode.UNSET
    assert answered.attributes is not None
    assert str(answered.attributes["gen_ai.response.id"]).startswith("msg_")
    assert answered.attributes["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert int(str(answered.attributes["gen_ai.usage.output_tokens"])) > 0
    (event,) = _events(run, "prefill_guard.retry")
    assert event["prefill_guard.processor.id"] == "prefill-error-handler"
    assert event["gen_ai.request.model"] == "acme-1"


@pytest.mark.skipif(not SDK_TRACES, reason="this anthropic SDK has no tracing (1.14 and later)")
async def test_with_the_sdks_tracing_its_call_spans_nest_under_the_run(
    otel: Telemetry, harness: Harness
) -> None:
    """The SDK's tracing on: its anthropic.messages.create span per request is the run's
    child, and the run makes no chat span of its own (nothing is traced twice)."""
    agent = _acme_agent(harness, SDK_ON)
    await harness.run(agent, ENDS_WITH_ASSISTANT)
    run = otel.one("invoke_agent cat-namer")
    calls = otel.named("anthropic.messages.create")
    assert len(calls) == 2
    assert all(_is_child(call, run) for call in calls)
    rejected, answered = sorted(calls, key=lambda s: s.start_time or 0)
    assert rejected.status.status_code is StatusCode.ERROR
    assert answered.status.status_code is not StatusCode.ERROR
    assert otel.named("chat acme-1") == []
    (event,) = _events(run, "prefill_guard.retry")
    assert event["prefill_guard.retry.kind"] == "processor"


async def test_a_callers_span_is_the_runs_parent(otel: Telemetry, harness: Harness) -> None:
    agent = _acme_agent(harness, SDK_OFF)
    with TRACER.start_as_current_span("handle request"):
        await harness.run(agent, ENDS_WITH_ASSISTANT)
    assert _is_child(otel.one("invoke_agent cat-namer"), otel.one("handle request"))


async def test_tool_calls_are_execute_tool_spans_under_the_run(
    otel: Telemetry, harness: Harness
) -> None:
    """Each tool call is an execute_tool span, the run's child, with the call's id; a tool's
    own spans nest under it; a tool that raised is an ERROR span (the run goes on)."""
    harness.emulator.reply_with(
        [
            tool_use("get_weather", {"city": TOOL_SECRET}, id="toolu_a"),
            tool_use("broken", {"city": TOOL_SECRET}, id="toolu_b"),
        ],
        "Sunny, and the other service is down.",
    )
    agent = harness.agent(
        "claude-opus-4-6", name="weather", tools=[get_weather, broken], client_kwargs=SDK_OFF
    )
    await harness.run(agent, [{"role": "user", "content": "Weather?"}])
    run = otel.one("invoke_agent weather")
    assert run.attributes is not None
    assert run.attributes["prefill_guard.run.steps"] == 2
    weather, failing = otel.one("execute_tool get_weather"), otel.one("execute_tool broken")
    assert _is_child(weather, run)
    assert _is_child(failing, run)
    assert weather.attributes is not None
    assert weather.attributes["gen_ai.operation.name"] == "execute_tool"
    assert weather.attributes["gen_ai.tool.name"] == "get_weather"
    assert weather.attributes["gen_ai.tool.call.id"] == "toolu_a"
    assert weather.status.status_code is StatusCode.UNSET
    assert failing.status.status_code is StatusCode.ERROR
    assert failing.attributes is not None
    assert failing.attributes["error.type"] == "tool_error"
    assert _is_child(otel.one("weather lookup"), weather)
    assert TOOL_SECRET not in otel.everything()


async def test_a_run_that_fails_ends_its_span_with_the_error(
    otel: Telemetry, harness: Harness
) -> None:
    harness.emulator.script(Fault(403))
    agent = harness.agent("claude-opus-4-6", name="denied", client_kwargs=SDK_OFF)
    with pytest.raises(anthropic.PermissionDeniedError):
        await harness.run(agent, SECRET)
    run = otel.one("invoke_agent denied")
    assert run.status.status_code is StatusCode.ERROR
    assert run.attributes is not None
    assert run.attributes["error.type"] == "PermissionDeniedError"
    (chat,) = otel.named("chat claude-opus-4-6")
    assert chat.status.status_code is StatusCode.ERROR


@pytest.mark.parametrize("harness", ["stream", "astream"], indirect=True)
async def test_a_stream_left_early_ends_every_span(otel: Telemetry, harness: Harness) -> None:
    """The consumer leaves after the first text: the run's span and the request's span end
    (the SDK's call span, with its tracing on, before the run's)."""
    for options in (SDK_OFF, *([SDK_ON] if SDK_TRACES else [])):
        otel.recorder.spans.clear()
        agent = harness.agent("claude-opus-4-6", name="leaver", client_kwargs=options)
        if harness.driver == "stream":
            with agent.stream(SECRET) as stream:
                next(iter(stream.text_stream))
        else:
            async with agent.astream(SECRET) as astream:
                await astream.text_stream.__anext__()
        run = otel.one("invoke_agent leaver")
        calls = otel.named(
            "anthropic.messages.create" if options is SDK_ON else "chat claude-opus-4-6"
        )
        assert len(calls) == 1
        assert _is_child(calls[0], run)
        assert (calls[0].end_time or 0) <= (run.end_time or 0)


class _DropsRuns(Sampler):
    """Samples every root span but the runs'."""

    def should_sample(
        self, parent_context: Any, trace_id: int, name: str, *args: Any, **kwargs: Any
    ) -> SamplingResult:
        if name.startswith("invoke_agent"):
            return SamplingResult(Decision.DROP)
        return SamplingResult(Decision.RECORD_AND_SAMPLE)

    def get_description(self) -> str:
        return "drops runs"


@pytest.mark.skipif(not SDK_TRACES, reason="this anthropic SDK has no tracing (1.14 and later)")
def test_a_run_sampled_out_takes_its_requests_with_it(acme_emulator: AnthropicEmulator) -> None:
    """With parent-based sampling, the SDK's call spans follow the run's decision: a run
    sampled out records none of them (they are not roots of traces of their own)."""
    recorder = _Recorder()
    recorder.on = True
    provider = TracerProvider(sampler=ParentBased(_DropsRuns()))
    provider.add_span_processor(recorder)
    options: dict[str, Any] = {"open_telemetry": {"tracer_provider": provider}}
    with acme_emulator.client(**options) as client:
        agent = Agent("acme-1", client=client, error_processors=[PrefillErrorHandler()])
        assert agent.generate(ENDS_WITH_ASSISTANT).retried_by == ("prefill-error-handler",)
        with provider.get_tracer("test").start_as_current_span("sampled"):
            pass
    assert [span.name for span in recorder.spans] == ["sampled"]


class GivesUp:
    """Stops the run on any error."""

    id = "gives-up"

    def process_api_error(self, error: Exception, messages: Any, retry_count: int) -> None:
        raise Abort("not today")


def test_an_abort_ends_the_runs_span_with_its_type(
    otel: Telemetry, acme_emulator: AnthropicEmulator
) -> None:
    with acme_emulator.client(**SDK_OFF) as client:
        agent = Agent("acme-1", client=client, name="quitter", error_processors=[GivesUp()])
        with pytest.raises(Abort):
            agent.generate(ENDS_WITH_ASSISTANT)
    run = otel.one("invoke_agent quitter")
    assert run.status.status_code is StatusCode.ERROR
    assert run.attributes is not None
    assert run.attributes["error.type"] == "Abort"


# -- span events -------------------------------------------------------------------------------


async def test_an_agent_runs_retries_are_events_in_every_driver(
    otel: Telemetry, harness: Harness
) -> None:
    """A 529, then the prefill 400 of a model the table does not know: a transient and a
    processor retry event, with the log record's fields."""
    harness.emulator.script(Fault(529, headers={"retry-after-ms": "1"}))
    agent = _acme_agent(harness, SDK_OFF)
    await harness.run(agent, ENDS_WITH_ASSISTANT)
    transient, processor = _events(otel.one("invoke_agent cat-namer"), "prefill_guard.retry")
    assert transient["prefill_guard.retry.kind"] == "transient"
    assert transient["error.type"] == "OverloadedError"
    assert transient["http.response.status_code"] == 529
    assert "prefill_guard.processor.id" not in transient  # None is left out
    assert processor["prefill_guard.retry.kind"] == "processor"
    assert processor["prefill_guard.processor.id"] == "prefill-error-handler"
    assert processor["prefill_guard.attempt"] == 2
    assert str(processor["prefill_guard.request_id"]).startswith("req_")
    assert processor["prefill_guard.retry.wait"] == 0.0
    assert SECRET not in otel.everything()


def test_a_guarded_clients_reactive_repair_is_a_retry_event_on_the_callers_span(
    otel: Telemetry, acme_emulator: AnthropicEmulator
) -> None:
    _guarded_call(acme_emulator, "acme-1", SDK_OFF)
    (event,) = _events(otel.one("caller"), "prefill_guard.retry")
    assert event["prefill_guard.retry.kind"] == "processor"
    assert event["prefill_guard.processor.id"] == "prefill-error-handler"
    assert event["prefill_guard.attempt"] == 1
    assert event["error.type"] == "BadRequestError"
    assert event["http.response.status_code"] == 400
    assert SECRET not in otel.everything()


@pytest.mark.skipif(not SDK_TRACES, reason="this anthropic SDK has no tracing (1.14 and later)")
def test_inside_a_guarded_client_the_events_go_on_the_sdks_call_span(
    otel: Telemetry, acme_emulator: AnthropicEmulator
) -> None:
    """With the SDK's tracing on, the retry is an event on its anthropic.messages.create span,
    which nests under the caller's: one recovered call, one trace."""
    _guarded_call(acme_emulator, "acme-1", SDK_ON)
    outer, call = otel.one("caller"), otel.one("anthropic.messages.create")
    assert _is_child(call, outer)
    assert _events(outer, "prefill_guard.retry") == []
    (event,) = _events(call, "prefill_guard.retry")
    assert event["prefill_guard.processor.id"] == "prefill-error-handler"
    assert call.attributes is not None
    assert call.attributes["http.request.resend_count"] == 1


def test_a_proactive_repair_is_a_repair_event(
    otel: Telemetry, anthropic_emulator: AnthropicEmulator
) -> None:
    """The adaptive handler adds the reminder before sending for a known model: no retry, and
    a repair event saying what changed (counts and names, never contents)."""
    _guarded_call(anthropic_emulator, "claude-opus-4-6", SDK_OFF)
    span = otel.one("caller")
    assert _events(span, "prefill_guard.retry") == []
    (event,) = _events(span, "prefill_guard.repair")
    assert event["prefill_guard.processor.id"] == "adaptive-prefill-handler"
    assert event["prefill_guard.repair.messages_before"] == 2
    assert event["prefill_guard.repair.messages_after"] == 3
    assert SECRET not in otel.everything()


# -- metrics -----------------------------------------------------------------------------------


async def test_retries_are_counted_by_kind_processor_model_and_error_type(
    otel: Telemetry, harness: Harness
) -> None:
    harness.emulator.script(Fault(529, headers={"retry-after-ms": "1"}))
    agent = _acme_agent(harness, SDK_OFF)
    await harness.run(agent, ENDS_WITH_ASSISTANT)
    counted = {
        tuple(sorted(dict(point.attributes).items())): point.value
        for point in otel.points()["prefill_guard.retries"]
    }
    assert counted == {
        (
            ("error.type", "OverloadedError"),
            ("gen_ai.request.model", "acme-1"),
            ("prefill_guard.retry.kind", "transient"),
        ): 1,
        (
            ("error.type", "BadRequestError"),
            ("gen_ai.request.model", "acme-1"),
            ("prefill_guard.processor.id", "prefill-error-handler"),
            ("prefill_guard.retry.kind", "processor"),
        ): 1,
    }


async def test_the_attempts_of_each_model_call_are_a_histogram(
    otel: Telemetry, harness: Harness
) -> None:
    """Three requests for the first step (529, prefill 400, answered), one for the second."""
    harness.emulator.script(Fault(529, headers={"retry-after-ms": "1"}))
    harness.emulator.reply_with([tool_use("get_weather", {"city": "Oslo"})], "Sunny.")
    agent = _acme_agent(harness, SDK_OFF, tools=[get_weather])
    await harness.run(agent, ENDS_WITH_ASSISTANT)
    (point,) = otel.points()["prefill_guard.attempts"]
    assert dict(point.attributes) == {"gen_ai.request.model": "acme-1"}
    assert (point.count, point.sum, point.min, point.max) == (2, 4, 1, 3)


def test_a_call_that_gives_up_is_in_the_histogram_with_its_error_type(
    otel: Telemetry, anthropic_emulator: AnthropicEmulator
) -> None:
    anthropic_emulator.script(Fault(403))
    with anthropic_emulator.client(**SDK_OFF) as client:
        agent = Agent("claude-opus-4-6", client=client)
        with pytest.raises(anthropic.PermissionDeniedError):
            agent.generate(SECRET)
    (point,) = otel.points()["prefill_guard.attempts"]
    assert dict(point.attributes) == {
        "gen_ai.request.model": "claude-opus-4-6",
        "error.type": "PermissionDeniedError",
    }
    assert point.sum == 1


def test_an_abort_is_in_the_histogram_with_its_type(
    otel: Telemetry, acme_emulator: AnthropicEmulator
) -> None:
    with acme_emulator.client(**SDK_OFF) as client:
        agent = Agent("acme-1", client=client, error_processors=[GivesUp()])
        with pytest.raises(Abort):
            agent.generate(ENDS_WITH_ASSISTANT)
    (point,) = otel.points()["prefill_guard.attempts"]
    assert dict(point.attributes) == {"gen_ai.request.model": "acme-1", "error.type": "Abort"}


def test_a_guarded_call_the_sdk_retried_is_one_point_in_the_histogram(
    otel: Telemetry, acme_emulator: AnthropicEmulator
) -> None:
    """The SDK retries a 529 itself, then the guard repairs the prefill 400: one model call,
    one point, with the guard's two requests of the SDK's last attempt."""
    acme_emulator.script(Fault(529, headers={"retry-after-ms": "1"}))
    with (
        acme_emulator.client(max_retries=1, **SDK_OFF) as client,
        guard(client) as guarded,
    ):
        guarded.messages.create(model="acme-1", max_tokens=16, messages=ENDS_WITH_ASSISTANT)
    assert len(acme_emulator.message_requests) == 3
    (point,) = otel.points()["prefill_guard.attempts"]
    assert (point.count, point.sum) == (1, 2)


def test_a_guarded_clients_retries_are_counted(
    otel: Telemetry, acme_emulator: AnthropicEmulator
) -> None:
    with acme_emulator.client(**SDK_OFF) as client, guard(client) as guarded:
        guarded.messages.create(model="acme-1", max_tokens=16, messages=ENDS_WITH_ASSISTANT)
    points = otel.points()
    (retries,) = points["prefill_guard.retries"]
    assert retries.value == 1
    assert dict(retries.attributes)["prefill_guard.processor.id"] == "prefill-error-handler"
    (attempts,) = points["prefill_guard.attempts"]
    assert attempts.sum == 2


# -- content -----------------------------------------------------------------------------------


@pytest.fixture
def content_capture(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Content capture on by the SDK's switch, its own tracing off: the options of a client
    (1.14 and later), or the environment variable (read for a client given none)."""
    monkeypatch.setenv("ANTHROPIC_OPEN_TELEMETRY_TRACES_CONTENT_MODE", "content")
    return client_options(sdk=False, content=True)


def _sent(value: object) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = json.loads(str(value))
    return messages


async def test_with_content_capture_a_chat_span_records_the_repaired_request(
    otel: Telemetry, harness: Harness, content_capture: dict[str, Any]
) -> None:
    """The second request is the repaired one: its chat span holds the conversation with the
    reminder, as sent (the hidden reminder's metadata never)."""
    agent = _acme_agent(harness, content_capture)
    await harness.run(agent, ENDS_WITH_ASSISTANT)
    rejected, answered = sorted(otel.named("chat acme-1"), key=lambda s: s.start_time or 0)
    assert rejected.attributes is not None
    assert answered.attributes is not None
    assert [m["role"] for m in _sent(rejected.attributes["gen_ai.input.messages"])] == [
        "user",
        "assistant",
    ]
    sent = _sent(answered.attributes["gen_ai.input.messages"])
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[0]["parts"] == [{"type": "text", "content": SECRET}]
    assert "continue" in json.dumps(sent[2])
    assert "systemReminder" not in otel.everything()


def test_with_content_capture_a_guarded_clients_retry_event_holds_what_was_resent(
    otel: Telemetry, acme_emulator: AnthropicEmulator, content_capture: dict[str, Any]
) -> None:
    _guarded_call(acme_emulator, "acme-1", content_capture)
    (event,) = _events(otel.one("caller"), "prefill_guard.retry")
    sent = _sent(event["gen_ai.input.messages"])
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent == _sent_by_the_emulator(acme_emulator)
    assert "systemReminder" not in otel.everything()


def _sent_by_the_emulator(emulator: AnthropicEmulator) -> list[dict[str, Any]]:
    """The last request's messages as the conventions' parts (text only here)."""
    return [
        {
            "role": message["role"],
            "parts": [{"type": "text", "content": message["content"]}]
            if isinstance(message["content"], str)
            else [{"type": "text", "content": block["text"]} for block in message["content"]],
        }
        for message in emulator.message_requests[-1].body["messages"]
    ]


def test_with_content_capture_a_proactive_repair_event_holds_what_was_sent(
    otel: Telemetry, anthropic_emulator: AnthropicEmulator, content_capture: dict[str, Any]
) -> None:
    _guarded_call(anthropic_emulator, "claude-opus-4-6", content_capture)
    (event,) = _events(otel.one("caller"), "prefill_guard.repair")
    assert _sent(event["gen_ai.input.messages"]) == _sent_by_the_emulator(anthropic_emulator)


def test_install_never_records_content(
    otel: Telemetry, acme_emulator: AnthropicEmulator, content_capture: dict[str, Any]
) -> None:
    """One installed middleware serves clients with different switches: its events carry no
    content, whatever the environment says (guard(client) follows the client's)."""
    install()
    try:
        with (
            acme_emulator.client(**content_capture) as client,
            TRACER.start_as_current_span("caller"),
        ):
            client.messages.create(model="acme-1", max_tokens=16, messages=ENDS_WITH_ASSISTANT)
    finally:
        uninstall()
    (event,) = _events(otel.one("caller"), "prefill_guard.retry")
    assert "gen_ai.input.messages" not in event
    assert SECRET not in otel.everything()


async def test_without_content_capture_nothing_recorded_holds_text_or_tool_input(
    otel: Telemetry, harness: Harness
) -> None:
    harness.emulator.script(Fault(529, headers={"retry-after-ms": "1"}))
    harness.emulator.reply_with([tool_use("get_weather", {"city": TOOL_SECRET})], "Sunny.")
    agent = _acme_agent(harness, SDK_OFF, tools=[get_weather])
    await harness.run(agent, ENDS_WITH_ASSISTANT)
    recorded = otel.everything()
    assert "invoke_agent" in recorded
    for text in (SECRET, "How about Ash?", TOOL_SECRET, "Sunny", "continue", "test-key"):
        assert text not in recorded


# -- without a provider, without OpenTelemetry ---------------------------------------------------

_SCRIPT = textwrap.dedent(
    """
    import sys
    {setup}
    from prefill_guard import Agent, PrefillErrorHandler, telemetry
    from prefill_guard.testing import AnthropicEmulator

    print("without opentelemetry:", telemetry.trace is None)
    with AnthropicEmulator(no_prefill_models=["acme-1"]) as emulator, emulator.client() as c:
        agent = Agent("acme-1", client=c, error_processors=[PrefillErrorHandler()])
        result = agent.generate(
            [{{"role": "user", "content": "Hi"}}, {{"role": "assistant", "content": "Hello"}}]
        )
        assert result.retried_by == ("prefill-error-handler",), result.retried_by
        with agent.stream("Hi") as stream:
            assert stream.get_final_message().content
        assert telemetry.ClientTelemetry.of(c).tracer is None  # no span is even started
    print("ok")
    """
)


_BROKEN_PROVIDERS = {
    "OTEL_PYTHON_TRACER_PROVIDER": "no_such_provider",
    "OTEL_PYTHON_METER_PROVIDER": "no_such_provider",
}
"""An environment that names providers which do not load (the SDK then makes no spans)."""


@pytest.mark.parametrize(
    ("setup", "environment", "without"),
    [
        ("", {}, "False"),
        ("", _BROKEN_PROVIDERS, "False"),
        (
            # the SDK (1.14 and later) imports it itself: only prefill_guard goes without
            "import anthropic\n"
            "names = [n for n in sys.modules if n.startswith('opentelemetry')]\n"
            "for name in ['opentelemetry', *names]:\n"
            "    sys.modules[name] = None",
            {},
            "True",
        ),
    ],
    ids=["no-provider", "providers-that-do-not-load", "no-opentelemetry"],
)
def test_runs_work_with_no_provider_and_without_opentelemetry(
    setup: str, environment: dict[str, str], without: str
) -> None:
    """In a process of its own (this one has global providers set): a recovered generation and
    a stream, with nothing to record to."""
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT.format(setup=setup)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "error", **environment},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == [f"without opentelemetry: {without}", "ok"]
