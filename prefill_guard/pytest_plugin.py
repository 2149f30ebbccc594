"""pytest plugin for prefill_guard: provides the `anthropic_emulator` fixture.

Registered through the ``pytest11`` entry point, so installing prefill_guard makes the fixture
available to every test suite without a conftest import.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from prefill_guard.testing import AnthropicEmulator

__all__ = ["anthropic_emulator"]


@pytest.fixture
def anthropic_emulator() -> Iterator[AnthropicEmulator]:
    """A started `AnthropicEmulator` with default settings, stopped again after the test.

    Point the SDK at it with ``anthropic_emulator.client()`` or ``anthropic_emulator.base_url``.
    """
    emulator = AnthropicEmulator().start()
    try:
        yield emulator
    finally:
        emulator.stop()
