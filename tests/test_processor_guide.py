"""docs/processors.md runs: its Python blocks are executed here, exactly as the guide shows them.

Each block in the guide is preceded by ``<!-- guide-example: NAME -->`` (code, executed) or
``<!-- guide-shape: NAME -->`` (a data shape, evaluated and compared with what the library
really produces). A Python block without a marker fails the suite, so nothing in the guide goes
untested; the guide's own ``test_*`` functions are called with the real pytest fixtures.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import anthropic
import pytest

from prefill_guard import (
    Agent,
    MessageList,
    PrefillErrorHandler,
    ProcessAPIErrorResult,
    default_processors,
    guard,
)
from prefill_guard.testing import (
    PREFILL_MESSAGE,
    AnthropicEmulator,
    Fault,
    make_api_error,
    prompt_too_long_message,
)

from .conftest import Harness, treat_like

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "processors.md"
TEXT = GUIDE.read_text(encoding="utf-8")
_FENCE = re.compile(r"^```python\n", re.MULTILINE)
_MARKED = re.compile(
    r"^<!-- guide-(?P<kind>example|shape): (?P<name>[\w-]+) -->\n```python\n(?P<code>.*?)^```",
    re.MULTILINE | re.DOTALL,
)
BLOCKS = [(m["kind"], m["name"], m["code"]) for m in _MARKED.finditer(TEXT)]
EXAMPLES = {name: code for kind, name, code in BLOCKS if kind == "example"}
SHAPES = {name: code for kind, name, code in BLOCKS if kind == "shape"}


def run_example(*names: str) -> dict[str, Any]:
    """Execute the named guide blocks, in order, in one fresh namespace; return it."""
    namespace: dict[str, Any] = {"__name__": "processor_guide"}
    for name in names:
        exec(compile(EXAMPLES[name], f"{GUIDE}#{name}", "exec"), namespace)
    return namespace


def shape(name: str) -> Any:
    return eval(compile(SHAPES[name], f"{GUIDE}#{name}", "eval"), {})


def test_every_python_block_in_the_guide_is_marked_and_run() -> None:
    """No untested code in the guide: every ```python block carries a marker used here."""
    assert len(_FENCE.findall(TEXT)) == len(BLOCKS)
    assert len({name for _, name, _ in BLOCKS}) == len(BLOCKS)
    assert set(EXAMPLES) == {
        "drop-top-k",
        "continue-before-prefill",
        "async-processor",
        "default-stack",
        "unit-test",
        "emulator-rules",
        "trim-oldest-turns",
        "trim-oldest-turns-test",
        "fallback-model",
        "fallback-model-test",
        "log-api-errors",
        "log-api-errors-test",
    }
    assert set(SHAPES) == {"prefill-reminder", "prefill-reminder-after-tool-use"}


# -- the contract sections ----------------------------------------------------------------------


def test_documented_reminder_shapes_are_what_the_handler_appends() -> None:
    """Both shapes in the PrefillErrorHandler section are exactly what it appends."""
    error = make_api_error(400, PREFILL_MESSAGE)
    plain = MessageList([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}])
    PrefillErrorHandler().process_api_error(error=error, messages=plain, retry_count=0)
    assert plain[-1] == shape("prefill-reminder")
    tool_use = {"type": "tool_use", "id": "toolu_01A", "name": "f", "input": {}}
    after_tool = MessageList(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [tool_use]}]
    )
    PrefillErrorHandler().process_api_error(error=error, messages=after_tool, retry_count=0)
    assert after_tool[-1] == shape("prefill-reminder-after-tool-use")


def test_drop_top_k_and_its_unit_test() -> None:
    """The parameter-editing example and the guide's unit test of it."""
    namespace = run_example("drop-top-k", "unit-test")
    namespace["test_drop_top_k_unit"]()


async def test_drop_top_k_end_to_end(harness: Harness) -> None:
    """DropTopK repairs Opus 4.7's deprecation of top_k sent through extra_body."""
    drop_top_k = run_example("drop-top-k")["DropTopK"]
    agent = harness.agent(
        "claude-opus-4-7", error_processors=[drop_top_k()], extra_body={"top_k": 5}
    )
    result = await harness.run(agent, "hi")
    first, retry = harness.emulator.message_requests
    assert first.body["top_k"] == 5
    assert "top_k" not in retry.body
    assert result.retried_by == ("drop-top-k",)
    assert agent.default_params["extra_body"] == {"top_k": 5}


async def test_async_processor_example(anthropic_emulator: AnthropicEmulator) -> None:
    """The async example is awaited by agenerate and refused by generate."""
    counter = run_example("async-processor")["AsyncErrorCounter"]()
    conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"}]
    anthropic_emulator.script(Fault(529))
    treat_like(anthropic_emulator, {"acme-opus": "claude-opus-4-6"})
    async with anthropic_emulator.async_client() as client:
        agent = Agent(
            "acme-opus",  # rejects prefill; an alias the adaptive guard cannot know
            client=client,
            error_processors=[counter, *default_processors()],
            max_retries=0,
        )
        with pytest.raises(anthropic.OverloadedError):
            await agent.agenerate(conversation)
        result = await agent.agenerate(conversation)
    assert counter.counts == {"overloaded_error": 1, "invalid_request_error": 1}
    assert result.retried_by == ("prefill-error-handler",)
    with anthropic_emulator.client() as sync_client:
        sync_agent = Agent("claude-opus-4-6", client=sync_client, error_processors=[counter])
        with pytest.raises(TypeError, match="async"):
            sync_agent.generate("hi")


def test_continue_before_prefill_example(anthropic_emulator: AnthropicEmulator) -> None:
    """The guide's before_send hook: through the Agent and a guarded client, a prefill goes
    out with the reminder (1 request each, on a model that rejects prefill), and a request
    that ends with a user turn goes out as the caller wrote it."""
    hook = run_example("continue-before-prefill")["ContinueBeforePrefill"]()
    prefill: list[Any] = [
        {"role": "user", "content": "A haiku?"},
        {"role": "assistant", "content": "Snow"},
    ]
    asked: list[Any] = [{"role": "user", "content": "A haiku?"}]
    reminder = {"role": "user", "content": "<system-reminder>continue</system-reminder>"}
    with anthropic_emulator.client() as client:
        agent = Agent("claude-opus-4-6", client=client, error_processors=[hook])
        agent.generate(prefill)
        agent.generate(asked)
        guarded = guard(client, [hook])
        for messages in (prefill, asked):
            guarded.messages.create(model="claude-opus-4-6", max_tokens=64, messages=messages)
    wire = [r.body["messages"] for r in anthropic_emulator.message_requests]
    assert wire == [[*prefill, reminder], asked] * 2


def test_default_stack_example_takes_exactly_three_requests(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """The guide's Agent settings, on an emulator client: 2 requests, as documented."""
    guide_agent = run_example("default-stack")["agent"]
    assert [type(p) for p in guide_agent.pipeline.processors] == [
        type(p) for p in default_processors()
    ]
    with anthropic_emulator.client() as client:
        agent = Agent(
            guide_agent.model,
            client=client,
            error_processors=default_processors(),
            **guide_agent.default_params,
        )
        result = agent.generate(
            [{"role": "user", "content": "A haiku?"}, {"role": "assistant", "content": "Snow"}]
        )
    assert len(anthropic_emulator.message_requests) == 2
    assert result.retried_by == ("sampling-conflict-handler",)


def test_emulator_rules_example() -> None:
    """The configured emulator applies the rules as the comments say."""
    emulator: AnthropicEmulator = run_example("emulator-rules")["emulator"]
    assert emulator.rejects_prefill("my-finetune")
    assert not emulator.rejects_prefill("claude-opus-4-6")
    assert emulator.rule_applies("forced_tool_choice", "claude-opus-6-1")
    assert not emulator.rule_applies("forced_tool_choice", "claude-opus-5-5")
    assert not emulator.rule_applies("orphaned_tool_use", "claude-opus-4-6")
    assert emulator.rule_applies("thinking_enabled", "claude-opus-4-7")  # a default kept
    assert emulator.max_input_tokens == 100_000


# -- example 1: trimming the oldest turns -------------------------------------------------------


def test_trim_example_guide_test(anthropic_emulator: AnthropicEmulator) -> None:
    """The guide's own end-to-end test of TrimOldestTurns."""
    namespace = run_example("trim-oldest-turns", "trim-oldest-turns-test")
    namespace["test_trims_the_oldest_turns"](anthropic_emulator)


async def test_trim_example_in_every_driver(harness: Harness) -> None:
    """A MessageList is trimmed in place; tool results are never split from their calls."""
    trim = run_example("trim-oldest-turns")["TrimOldestTurns"]
    harness.emulator.max_input_tokens = 30
    tool_use = {"type": "tool_use", "id": "t1", "name": "lookup", "input": {}}
    answer = {"type": "tool_result", "tool_use_id": "t1", "content": "one two three four"}
    conversation = MessageList(
        [
            {"role": "user", "content": "alpha beta gamma delta epsilon zeta eta theta"},
            {"role": "assistant", "content": [tool_use]},
            {"role": "user", "content": [answer]},
            {"role": "assistant", "content": "iota kappa lambda mu nu xi omicron pi"},
            {"role": "user", "content": "rho sigma tau upsilon"},
            {"role": "assistant", "content": "phi chi"},
            {"role": "user", "content": "psi omega, and what now?"},
        ]
    )
    agent = harness.agent("claude-opus-4-6", error_processors=[trim()])
    result = await harness.run(agent, conversation)
    assert len(harness.emulator.message_requests) == 2
    assert result.retried_by == ("trim-oldest-turns",)
    assert conversation[0] == {"role": "user", "content": "rho sigma tau upsilon"}
    assert len(conversation) == 4  # three kept, plus the reply


def test_trim_example_declines_when_nothing_can_go() -> None:
    """Only the kept tail, or a used-up budget, or another error: None and no change."""
    trim = run_example("trim-oldest-turns")["TrimOldestTurns"]
    error = make_api_error(400, prompt_too_long_message(300, 100))
    short = MessageList([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    assert trim().process_api_error(error=error, messages=short, retry_count=0) is None
    long = MessageList([{"role": "user", "content": str(n)} for n in range(6)])
    assert trim(max_trims=1).process_api_error(error=error, messages=long, retry_count=1) is None
    other = make_api_error(400, "max_tokens: Field required")
    assert trim().process_api_error(error=other, messages=long, retry_count=0) is None
    assert len(long) == 6
    assert trim().process_api_error(error=error, messages=long, retry_count=0) == (
        ProcessAPIErrorResult(retry=True)
    )
    assert [m["content"] for m in long] == ["4", "5"]


# -- example 2: a fallback model after repeated 529s -------------------------------------------


def test_fallback_example_guide_test(anthropic_emulator: AnthropicEmulator) -> None:
    """The guide's own end-to-end test of FallbackModelOnOverload."""
    namespace = run_example("fallback-model", "fallback-model-test")
    namespace["test_falls_back_after_repeated_529s"](anthropic_emulator)


async def test_fallback_example_in_every_driver(harness: Harness) -> None:
    """529s (or overloaded SSE error events when streaming) three times: the fallback answers."""
    fallback = run_example("fallback-model")["FallbackModelOnOverload"]
    fault = Fault.sse_error() if harness.streaming else Fault(529)
    harness.emulator.script(fault, fault, fault)
    agent = harness.agent(error_processors=[fallback("claude-haiku-4-5")])
    result = await harness.run(agent, "Hello")
    models = [r.body["model"] for r in harness.emulator.message_requests]
    assert models == ["claude-opus-4-6"] * 3 + ["claude-haiku-4-5"]
    assert [d.kind for d in harness.retries] == ["transient", "transient", "processor"]
    assert result.retried_by == ("fallback-model-on-overload",)


async def test_fallback_example_never_loops(harness: Harness) -> None:
    """An overloaded fallback: the caller gets the OverloadedError after 2 x 3 requests."""
    fallback = run_example("fallback-model")["FallbackModelOnOverload"]
    harness.emulator.script(*[Fault(529)] * 6)
    agent = harness.agent(error_processors=[fallback("claude-haiku-4-5")])
    with pytest.raises(anthropic.OverloadedError):
        await harness.run(agent, "Hello")
    assert len(harness.emulator.message_requests) == 6


# -- example 3: a logging-only processor -------------------------------------------------------


def test_logging_example_guide_test(
    anthropic_emulator: AnthropicEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """The guide's own end-to-end test of LogAPIErrors in front of the default stack."""
    namespace = run_example("log-api-errors", "log-api-errors-test")
    namespace["test_logs_and_lets_the_repairs_work"](anthropic_emulator, caplog)


def test_logging_example_never_retries_or_changes_anything(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """It returns None, leaves the conversation alone and logs no message content."""
    log_api_errors = run_example("log-api-errors")["LogAPIErrors"]
    caplog.set_level(logging.WARNING, logger="audit")
    messages = MessageList([{"role": "user", "content": "my secret question"}])
    error = make_api_error(529, request_id="req_0123")
    processor = log_api_errors(logging.getLogger("audit"))
    assert processor.process_api_error(error=error, messages=messages, retry_count=0) is None
    assert list(messages) == [{"role": "user", "content": "my secret question"}]
    [record] = caplog.records
    assert record.getMessage() == (
        "Anthropic API error: status=529 type=overloaded_error request_id=req_0123 "
        "message=Overloaded"
    )
