"""The README's first example runs, as printed, with the SDK's client made from the environment
pointed at the emulator (ANTHROPIC_BASE_URL, ANTHROPIC_API_KEY)."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

from prefill_guard.testing import DEFAULT_REPLY_TEXT, AnthropicEmulator, tool_use

README = Path(__file__).resolve().parents[1] / "README.md"
_MARKED = re.compile(
    r"^<!-- readme-example: (?P<name>[\w-]+) -->\n```python\n(?P<code>.*?)^```",
    re.MULTILINE | re.DOTALL,
)
EXAMPLES = {m["name"]: m["code"] for m in _MARKED.finditer(README.read_text(encoding="utf-8"))}


def test_usage_example_runs_a_tool_then_answers_a_prefill_in_one_request(
    anthropic_emulator: AnthropicEmulator, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Usage: the model calls get_weather, the Agent runs it and the model answers (two
    requests); then the conversation ending with an assistant turn goes out once, with the
    reminder, and the UI view hides it."""
    monkeypatch.setenv("ANTHROPIC_BASE_URL", anthropic_emulator.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-emulator")
    anthropic_emulator.reply_with([tool_use("get_weather", {"city": "Oslo"})])
    namespace: dict[str, Any] = {"__name__": "readme"}
    exec(compile(EXAMPLES["usage"], f"{README}#usage", "exec"), namespace)
    requests = anthropic_emulator.message_requests
    assert len(requests) == 3
    assert requests[0].body["tools"][0]["name"] == "get_weather"
    assert requests[1].body["messages"][-1]["content"][0]["content"] == "18 C and sunny in Oslo"
    assert requests[2].body["messages"][-1] == {
        "role": "user",
        "content": "<system-reminder>continue</system-reminder>",
    }
    ui = [
        {"role": "user", "content": "Suggest a name for a grey cat."},
        {"role": "assistant", "content": "How about Ash?"},
        {"role": "assistant", "content": [{"type": "text", "text": DEFAULT_REPLY_TEXT}]},
    ]
    api = [*ui[:2], requests[2].body["messages"][-1], ui[2]]
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == ["['get_weather']", DEFAULT_REPLY_TEXT, DEFAULT_REPLY_TEXT]
    assert [ast.literal_eval(line) for line in lines[3:]] == [ui, api]


def test_the_first_python_example_is_the_usage_example_that_runs_a_tool() -> None:
    """A reader meets the Agent running a tool first: no other Python block comes before it."""
    text = README.read_text(encoding="utf-8")
    first = text.index("```python")
    assert text[:first].endswith("<!-- readme-example: usage -->\n")
    assert "tools=[" in EXAMPLES["usage"]
