"""An emulator of the Anthropic Messages API, for tests: over real HTTP or in memory.

`AnthropicEmulator` is a real HTTP server on 127.0.0.1 that the real `anthropic` SDK can talk to.
It answers ``POST /v1/messages`` with the same body shapes and error texts as the real API,
including the 400 that Claude 4.6-and-later models give for an assistant-message prefill, and
streams ``"stream": true`` requests as chunked server-sent events in the API's event order. It
can be scripted with `Fault` answers to exercise retry logic: HTTP errors (529, 429 with
retry-after, HTML 502 pages, ...), ``error`` events mid-stream, dropped connections and stalls.
``emulator.client(in_memory=True)`` (or an http client on ``emulator.transport()``) gets the
same answers without a socket or ``start()``.

Model-specific rejections (prefill, ``temperature`` with ``top_p``, deprecated sampling
parameters, ``thinking.type.enabled``, forced ``tool_choice``, orphaned ``tool_use`` blocks and
the whitespace rules) are *rules*, each applied to the models its predicate selects; see
`RULE_NAMES`, `DEFAULT_RULES` and ``AnthropicEmulator(rules=...)``. An optional
``max_input_tokens`` answers the API's "prompt is too long" 400. The first failing check
answers, in the order `prefill_guard.testing.checks` gives. A reply may be text or content
blocks, ``tool_use`` blocks (`tool_use`) included, and `AnthropicEmulator.reply_with` queues
replies, so a test can script a model that calls tools. ``GET /v1/models`` and
``/v1/models/{id}`` list the models of `prefill_guard.models.KNOWN_MODELS`.

The parts: `rules` (the API's texts and the model rules), `checks` (the validation),
`faults` (`Fault`, `RecordedRequest`), `api_errors` (error bodies and `make_api_error`),
`responder` (the API logic and state, free of I/O), `server` (`AnthropicEmulator`, on
`http.server`) and `transport` (the in-memory `httpx2.MockTransport`).
"""

from __future__ import annotations

from .api_errors import make_api_error
from .faults import Fault, FaultKind, RecordedRequest, RequestPredicate
from .responder import DEFAULT_REPLY_TEXT, Reply, tool_use
from .rules import (
    DEFAULT_RULES,
    FORCED_TOOL_CHOICE_MESSAGE,
    PREFILL_MESSAGE,
    RULE_NAMES,
    TEMPERATURE_DEPRECATED_MESSAGE,
    TEMPERATURE_TOP_P_MESSAGE,
    THINKING_ENABLED_MESSAGE,
    TRAILING_WHITESPACE_MESSAGE,
    WHITESPACE_TEXT_MESSAGE,
    ModelRule,
    deprecated_parameter_message,
    duplicate_tool_use_message,
    model_deprecates_sampling,
    model_rejects_enabled_thinking,
    model_rejects_forced_tool_choice,
    model_rejects_prefill,
    model_rejects_temperature_with_top_p,
    orphaned_tool_use_message,
    prompt_too_long_message,
    unexpected_tool_result_message,
)
from .server import AnthropicEmulator

__all__ = [
    "DEFAULT_REPLY_TEXT",
    "DEFAULT_RULES",
    "FORCED_TOOL_CHOICE_MESSAGE",
    "PREFILL_MESSAGE",
    "RULE_NAMES",
    "TEMPERATURE_DEPRECATED_MESSAGE",
    "TEMPERATURE_TOP_P_MESSAGE",
    "THINKING_ENABLED_MESSAGE",
    "TRAILING_WHITESPACE_MESSAGE",
    "WHITESPACE_TEXT_MESSAGE",
    "AnthropicEmulator",
    "Fault",
    "FaultKind",
    "ModelRule",
    "RecordedRequest",
    "Reply",
    "RequestPredicate",
    "deprecated_parameter_message",
    "duplicate_tool_use_message",
    "make_api_error",
    "model_deprecates_sampling",
    "model_rejects_enabled_thinking",
    "model_rejects_forced_tool_choice",
    "model_rejects_prefill",
    "model_rejects_temperature_with_top_p",
    "orphaned_tool_use_message",
    "prompt_too_long_message",
    "tool_use",
    "unexpected_tool_result_message",
]
