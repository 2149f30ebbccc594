"""prefill_guard: keep agents on the Anthropic API alive when the API rejects a request.

An ordered pipeline of pluggable error processors may repair a failed request's conversation
and ask for a retry; the built-in :class:`PrefillErrorHandler` answers the "assistant message
prefill" 400 of Claude 4.6 and later models. The rest of the library is in its submodules:
:mod:`prefill_guard.processors` (every built-in), :mod:`prefill_guard.stores`,
:mod:`prefill_guard.testing` (the API emulator), :mod:`prefill_guard.messages`,
:mod:`prefill_guard.params` (helpers for processor authors) and :mod:`prefill_guard.models`.
"""

from importlib.metadata import version as _version

from .agent import Agent
from .contract import (
    Abort,
    ParamsProcessor,
    ProcessAPIErrorResult,
    Processor,
    RequestParams,
)
from .errors import api_error_type, api_message, is_prefill_rejection, partial_text
from .knowledge import shared_knowledge
from .messages import MessageList
from .middleware import ErrorProcessorMiddleware, guard, install, uninstall
from .processors import AdaptivePrefillHandler, PrefillErrorHandler, default_processors
from .retries import OnRetry, RetryDetails
from .run import Attempt, RunResult, StepResult
from .stores import MemoryStore, SQLiteStore, StoreError, ThreadStore
from .streaming import AgentStream, AsyncAgentStream

__all__ = [
    "Abort",
    "AdaptivePrefillHandler",
    "Agent",
    "AgentStream",
    "AsyncAgentStream",
    "Attempt",
    "ErrorProcessorMiddleware",
    "MemoryStore",
    "MessageList",
    "OnRetry",
    "ParamsProcessor",
    "PrefillErrorHandler",
    "ProcessAPIErrorResult",
    "Processor",
    "RequestParams",
    "RetryDetails",
    "RunResult",
    "SQLiteStore",
    "StepResult",
    "StoreError",
    "ThreadStore",
    "api_error_type",
    "api_message",
    "default_processors",
    "guard",
    "install",
    "is_prefill_rejection",
    "partial_text",
    "shared_knowledge",
    "uninstall",
]

__version__ = _version("prefill-guard")
