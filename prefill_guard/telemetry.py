"""OpenTelemetry span events for retries and repairs, when ``opentelemetry-api`` is installed.

The ``prefill-guard[otel]`` extra installs it; without it, or with no span recording (no
tracer provider configured), :func:`record_event` does nothing. Each event is the one log record
the library writes for the same retry or repair, with the same fields (``None`` left out):
``prefill_guard.retry`` and ``prefill_guard.repair``. It goes on the current span: inside a
guarded client, the SDK's ``anthropic.messages.create`` span (anthropic 1.14 and later, tracing
on); otherwise the caller's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

try:
    from opentelemetry import trace
except ImportError:  # the optional [otel] extra
    trace = None  # type: ignore[assignment]

__all__ = ["record_event"]

_SCALARS = (str, bool, int, float)


def record_event(name: str, fields: Mapping[str, object]) -> None:
    """Add the event ``name`` with ``fields`` (the values OpenTelemetry can hold) to the
    current span, if one is recording."""
    if trace is None:
        return
    span = trace.get_current_span()
    if not span.is_recording():
        return
    attributes: dict[str, str | bool | int | float | Sequence[str]] = {}
    for key, value in fields.items():
        if isinstance(value, _SCALARS):
            attributes[key] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            attributes[key] = list(value)
    span.add_event(name, attributes)
