"""Run code once an optional package is imported: how install() reaches LiteLLM.

LiteLLM is optional and is often imported after :func:`~prefill_guard.install` (DSPy and
openai-agents import it when first used), and importing it only to hook into it would make
``install()`` load a large package that the program may never use. :func:`when_imported`
runs a callback right after the package's first import instead, or at once when it is
imported already, through a finder on ``sys.meta_path`` (the standard import machinery).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType

__all__ = ["when_imported"]

logger = logging.getLogger("prefill_guard")


def when_imported(name: str, then: Callable[[], None]) -> Callable[[], None]:
    """Call ``then`` once the top-level package ``name`` is imported (now, if it is already)
    and return what cancels that if it has not happened yet.

    Nothing is done for a package that is not installed. ``then`` runs in the importing
    thread, after the package's own module ran and before its importer gets it; an error
    it raises is logged, and the import goes on.
    """
    if name in sys.modules:
        _run(then, name)
        return _nothing
    if importlib.util.find_spec(name) is None:
        return _nothing
    finder = _Finder(name, then)
    sys.meta_path.insert(0, finder)
    return finder.cancel


def _nothing() -> None:
    pass


def _run(then: Callable[[], None], name: str) -> None:
    try:
        then()
    except Exception:  # the package's import, or install(), must not fail for it
        logger.exception("prefill_guard could not hook into %s", name)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds the package with the other finders and runs ``then`` after it is executed."""

    def __init__(self, name: str, then: Callable[[], None]) -> None:
        self.name = name
        self.then = then
        self._lock = threading.Lock()
        self._done = False

    def cancel(self) -> None:
        with self._lock:
            self._done = True
            with contextlib.suppress(ValueError):
                sys.meta_path.remove(self)

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        with self._lock:
            if self._done:
                return None
            self._done = True
            with contextlib.suppress(ValueError):
                sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _ThenLoader(spec.loader, self.then)
        return spec


class _ThenLoader(importlib.abc.Loader):
    """The package's own loader, then ``then``; the module keeps its own loader."""

    def __init__(self, loader: importlib.abc.Loader, then: Callable[[], None]) -> None:
        self.loader = loader
        self.then = then

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        _run(self.then, module.__name__)
