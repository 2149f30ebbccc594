"""The adaptive prefill guard: pay the extra round trip at most once per model.

:class:`PrefillErrorHandler` is purely reactive: every conversation that ends with an assistant
turn costs a rejected request first. :class:`AdaptivePrefillGuard` adds the same hidden reminder
*before* the request is sent when the model is known not to accept prefill. Known means: a
built-in list of the no-prefill families, plus every model that rejected prefill while this
guard watched, plus any the user configures. A wrong entry costs one harmless reminder, never a
failure, and a model that accepts prefill is never touched unless someone lists it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from anthropic import APIError

from .messages import MessageList
from .processors import (
    PREFILL_REMINDER_TYPE,
    ProcessAPIErrorResult,
    RequestParams,
    append_system_reminder,
    appends_only,
    changes_only_on_retry,
    is_prefill_rejection,
    only_on_prefill,
)

__all__ = ["BUILTIN_NO_PREFILL_FAMILIES", "AdaptivePrefillGuard", "PrefillKnowledge"]

logger = logging.getLogger("prefill_guard")

BUILTIN_NO_PREFILL_FAMILIES: tuple[str, ...] = (
    "claude-opus-4-6",
    "claude-opus-4-7",
    "claude-opus-4-8",
    "claude-sonnet-4-6",
    "claude-opus-5",
    "claude-sonnet-5",
    "claude-haiku-5",
    "claude-mythos-5",
)
"""Model-name fragments of the families known to reject prefill (Claude 4.6 and later).

Matched as substrings of the lower-cased model id, so dated names and Bedrock / Vertex ids
(``anthropic.claude-opus-4-6-v1:0``, ``claude-opus-4-6@20260101``) match too. Models released
later are learned from their first rejection."""


class PrefillKnowledge:
    """Which models reject assistant prefill: built-in families, learned and configured ones.

    Thread-safe. ``export()`` gives the learned and configured names so that a later process can
    start with them (``preload()``).
    """

    __slots__ = ("_builtin", "_lock", "_models")

    def __init__(self, models: Iterable[str] = (), *, builtin: bool = True) -> None:
        self._builtin = BUILTIN_NO_PREFILL_FAMILIES if builtin else ()
        self._lock = threading.Lock()
        self._models: set[str] = set()
        self.preload(models)

    def rejects_prefill(self, model: str) -> bool:
        """Whether ``model`` is known not to accept a conversation ending with an assistant turn."""
        lowered = model.lower()
        if any(family in lowered for family in self._builtin):
            return True
        with self._lock:
            return model in self._models

    def learn(self, model: str) -> bool:
        """Remember that ``model`` rejected prefill; True if this is news."""
        with self._lock:
            if model in self._models:
                return False
            self._models.add(model)
        logger.info("learned that model %r rejects assistant prefill", model)
        return True

    def preload(self, models: Iterable[str]) -> None:
        """Add model names known (from a previous run, or configuration) to reject prefill."""
        if isinstance(models, str):
            raise TypeError("preload() takes a list of model names, not a single str")
        names = list(models)
        for index, name in enumerate(names):
            if not isinstance(name, str) or not name:
                raise TypeError(f"models[{index}]: expected a non-empty model name, got {name!r}")
        with self._lock:
            self._models.update(names)

    def export(self) -> list[str]:
        """The learned and configured model names, sorted (the built-in list is not included)."""
        with self._lock:
            return sorted(self._models)


class AdaptivePrefillGuard:
    """Adds the hidden ``continue`` reminder before sending, for models known to reject prefill.

    Register it *before* :class:`~prefill_guard.PrefillErrorHandler`: as a ``before_send`` step it
    prepares the request, and as an error processor it only watches, learning each model whose
    request is rejected for prefill (it never asks for a retry itself; the handler repairs).
    The reminder is the handler's, tagged identically, so UIs and stores treat both alike.
    """

    id = "adaptive-prefill-guard"
    name = "Adaptive Prefill Guard"

    def __init__(self, knowledge: PrefillKnowledge | None = None) -> None:
        self.knowledge = knowledge if knowledge is not None else PrefillKnowledge()

    @appends_only  # so the pipeline need not copy the conversation before every request
    @only_on_prefill  # so a request that ends with a user turn skips it (and all the work for it)
    def before_send(self, *, messages: MessageList, params: RequestParams) -> None:
        """Append the reminder if the conversation ends with an assistant turn and the model
        is known to reject prefill (after a ``tool_use``, it answers the calls first)."""
        last = messages.last
        model = params.get("model")
        if last is None or last["role"] != "assistant" or not isinstance(model, str):
            return
        if self.knowledge.rejects_prefill(model):
            append_system_reminder(messages, "continue", PREFILL_REMINDER_TYPE)

    @changes_only_on_retry  # it only learns; it never changes the request
    def process_api_error(
        self,
        *,
        error: APIError,
        messages: MessageList,
        retry_count: int,
        params: RequestParams,
    ) -> ProcessAPIErrorResult | None:
        """Learn the model of a prefill rejection; leave the repair to the handler."""
        model = params.get("model")
        if isinstance(model, str) and is_prefill_rejection(error):
            self.knowledge.learn(model)
        return None

    def __repr__(self) -> str:
        return f"AdaptivePrefillGuard(learned={self.knowledge.export()!r})"
