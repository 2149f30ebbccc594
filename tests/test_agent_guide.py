"""docs/agent.md runs: its Python blocks are executed here, exactly as the guide shows them.

Each block is preceded by ``<!-- guide-example: NAME -->``; a Python block without a marker
fails the suite. The blocks use a ``client`` they do not make: here it is an emulator client,
and ``get_weather`` (defined in the first block) is shared with the blocks after it, as on the
page.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import anthropic
import pytest

from prefill_guard import Abort, Agent
from prefill_guard.testing import DEFAULT_REPLY_TEXT, AnthropicEmulator, Fault, tool_use

from .conftest import treat_like

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "agent.md"
TEXT = GUIDE.read_text(encoding="utf-8")
_FENCE = re.compile(r"^```python\n", re.MULTILINE)
_MARKED = re.compile(
    r"^<!-- guide-example: (?P<name>[\w-]+) -->\n```python\n(?P<code>.*?)^```",
    re.MULTILINE | re.DOTALL,
)
EXAMPLES = {m["name"]: m["code"] for m in _MARKED.finditer(TEXT)}
REMINDER = {"role": "user", "content": "<system-reminder>continue</system-reminder>"}


def run_example(
    client: Any,
    *names: str,
    replace: dict[str, str] | None = None,
    namespace: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Execute the named blocks in order in one namespace holding ``client``; return it.

    ``replace`` rewrites text in the blocks first (to run one on another model); ``namespace``
    carries on in the namespace an earlier call returned.
    """
    if namespace is None:
        namespace = {"__name__": "agent_guide", "client": client}
    for name in names:
        code = EXAMPLES[name]
        for old, new in (replace or {}).items():
            code = code.replace(old, new)
        exec(compile(code, f"{GUIDE}#{name}", "exec"), namespace)
    return namespace


def _wire(messages: Any) -> list[Any]:
    """The messages as sent: hidden metadata left out."""
    return list(messages.to_api())


def test_every_python_block_in_the_guide_is_marked_and_run() -> None:
    """No untested code in the guide: every ```python block carries a marker used here."""
    assert len(_FENCE.findall(TEXT)) == len(EXAMPLES)
    assert set(EXAMPLES) == {"tool-loop", "state", "abort", "stream-events", "handoff"}


def test_tool_loop_runs_the_tool_and_answers_after_it(
    anthropic_emulator: AnthropicEmulator, capsys: Any
) -> None:
    """The first example: the model calls get_weather, the Agent runs it and sends the result,
    and the run ends with the reply after it (two steps, two requests)."""
    anthropic_emulator.reply_with([tool_use("get_weather", {"city": "Oslo"}, id="toolu_01")])
    with anthropic_emulator.client() as client:
        namespace = run_example(client, "tool-loop")
    result = namespace["result"]
    assert result.text == DEFAULT_REPLY_TEXT
    assert [step.number for step in result.steps] == [0, 1]
    assert result.tool_calls[0].result["content"] == "18 C and sunny in Oslo"
    first, second = anthropic_emulator.message_requests
    assert first.body["system"] == "You answer questions about the weather."
    assert first.body["tools"][0]["name"] == "get_weather"
    assert first.body["tools"][0]["input_schema"]["properties"]["city"]["type"] == "string"
    assert second.body["messages"][-1]["content"][0]["tool_use_id"] == "toolu_01"
    assert capsys.readouterr().out == f"{DEFAULT_REPLY_TEXT}\n0 ['get_weather'] 1\n1 [] 1\n"


def test_state_example_counts_the_rejection_in_the_runs_state(
    anthropic_emulator: AnthropicEmulator, capsys: Any
) -> None:
    """The state example prints what its comment says: one rejection, at step 0; the
    PrefillErrorHandler after the counter repairs it (two requests)."""
    with anthropic_emulator.client() as client:
        result = run_example(client, "state")["result"]
    assert result.state == {"rejections": 1, "steps": [0]}
    assert result.retried_by == ("prefill-error-handler",)
    assert len(anthropic_emulator.message_requests) == 2
    assert capsys.readouterr().out == "{'rejections': 1, 'steps': [0]}\n"


def test_abort_example_stops_the_run_on_a_rate_limit(
    anthropic_emulator: AnthropicEmulator, capsys: Any
) -> None:
    """The abort example: a 429 reaches the processor (no transient retry), which raises
    Abort; the caller catches it, and no step had completed (result None). One request."""
    anthropic_emulator.script(Fault(429))
    with anthropic_emulator.client() as client:
        run_example(client, "abort")
    assert capsys.readouterr().out == "the API is rate limiting us; try again in a minute None\n"
    assert len(anthropic_emulator.message_requests) == 1


def test_abort_example_without_a_rate_limit_returns_the_reply(
    anthropic_emulator: AnthropicEmulator, capsys: Any
) -> None:
    """Without a rate limit the processor does nothing: the call returns, nothing printed."""
    with anthropic_emulator.client() as client:
        run_example(client, "abort")
    assert capsys.readouterr().out == ""
    assert len(anthropic_emulator.message_requests) == 1


def test_abort_example_processor_raises_abort_for_the_caller(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """The example's agent, on a 429: the caller gets the Abort (not the 429), no result."""
    with anthropic_emulator.client() as client:
        agent = run_example(client, "abort")["agent"]
        anthropic_emulator.script(Fault(429))
        with pytest.raises(Abort) as info:
            agent.generate("Hello")
    assert info.value.reason == "the API is rate limiting us; try again in a minute"
    assert info.value.result is None


def test_stream_events_example_shows_text_tools_and_steps_in_order(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """The stream example's UI string: step 0's text, the tool running and answered, step 0
    done, then step 1's text and done."""
    with anthropic_emulator.client() as client:
        namespace = run_example(client, "tool-loop")
        anthropic_emulator.reply_with(
            [{"type": "text", "text": "Checking. "}, tool_use("get_weather", {"city": "Oslo"})]
        )
        run_example(client, "stream-events", namespace=namespace)
    assert "".join(namespace["shown"]) == (
        "Checking. [running get_weather][get_weather answered][step 0 done]"
        f"{DEFAULT_REPLY_TEXT}[step 1 done]"
    )


def test_handoff_on_a_known_model_takes_one_request(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """The hand-off: the forecaster gets a conversation ending with triage's reply; the model
    is known to reject prefill, so the reminder goes with the first request (one request)."""
    with anthropic_emulator.client() as client:
        namespace = run_example(client, "tool-loop", "handoff")
    first, second = namespace["first"], namespace["second"]
    assert first.messages[-1]["role"] == "assistant"
    assert second.text == DEFAULT_REPLY_TEXT
    requests = anthropic_emulator.message_requests
    assert len(requests) == 3  # the tool-loop block's agent made one
    handed_over = requests[-1].body
    assert handed_over["system"] == "You are the weather specialist."
    assert handed_over["tools"][0]["name"] == "get_weather"
    assert second.messages is first.messages  # the forecaster carried on in it
    assert handed_over["messages"] == [*_wire(second.messages)[:2], REMINDER]
    assert [m["role"] for m in second.messages] == ["user", "assistant", "user", "assistant"]


def test_handoff_on_a_model_it_cannot_know_takes_two_requests_then_one(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """The same hand-off on an alias the model table cannot read: the first rejection is
    repaired (two requests), and the process has learned it: the next hand-off takes one."""
    treat_like(anthropic_emulator, {"acme-opus": "claude-opus-4-6"})
    on_alias = {'"claude-opus-4-6"': '"acme-opus"'}
    with anthropic_emulator.client() as client:
        namespace = run_example(client, "tool-loop", "handoff", replace=on_alias)
        before_second = len(anthropic_emulator.message_requests)
        run_example(client, "tool-loop", "handoff", replace=on_alias)
    requests = anthropic_emulator.message_requests
    # 1 (tool-loop) + 1 (triage) + 2 (forecaster: rejected, then repaired)
    assert before_second == 4
    assert [r.body["model"] for r in requests[:4]] == ["acme-opus"] * 4
    rejected, repaired = requests[2:4]
    handed = _wire(namespace["second"].messages)[:2]
    assert rejected.body["messages"] == handed
    assert repaired.body["messages"] == [*handed, REMINDER]
    assert namespace["second"].retried_by == ("prefill-error-handler",)
    # the second time round: 1 + 1 + 1
    assert len(requests) == before_second + 3
    assert requests[-1].body["messages"][-1] == REMINDER


def test_handoff_conversation_ending_with_assistant_is_rejected_without_processors(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """What the hand-off guards against: the same conversation sent with no processors is
    the API's prefill rejection."""
    with anthropic_emulator.client() as client:
        namespace = run_example(client, "tool-loop")
        first = run_example(client, "handoff", namespace=namespace)["triage"].generate("Hi")
        bare = Agent("claude-opus-4-6", client=client, error_processors=[])
        with pytest.raises(anthropic.BadRequestError, match="prefill"):
            bare.generate(first.messages)
