"""OpenTelemetry for runs: spans, span events and metrics, when ``opentelemetry-api`` is installed.

The ``prefill-guard[otel]`` extra installs it; without it nothing here does anything. With it
but no tracer provider configured, a run makes no span at all (the provider is looked up once
per client: :class:`ClientTelemetry`), and the metrics go to OpenTelemetry's no-op instruments.

- **Spans**, by the GenAI semantic conventions: an Agent run is an ``invoke_agent {name}`` span;
  each model call a ``chat {model}`` CLIENT span under it, unless the anthropic SDK makes its own
  ``anthropic.messages.create`` span for the call (its tracing is on for the client: it then
  nests under the run's span); each tool call an ``execute_tool {tool}`` span. They go to the
  tracer provider that the client's ``open_telemetry`` option names, else to the global one:
  where the SDK's own spans go.
- **Span events**: each retry and repair log record is also an event on the current span (inside
  a guarded client, the SDK's call span), ``prefill_guard.retry`` or ``prefill_guard.repair``,
  with the record's fields.
- **Metrics**, on the global meter provider: the counter ``prefill_guard.retries`` and the
  histogram ``prefill_guard.attempts`` (requests per model call).
- **Content** is recorded only when content capture is on, by the SDK's own switch (the
  client's ``open_telemetry`` option with ``traces.content_mode = "content"``, or
  ``ANTHROPIC_OPEN_TELEMETRY_TRACES_CONTENT_MODE=content``): then the messages a request actually
  sent (repairs included, hidden metadata never) are ``gen_ai.input.messages``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from anthropic.types import Message, ToolUseBlock

try:
    from opentelemetry import metrics, trace
    from opentelemetry.metrics import Counter, Histogram
    from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer
except ImportError:  # the optional [otel] extra
    metrics = None  # type: ignore[assignment]
    trace = None  # type: ignore[assignment]

__all__ = [
    "CONTENT_MODE_VARIABLE",
    "ChatSpan",
    "ClientTelemetry",
    "RunTrace",
    "captures_content",
    "input_messages",
    "record_attempts",
    "record_event",
    "record_retry",
]

logger = logging.getLogger("prefill_guard")

SCOPE = "prefill_guard"
_VERSION = version("prefill-guard")
CONTENT_MODE_VARIABLE = "ANTHROPIC_OPEN_TELEMETRY_TRACES_CONTENT_MODE"
"""The SDK's switch for content capture, for a client given no ``open_telemetry`` option."""
_PROVIDER = {"gen_ai.provider.name": "anthropic"}
_RETRY_METRIC_KEYS = (
    "prefill_guard.retry.kind",
    "prefill_guard.processor.id",
    "gen_ai.request.model",
    "error.type",
)
_SCALARS = (str, bool, int, float)
_NOTHING = contextlib.nullcontext()


def _instruments() -> tuple[Counter, Histogram] | None:
    """The counter and the histogram, or ``None`` if OpenTelemetry cannot make them (it is not
    installed, or the environment names a meter provider that does not load): the library then
    records no metrics, as the SDK then makes no spans. opentelemetry-api before 1.30 takes no
    bucket advice; the histogram then has the provider's default buckets."""
    if metrics is None:
        return None
    try:
        meter = metrics.get_meter(SCOPE, _VERSION)
        retries = meter.create_counter(
            "prefill_guard.retries",
            unit="{retry}",
            description="Requests sent again: unchanged (transient) or repaired by a processor",
        )
        histogram = functools.partial(
            meter.create_histogram,
            "prefill_guard.attempts",
            unit="{attempt}",
            description="Requests sent for one model call, the retries included",
        )
        try:
            attempts = histogram(explicit_bucket_boundaries_advisory=[1, 2, 3, 4, 5, 6, 8, 10])
        except TypeError:
            attempts = histogram()
    except Exception:
        logger.warning("OpenTelemetry cannot make meters; no metrics are recorded", exc_info=True)
        return None
    return retries, attempts


_INSTRUMENTS = _instruments()


def _attributes(fields: Mapping[str, object]) -> dict[str, Any]:
    """The fields OpenTelemetry can hold (scalars and lists of str); ``None`` left out."""
    attributes: dict[str, Any] = {}
    for key, value in fields.items():
        if isinstance(value, _SCALARS):
            attributes[key] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            attributes[key] = list(value)
    return attributes


def record_event(
    name: str, fields: Mapping[str, object], content: Sequence[Mapping[str, Any]] | None = None
) -> None:
    """Add the event ``name`` with ``fields`` to the current span, if one is recording; with
    ``content`` (the messages about to be sent, when content capture is on), as
    ``gen_ai.input.messages``."""
    if trace is None:
        return
    span = trace.get_current_span()
    if not span.is_recording():
        return
    attributes = _attributes(fields)
    if content is not None:
        attributes["gen_ai.input.messages"] = input_messages(content)
    span.add_event(name, attributes)


def record_retry(
    fields: Mapping[str, object], content: Sequence[Mapping[str, Any]] | None = None
) -> None:
    """A retry: an event on the current span (:func:`record_event`) and one on the
    ``prefill_guard.retries`` counter, by kind, processor, model and error type."""
    record_event("prefill_guard.retry", fields, content)
    if _INSTRUMENTS is not None:
        retries, _ = _INSTRUMENTS
        retries.add(1, _attributes({key: fields.get(key) for key in _RETRY_METRIC_KEYS}))


def record_attempts(count: int, model: str, error: BaseException | None) -> None:
    """One model call's requests on the ``prefill_guard.attempts`` histogram, with the
    ``error.type`` that ended it, if one did."""
    if _INSTRUMENTS is None:
        return
    _, attempts = _INSTRUMENTS
    attributes = {"gen_ai.request.model": model}
    if error is not None:
        attributes["error.type"] = type(error).__name__
    attempts.record(count, attributes)


def _sdk_options(client: object) -> Mapping[str, Any] | None:
    """The client's resolved ``open_telemetry`` option (anthropic 1.14 and later), or ``None``."""
    options = getattr(client, "open_telemetry", None)
    return options if isinstance(options, Mapping) else None


def _content_mode(options: Mapping[str, Any] | None) -> bool:
    """Whether the SDK's switch says to capture content: the client's resolved option, or,
    for a client without one, the environment variable."""
    if options is not None:
        return bool(options["traces"]["content_mode"] == "content")
    return os.environ.get(CONTENT_MODE_VARIABLE, "").lower() == "content"


def captures_content(client: object = None) -> bool:
    """Whether content capture is on for ``client``, by the SDK's own switch: the client's
    ``open_telemetry`` option (anthropic 1.14 and later), else the environment variable."""
    return _content_mode(_sdk_options(client))


def _tracer(options: Mapping[str, Any] | None) -> Tracer | None:
    """The tracer for a client's runs: from the provider that its option names, else the global
    one; ``None`` when there is none (the global one is still OpenTelemetry's placeholder)."""
    if trace is None:
        return None
    try:
        provider = options.get("tracer_provider") if options is not None else None
        if provider is None:
            provider = trace.get_tracer_provider()
            if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
                return None
        tracer: Tracer = provider.get_tracer(SCOPE, _VERSION)
    except Exception:  # a provider named by OTEL_PYTHON_TRACER_PROVIDER that does not load
        logger.warning("OpenTelemetry cannot give a tracer; the runs make no spans", exc_info=True)
        return None
    return tracer


@dataclass(frozen=True)
class ClientTelemetry:
    """A client's OpenTelemetry settings, as its runs need them, read once per client (the SDK
    fixes its own when it makes the client; the Agent reads these when it first uses it).

    ``sdk_traces``: the SDK makes a span for each call itself (anthropic 1.14 and later, its
    tracing on). ``captures_content``: the SDK's content capture is on (:func:`captures_content`).
    ``tracer``: for the runs' spans, from the provider that the client's option names, else
    the global one; ``None`` without OpenTelemetry or a provider.
    """

    sdk_traces: bool = False
    captures_content: bool = False
    tracer: Tracer | None = None

    @classmethod
    def of(cls, client: object) -> ClientTelemetry:
        """The settings of ``client``."""
        options = _sdk_options(client)
        return cls(
            sdk_traces=options is not None and bool(options["traces"]["enabled"]),
            captures_content=_content_mode(options),
            tracer=_tracer(options),
        )


def _part(block: Mapping[str, Any]) -> dict[str, Any]:
    """One content block as a part of the conventions' message (text, reasoning, a tool call
    or its response; any other block by its type only)."""
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "content": block.get("text")}
    if kind == "thinking":
        return {"type": "reasoning", "content": block.get("thinking")}
    if kind in ("tool_use", "server_tool_use"):
        return {
            "type": "tool_call",
            "id": block.get("id"),
            "name": block.get("name"),
            "arguments": block.get("input"),
        }
    if kind == "tool_result":
        return {
            "type": "tool_call_response",
            "id": block.get("tool_use_id"),
            "response": block.get("content"),
        }
    return {"type": f"anthropic_{kind}"}


def input_messages(messages: Sequence[Mapping[str, Any]]) -> str:
    """Messages in the API's shape as the conventions' ``gen_ai.input.messages`` JSON: a role
    and parts each (text, reasoning, tool calls and their responses; other blocks by type)."""
    converted = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            parts = [{"type": "text", "content": content}]
        else:
            parts = [_part(block) for block in content or () if isinstance(block, Mapping)]
        converted.append({"role": message.get("role"), "parts": parts})
    return json.dumps(converted, ensure_ascii=False, default=str)


def _failed(span: Span, error: BaseException) -> None:
    span.set_attribute("error.type", type(error).__name__)
    status_code = getattr(error, "status_code", None)
    if isinstance(status_code, int):
        span.set_attribute("http.response.status_code", status_code)
    span.set_status(StatusCode.ERROR, type(error).__name__)


class ChatSpan:
    """One model call's ``chat {model}`` span, or nothing (``span`` is ``None``)."""

    def __init__(self, span: Span | None) -> None:
        self.span = span

    def current(self) -> AbstractContextManager[object]:
        """Make the span the current one (an HTTP client's own spans nest under it)."""
        if self.span is None:
            return _NOTHING
        return trace.use_span(self.span, record_exception=False, set_status_on_exception=False)

    def end(self, message: Message | None = None, error: BaseException | None = None) -> None:
        """End the span, with the reply's id, model, stop reason and token usage, or the
        error; a second call does nothing."""
        span, self.span = self.span, None
        if span is None:
            return
        if error is not None:
            _failed(span, error)
        elif message is not None:
            span.set_attribute("gen_ai.response.id", message.id)
            span.set_attribute("gen_ai.response.model", message.model)
            if message.stop_reason is not None:
                span.set_attribute("gen_ai.response.finish_reasons", [message.stop_reason])
            span.set_attribute("gen_ai.usage.input_tokens", message.usage.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", message.usage.output_tokens)
        span.end()


class RunTrace:
    """The spans of one Agent run, started when first used.

    Nothing is made without OpenTelemetry or a tracer provider. A run whose trace is sampled
    out keeps its unrecorded span current and makes no spans under it. When the SDK makes a
    span for each model call itself (``settings.sdk_traces``), the run makes no ``chat`` spans
    of its own.
    """

    @classmethod
    def off(cls) -> RunTrace:
        """A run's trace that makes no span (a run made outside an Agent)."""
        return cls(ClientTelemetry(), agent="", model="")

    def __init__(self, settings: ClientTelemetry, *, agent: str, model: str) -> None:
        self.sdk_traces = settings.sdk_traces
        self.captures_content = settings.captures_content
        self._tracer = settings.tracer
        self._agent = agent
        self._model = model
        self._span: Span | None = None
        self._ended = False

    def _run_span(self) -> Span | None:
        """The run's span, started on first use. One that does not record (the trace sampled
        out) is kept too: current, it carries the trace's context to the SDK's spans."""
        if self._tracer is None or self._ended:
            return None
        if self._span is None:
            attributes = {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": self._agent,
                "gen_ai.request.model": self._model,
                **_PROVIDER,
            }
            self._span = self._tracer.start_span(
                f"invoke_agent {self._agent}", attributes=attributes
            )
        return self._span

    def _recording_parent(self) -> Span | None:
        """The run's span if it records: the parent of the spans the run makes itself."""
        span = self._run_span()
        return span if span is not None and span.is_recording() else None

    def current(self) -> AbstractContextManager[object]:
        """Make the run's span the current one: what the SDK and processors record inside
        (its call spans, the retry and repair events) goes under it."""
        span = self._run_span()
        if span is None:
            return _NOTHING
        return trace.use_span(span, record_exception=False, set_status_on_exception=False)

    def whole(self) -> AbstractContextManager[object]:
        """The run's span current for the whole block, and ended with it (with the error
        that left it, if one did)."""
        if self._run_span() is None:
            return _NOTHING
        return self._current_until_ended()

    @contextlib.contextmanager
    def _current_until_ended(self) -> Iterator[None]:
        try:
            with self.current():
                yield
        except BaseException as error:
            self.end(error)
            raise
        self.end()

    def finished(self, stop_reason: str, steps: int) -> None:
        """Say on the run's span how the run ended."""
        if self._span is not None:
            self._span.set_attribute("gen_ai.response.finish_reasons", [stop_reason])
            self._span.set_attribute("prefill_guard.run.steps", steps)

    def end(self, error: BaseException | None = None) -> None:
        """End the run's span (with ``error``'s type and an error status); once."""
        span, self._span, self._ended = self._span, None, True
        if span is None:
            return
        if error is not None:
            _failed(span, error)
        span.end()

    def chat(self, request: Mapping[str, Any]) -> ChatSpan:
        """The ``chat {model}`` span of one model call, under the run's, not made current;
        none when the SDK makes its own."""
        parent = None if self.sdk_traces else self._recording_parent()
        if parent is None or self._tracer is None:
            return ChatSpan(None)
        model = request.get("model", self._model)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model,
            **_PROVIDER,
        }
        if isinstance(request.get("max_tokens"), int):
            attributes["gen_ai.request.max_tokens"] = request["max_tokens"]
        if self.captures_content:
            attributes["gen_ai.input.messages"] = input_messages(request.get("messages") or ())
        span = self._tracer.start_span(
            f"chat {model}",
            context=trace.set_span_in_context(parent),
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        return ChatSpan(span)

    def sender(
        self, send: Callable[[dict[str, Any]], Message]
    ) -> Callable[[dict[str, Any]], Message]:
        """``send`` with each request in its own ``chat`` span (:meth:`chat`)."""
        if self._tracer is None or self.sdk_traces:
            return send

        def traced(request: dict[str, Any]) -> Message:
            chat = self.chat(request)
            try:
                with chat.current():
                    message = send(request)
            except BaseException as error:
                chat.end(error=error)
                raise
            chat.end(message)
            return message

        return traced

    def async_sender(
        self, send: Callable[[dict[str, Any]], Awaitable[Message]]
    ) -> Callable[[dict[str, Any]], Awaitable[Message]]:
        """The async twin of :meth:`sender`."""
        if self._tracer is None or self.sdk_traces:
            return send

        async def traced(request: dict[str, Any]) -> Message:
            chat = self.chat(request)
            try:
                with chat.current():
                    message = await send(request)
            except BaseException as error:
                chat.end(error=error)
                raise
            chat.end(message)
            return message

        return traced

    @contextlib.contextmanager
    def tool(self, use: ToolUseBlock) -> Iterator[Callable[[bool], None]]:
        """An ``execute_tool {name}`` span around one tool call, current inside (the tool's own
        spans nest under it); the block calls what it yields with whether the tool failed."""
        parent = self._recording_parent()
        if parent is None or self._tracer is None:
            yield _ignore
            return
        attributes = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": use.name,
            "gen_ai.tool.call.id": use.id,
            "gen_ai.tool.type": "function",
        }
        span = self._tracer.start_span(
            f"execute_tool {use.name}",
            context=trace.set_span_in_context(parent),
            attributes=attributes,
        )

        def answered(is_error: bool) -> None:
            if is_error:
                span.set_attribute("error.type", "tool_error")
                span.set_status(StatusCode.ERROR, "tool_error")

        try:
            with trace.use_span(span, record_exception=False, set_status_on_exception=False):
                yield answered
        except BaseException as error:
            _failed(span, error)
            raise
        finally:
            span.end()


def _ignore(is_error: bool) -> None:
    """What :meth:`RunTrace.tool` yields when there is no span."""
