"""The adaptive prefill guard: pay the extra round trip at most once per model.

:class:`PrefillErrorHandler` is purely reactive: every conversation that ends with an assistant
turn costs a rejected request first. :class:`AdaptivePrefillGuard` adds the same hidden reminder
*before* the request is sent when the model is known not to accept prefill. Known means: the
model table's version rule (:mod:`prefill_guard.models`: Claude 4.6 and later), plus every
model that rejected prefill in this process, plus any the user configures. A wrong entry costs
one harmless reminder, never a failure; a model that accepts prefill is never touched unless
someone lists it; and a request that continues server-side state (a refusal fallback's credit
token, a server-side thread, a compaction) is never touched at all.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from anthropic import APIError

from .messages import MessageList
from .models import continues_server_state, rejects_prefill
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

__all__ = ["AdaptivePrefillGuard", "PrefillKnowledge", "shared_knowledge"]

logger = logging.getLogger("prefill_guard")


class PrefillKnowledge:
    """Which models reject assistant prefill: the model table's rule, learned and configured ones.

    Thread-safe. ``export()`` gives the learned and configured names so that a later process can
    start with them (``preload()``). Unless told otherwise, every guard of a process shares one
    of these (:func:`shared_knowledge`), so a model learned by one client or Agent costs no
    failed request on another.
    """

    __slots__ = ("_builtin", "_lock", "_models")

    def __init__(self, models: Iterable[str] = (), *, builtin: bool = True) -> None:
        self._builtin = builtin
        self._lock = threading.Lock()
        self._models: set[str] = set()
        self.preload(models)

    def rejects_prefill(self, model: str) -> bool:
        """Whether ``model`` is known not to accept a conversation ending with an assistant turn:
        by the model table's version rule (``prefill_guard.models``), or learned, or configured."""
        if self._builtin and rejects_prefill(model):
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
        """The learned and configured model names, sorted (the model table's rule is not)."""
        with self._lock:
            return sorted(self._models)

    def clear(self) -> None:
        """Forget every learned and configured name (the model table's rule stays)."""
        with self._lock:
            self._models.clear()


_SHARED = PrefillKnowledge()


def shared_knowledge() -> PrefillKnowledge:
    """The process-wide knowledge that every guard uses unless given its own: the one piece of
    learned state a process shares (thread-safe). ``shared_knowledge().clear()`` resets it."""
    return _SHARED


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
        self.knowledge = knowledge if knowledge is not None else shared_knowledge()

    @appends_only  # so the pipeline need not copy the conversation before every request
    @only_on_prefill  # so a request that ends with a user turn skips it (and all the work for it)
    def before_send(self, *, messages: MessageList, params: RequestParams) -> None:
        """Append the reminder if the conversation ends with an assistant turn, the model is
        known to reject prefill, and the request continues no server-side state (see
        :func:`~prefill_guard.models.continues_server_state`); after a ``tool_use``, it
        answers the calls first."""
        last = messages.last
        model = params.get("model")
        if last is None or last["role"] != "assistant" or not isinstance(model, str):
            return
        if self.knowledge.rejects_prefill(model) and not continues_server_state(messages, params):
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
