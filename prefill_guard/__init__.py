"""prefill_guard: keep agents on the Anthropic API alive when the API rejects a request.

An ordered pipeline of pluggable error processors may repair a failed request's conversation
and ask for a retry; the built-in :class:`PrefillErrorHandler` answers the "assistant message
prefill" 400 of Claude 4.6 and later models.
"""

from .adaptive import BUILTIN_NO_PREFILL_FAMILIES, AdaptivePrefillGuard, PrefillKnowledge
from .agent import Agent, AnthropicClient
from .errors import api_error_type, api_message
from .messages import SYSTEM_REMINDER_KEY, MessageList, RawMessage, is_system_reminder
from .middleware import ErrorProcessorMiddleware, guard, install, installed, uninstall
from .pipeline import Attempt, Pipeline, RunResult
from .processors import (
    PREFILL_REMINDER_TYPE,
    ParamsProcessor,
    PrefillErrorHandler,
    ProcessAPIErrorResult,
    Processor,
    RequestParams,
    is_prefill_rejection,
)
from .retries import OnRetry, RetryDetails, is_transient
from .stores import MemoryStore, SQLiteStore, StoreError, ThreadStore
from .streaming import AgentStream, AsyncAgentStream, partial_text

__all__ = [
    "BUILTIN_NO_PREFILL_FAMILIES",
    "PREFILL_REMINDER_TYPE",
    "SYSTEM_REMINDER_KEY",
    "AdaptivePrefillGuard",
    "Agent",
    "AgentStream",
    "AnthropicClient",
    "AsyncAgentStream",
    "Attempt",
    "ErrorProcessorMiddleware",
    "MemoryStore",
    "MessageList",
    "OnRetry",
    "ParamsProcessor",
    "Pipeline",
    "PrefillErrorHandler",
    "PrefillKnowledge",
    "ProcessAPIErrorResult",
    "Processor",
    "RawMessage",
    "RequestParams",
    "RetryDetails",
    "RunResult",
    "SQLiteStore",
    "StoreError",
    "ThreadStore",
    "api_error_type",
    "api_message",
    "guard",
    "install",
    "installed",
    "is_prefill_rejection",
    "is_system_reminder",
    "is_transient",
    "partial_text",
    "uninstall",
]

__version__ = "0.1.0"
