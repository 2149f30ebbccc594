"""prefill_guard: keep agents on the Anthropic API alive when the API rejects a request.

An ordered pipeline of pluggable error processors may repair a failed request's conversation
and ask for a retry; the built-in :class:`PrefillErrorHandler` answers the "assistant message
prefill" 400 of Claude 4.6 and later models.
"""

from .adaptive import AdaptivePrefillGuard, PrefillKnowledge, shared_knowledge
from .agent import Agent, AnthropicClient
from .errors import api_error_type, api_message
from .messages import SYSTEM_REMINDER_KEY, MessageList, RawMessage, is_system_reminder
from .middleware import ErrorProcessorMiddleware, guard, install, installed, uninstall
from .pipeline import Attempt, Pipeline, RunResult
from .processors import (
    PREFILL_REMINDER_TYPE,
    SAMPLING_PARAMETERS,
    TOOL_CHOICE_REMINDER_TYPE,
    AdaptiveThinkingHandler,
    DeprecatedSamplingHandler,
    ForcedToolChoiceHandler,
    OrphanedToolUseHandler,
    ParamsProcessor,
    PrefillErrorHandler,
    ProcessAPIErrorResult,
    Processor,
    RequestParams,
    SamplingConflictHandler,
    WhitespaceHandler,
    append_system_reminder,
    default_processors,
    drop_request_params,
    effort_for_budget,
    interrupted_tool_results,
    is_prefill_rejection,
    request_param,
    set_request_param,
)
from .retries import OnRetry, RetryDetails, is_transient
from .stores import MemoryStore, SQLiteStore, StoreError, ThreadStore
from .streaming import AgentStream, AsyncAgentStream, partial_text

__all__ = [
    "PREFILL_REMINDER_TYPE",
    "SAMPLING_PARAMETERS",
    "SYSTEM_REMINDER_KEY",
    "TOOL_CHOICE_REMINDER_TYPE",
    "AdaptivePrefillGuard",
    "AdaptiveThinkingHandler",
    "Agent",
    "AgentStream",
    "AnthropicClient",
    "AsyncAgentStream",
    "Attempt",
    "DeprecatedSamplingHandler",
    "ErrorProcessorMiddleware",
    "ForcedToolChoiceHandler",
    "MemoryStore",
    "MessageList",
    "OnRetry",
    "OrphanedToolUseHandler",
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
    "SamplingConflictHandler",
    "StoreError",
    "ThreadStore",
    "WhitespaceHandler",
    "api_error_type",
    "api_message",
    "append_system_reminder",
    "default_processors",
    "drop_request_params",
    "effort_for_budget",
    "guard",
    "install",
    "installed",
    "interrupted_tool_results",
    "is_prefill_rejection",
    "is_system_reminder",
    "is_transient",
    "partial_text",
    "request_param",
    "set_request_param",
    "shared_knowledge",
    "uninstall",
]

__version__ = "0.1.0"
