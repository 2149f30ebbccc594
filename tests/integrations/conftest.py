"""The frameworks' tests let the frameworks' own warnings through (shown, not raised).

A framework that warns about itself or its dependencies (a pydantic schema note inside
LiteLLM, an unclosed connection it leaves behind) must not fail our suite; every warning that
prefill_guard or these tests raise still does, as everywhere else. What a framework's test
leaves for the garbage collector is collected at its own teardown, so its warnings are that
test's and not those of whatever test runs next.
"""

from __future__ import annotations

import gc
import os

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: no cost map download

_OTHERS_WARNINGS = pytest.mark.filterwarnings("default::Warning:(?!prefill_guard|tests)")


_HERE = os.path.dirname(__file__)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if str(item.path).startswith(_HERE):
            item.add_marker(_OTHERS_WARNINGS)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """After the test's fixtures (its event loop too), before pytest collects what was raised
    in finalizers (its own trylast hook, registered before this conftest, runs after)."""
    if str(item.path).startswith(_HERE):
        gc.collect()
