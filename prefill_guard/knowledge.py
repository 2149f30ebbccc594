"""What the process knows about which models reject prefill: the table's rule, and what it learned.

Every guard of a process shares one :class:`PrefillKnowledge` unless given its own
(:func:`shared_knowledge`): a model the model table cannot read (an alias, a fine-tune) is
learned from its first rejection, and no client or Agent of the process pays for it again.
:meth:`PrefillKnowledge.share` keeps it in a store (e.g. a
:class:`~prefill_guard.postgres.PostgresStore`) too, so that no process of a deployment does.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from .models import rejects_prefill

__all__ = ["REJECTS_PREFILL", "KnowledgeStore", "PrefillKnowledge", "shared_knowledge"]

logger = logging.getLogger("prefill_guard")

REJECTS_PREFILL = "rejects-prefill"
"""The fact a :class:`KnowledgeStore` keeps for each model known to reject prefill."""
RECHECK_SECONDS = 5.0
"""A model the shared store did not know is looked up there again after this long, not before."""
BACKOFF_SECONDS = 30.0
"""After a store error, the shared store is not read again for this long."""


@runtime_checkable
class KnowledgeStore(Protocol):
    """Where learned facts outlive a process and reach the others: (fact, subject) pairs."""

    def known(self, fact: str) -> list[str]:
        """The subjects stored for ``fact``, sorted."""
        ...

    def remember(self, fact: str, subject: str) -> None:
        """Store that ``fact`` holds for ``subject`` (idempotent)."""
        ...


class PrefillKnowledge:
    """Which models reject assistant prefill: the model table's rule, learned and configured ones.

    Thread-safe. ``export()`` gives the learned and configured names so that a later process can
    start with them (``preload()``). Unless told otherwise, every guard of a process shares one
    of these (:func:`shared_knowledge`), so a model learned by one client or Agent costs no
    failed request on another.
    """

    __slots__ = ("_builtin", "_lock", "_looked_up", "_models", "_quiet_until", "_store")

    def __init__(self, models: Iterable[str] = (), *, builtin: bool = True) -> None:
        self._builtin = builtin
        self._lock = threading.Lock()
        self._models: set[str] = set()
        self._store: KnowledgeStore | None = None
        self._looked_up: dict[str, float] = {}
        """When each model was last looked up in the store and not found (monotonic time)."""
        self._quiet_until = 0.0
        """No store reads before this (monotonic time): the store failed."""
        self.preload(models)

    def share(self, store: KnowledgeStore | None) -> None:
        """Keep what is learned in ``store`` as well, and read what other processes stored
        there: each model learned there, by any process, costs no rejected request here.

        What the store holds is read now, and again when a model not known here is asked about
        (a request ending with an assistant turn to such a model): at most once per model every
        ``RECHECK_SECONDS``. Each model learned here is written at once. These are synchronous
        calls, short on a healthy database; a store error is logged, the knowledge goes on
        without the store, and it is not read again for ``BACKOFF_SECONDS``. ``share(None)``
        stops sharing.
        """
        if store is not None and not isinstance(store, KnowledgeStore):
            raise TypeError(f"store must be a KnowledgeStore (e.g. PostgresStore), got {store!r}")
        with self._lock:
            self._store = store
            self._looked_up.clear()
            self._quiet_until = 0.0
        self._refresh()

    def rejects_prefill(self, model: str) -> bool:
        """Whether ``model`` is known not to accept a conversation ending with an assistant turn:
        by the model table's version rule (``prefill_guard.models``), or learned, or configured
        (here, or by any process sharing the store)."""
        if self._builtin and rejects_prefill(model):
            return True
        with self._lock:
            if model in self._models:
                return True
            if self._store is None:
                return False
        return self._refresh(model)

    def learn(self, model: str) -> bool:
        """Remember that ``model`` rejected prefill; True if this is news."""
        with self._lock:
            if model in self._models:
                return False
            self._models.add(model)
            store = self._store
        logger.info("learned that model %r rejects assistant prefill", model)
        if store is not None:
            try:
                store.remember(REJECTS_PREFILL, model)
            except Exception as exc:
                logger.warning("could not store that model %r rejects prefill: %s", model, exc)
        return True

    def _refresh(self, model: str | None = None) -> bool:
        """Read the shared store's models into this knowledge; whether ``model`` is among them."""
        now = time.monotonic()
        with self._lock:
            store = self._store
            recent = model is not None and now - self._looked_up.get(model, -math.inf) < (
                RECHECK_SECONDS
            )
            if store is None or recent or now < self._quiet_until:
                return False
        try:
            stored = store.known(REJECTS_PREFILL)
        except Exception as exc:
            with self._lock:
                self._quiet_until = now + BACKOFF_SECONDS
            logger.warning("could not read the models known to reject prefill: %s", exc)
            return False
        with self._lock:
            self._models.update(stored)
            if model is None or model in self._models:
                return model is not None
            self._looked_up[model] = now
            return False

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
        """Forget every learned and configured name (the model table's rule stays), and stop
        sharing through a store (what the store holds stays there)."""
        with self._lock:
            self._models.clear()
            self._store = None
            self._looked_up.clear()


_SHARED = PrefillKnowledge()


def shared_knowledge() -> PrefillKnowledge:
    """The process-wide knowledge that every guard uses unless given its own: the one piece of
    learned state a process shares (thread-safe). ``shared_knowledge().clear()`` resets it."""
    return _SHARED
