"""The frameworks' tests let the frameworks' own warnings through (shown, not raised).

A framework that warns about itself or its dependencies (a pydantic schema note inside
LiteLLM, an unclosed connection it leaves behind), at import or in a test, must not fail our
suite; every warning that prefill_guard or these tests raise still does, as everywhere else.
What a framework's test leaves for the garbage collector is collected at its own teardown, so
its warnings are that test's and not those of whatever test runs next.
"""

from __future__ import annotations

import gc
import os
import warnings
from collections.abc import Generator, Iterator

import pytest

from prefill_guard import uninstall
from prefill_guard.testing import AnthropicEmulator

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: no cost map download

_OTHERS = "(?!prefill_guard|tests)"
"""The modules of everyone else (a regular expression matched at the module name's start)."""
_OTHERS_WARNINGS = pytest.mark.filterwarnings(f"default::Warning:{_OTHERS}")


_HERE = os.path.dirname(__file__)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if str(item.path).startswith(_HERE):
            item.add_marker(_OTHERS_WARNINGS)


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, object, object]:
    """The same while a framework's test module is imported: its import may warn too."""
    if not str(collector.path).startswith(_HERE):
        return (yield)
    with warnings.catch_warnings():
        warnings.filterwarnings("default", category=Warning, module=_OTHERS)
        return (yield)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """After the test's fixtures (its event loop too), before pytest collects what was raised
    in finalizers (its own trylast hook, registered before this conftest, runs after)."""
    if str(item.path).startswith(_HERE):
        gc.collect()


@pytest.fixture
def emulator_env(
    anthropic_emulator: AnthropicEmulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AnthropicEmulator]:
    """The emulator, where a framework's own anthropic client finds it (the SDK reads
    ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY); uninstall() after the test."""
    monkeypatch.setenv("ANTHROPIC_BASE_URL", anthropic_emulator.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    yield anthropic_emulator
    uninstall()


def roles_sent(emulator: AnthropicEmulator) -> list[str]:
    """The roles of the last Messages request's conversation, as it went out."""
    return [message["role"] for message in emulator.message_requests[-1].body["messages"]]


def assert_repaired(emulator: AnthropicEmulator) -> None:
    """The reactive repair happened: the rejected request, then one ending with a user turn."""
    assert len(emulator.message_requests) == 2
    assert roles_sent(emulator) == ["user", "assistant", "user"]
