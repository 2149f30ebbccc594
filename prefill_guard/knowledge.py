"""What the process knows about which models reject prefill: the table's rule, and what it learned.

Every guard of a process shares one :class:`PrefillKnowledge` unless given its own
(:func:`shared_knowledge`): a model the model table cannot read (an alias, a fine-tune) is
learned from its first rejection, and no client or Agent of the process pays for it again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from .models import rejects_prefill

__all__ = ["PrefillKnowledge", "shared_knowledge"]

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
