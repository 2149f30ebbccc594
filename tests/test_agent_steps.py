"""The Agent as an agent runner: tools, steps, processors at every step, abort, defaults.

Every test runs through the real SDK over HTTP against the emulator, which is scripted to
reply with tool calls; the drivers are generate, agenerate, stream and astream where it
applies (the ``harness`` fixture).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import anthropic
import pytest
from anthropic.lib.tools import ToolError

from prefill_guard import (
    Abort,
    Agent,
    MessageList,
    PrefillErrorHandler,
    ProcessAPIErrorResult,
    SQLiteStore,
)
from prefill_guard.streaming import StepEvent, TextEvent, ToolCallEvent, ToolResultEvent
from prefill_guard.testing import (
    DEFAULT_REPLY_TEXT,
    PREFILL_MESSAGE,
    AnthropicEmulator,
    Fault,
    tool_use,
)

from .conftest import Harness, treat_like

MODEL = "claude-opus-4-6"
PREFILL_400 = Fault(
    400, {"type": "error", "error": {"type": "invalid_request_error", "message": PREFILL_MESSAGE}}
)
QUESTION = [{"role": "user", "content": "What is the weather in Oslo?"}]


def get_weather(city: str) -> str:
    """The weather in a city.

    Args:
        city: the city's name
    """
    return f"18 C and sunny in {city}"


def _weather_call(city: str = "Oslo", id: str = "toolu_01") -> dict[str, Any]:
    return tool_use("get_weather", {"city": city}, id=id)


def _last_user_turn(emulator: AnthropicEmulator) -> Any:
    return emulator.message_requests[-1].body["messages"][-1]


async def test_a_tool_call_is_run_and_answered_in_the_next_request(harness: Harness) -> None:
    """The reply calls get_weather; the Agent runs it, sends its result in the next user turn,
    and the run ends with the reply after it: two steps, two requests."""
    harness.emulator.reply_with([{"type": "text", "text": "Let me check. "}, _weather_call()])
    agent = harness.agent(tools=[get_weather])
    result = await harness.run(agent, QUESTION)
    assert len(harness.emulator.message_requests) == 2
    assert harness.emulator.message_requests[0].body["tools"][0]["name"] == "get_weather"
    assert _last_user_turn(harness.emulator) == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01", "content": "18 C and sunny in Oslo"}
        ],
    }
    assert [len(step.tool_calls) for step in result.steps] == [1, 0]
    assert result.tool_calls[0].result["content"] == "18 C and sunny in Oslo"
    assert result.text == DEFAULT_REPLY_TEXT
    assert result.stop_reason == "end_turn"
    assert [m["role"] for m in result.messages] == ["user", "assistant", "user", "assistant"]
    if harness.streaming:
        assert "".join(harness.received) == "Let me check. " + DEFAULT_REPLY_TEXT


async def test_a_tool_that_raises_gives_an_error_result_and_the_run_goes_on(
    harness: Harness,
) -> None:
    """A ToolError's content is the result; any other exception is named in it; either way
    is_error is set and the model gets the next step."""

    def failing(city: str) -> str:
        """Always fails."""
        raise ToolError([{"type": "text", "text": f"no data for {city}"}])

    def buggy(city: str) -> str:
        """Has a bug."""
        raise KeyError(city)

    harness.emulator.reply_with(
        [
            tool_use("failing", {"city": "Oslo"}, id="toolu_a"),
            tool_use("buggy", {"city": "Oslo"}, id="toolu_b"),
        ]
    )
    result = await harness.run(harness.agent(tools=[failing, buggy]), QUESTION)
    first, second = _last_user_turn(harness.emulator)["content"]
    assert first == {
        "type": "tool_result",
        "tool_use_id": "toolu_a",
        "content": [{"type": "text", "text": "no data for Oslo"}],
        "is_error": True,
    }
    assert second["is_error"] is True
    assert second["content"] == "KeyError: 'Oslo'"
    assert result.stop_reason == "end_turn"


async def test_input_the_sdk_refuses_and_an_unknown_tool_are_error_results(
    harness: Harness,
) -> None:
    """The SDK's validation of the input (a missing argument) and a tool no one defined both
    answer the call with is_error, so the model can correct itself."""
    harness.emulator.reply_with(
        [
            tool_use("get_weather", {"town": "Oslo"}, id="toolu_a"),
            tool_use("get_news", {}, id="toolu_b"),
        ]
    )
    await harness.run(harness.agent(tools=[get_weather]), QUESTION)
    refused, unknown = _last_user_turn(harness.emulator)["content"]
    assert refused["is_error"] is True
    assert "Invalid arguments for function get_weather" in refused["content"]
    assert "city" in refused["content"]  # the validation's own detail
    assert unknown == {
        "type": "tool_result",
        "tool_use_id": "toolu_b",
        "content": "there is no tool named 'get_news'",
        "is_error": True,
    }


async def test_a_tool_with_no_function_ends_the_run_for_the_caller(harness: Harness) -> None:
    """A client tool given as a definition dict: its call is the caller's to answer, so the
    run ends with that reply (stop_reason tool_use) after one request."""
    definition = {"name": "ask_user", "description": "Ask.", "input_schema": {"type": "object"}}
    harness.emulator.reply_with([tool_use("ask_user", {}, id="toolu_c")])
    result = await harness.run(harness.agent(tools=[get_weather, definition]), QUESTION)
    assert len(harness.emulator.message_requests) == 1
    assert result.stop_reason == "tool_use"
    assert result.message.content[0].type == "tool_use"
    assert result.messages[-1]["role"] == "assistant"


async def test_the_step_bound_ends_a_run_that_keeps_calling_tools(harness: Harness) -> None:
    """Every reply calls the tool: the run stops after max_steps requests, its last tool calls
    answered, and says it stopped at the bound."""
    harness.emulator.reply_with(*[[_weather_call(id=f"toolu_{n}")] for n in range(5)])
    result = await harness.run(harness.agent(tools=[get_weather], max_steps=3), QUESTION)
    assert len(harness.emulator.message_requests) == 3
    assert result.stop_reason == "max_steps"
    assert len(result.steps) == 3
    assert result.messages[-1]["content"][0]["type"] == "tool_result"


class SeesTheStep:
    """A processor that records the step context it is given and repairs nothing."""

    id = "sees-the-step"

    def __init__(self) -> None:
        self.seen: list[tuple[int, int, dict[str, Any]]] = []

    def before_send(
        self, *, messages: MessageList, params: dict[str, Any], step: int, state: dict[str, Any]
    ) -> None:
        state.setdefault("before_send", []).append(step)

    def process_api_error(
        self,
        *,
        error: anthropic.APIError,
        messages: MessageList,
        retry_count: int,
        step: int,
        steps: tuple[Any, ...],
        state: dict[str, Any],
    ) -> ProcessAPIErrorResult | None:
        self.seen.append((step, len(steps), dict(state)))
        state["errors"] = state.get("errors", 0) + 1
        return None


async def test_processors_see_the_step_the_steps_before_and_a_shared_state(
    harness: Harness,
) -> None:
    """A processor that declares step, steps and state gets them (before_send too); the
    state lives for the run and is shared; a three-argument processor works unchanged."""
    harness.emulator.reply_with([_weather_call()])
    harness.emulator.script(PREFILL_400, when=lambda r: len(r.body["messages"]) == 3)
    sees = SeesTheStep()
    agent = harness.agent(tools=[get_weather], error_processors=[sees, PrefillErrorHandler()])
    result = await harness.run(agent, QUESTION)
    assert sees.seen == [(1, 1, {"before_send": [0, 1]})]
    assert result.state == {"before_send": [0, 1], "errors": 1}
    assert [step.number for step in result.steps] == [0, 1]
    assert [a.retry for a in result.steps[1].attempts] == ["processor", None]


class AbortsOnRateLimit:
    id = "aborts-on-rate-limit"

    def process_api_error(
        self, *, error: anthropic.APIError, messages: MessageList, retry_count: int
    ) -> ProcessAPIErrorResult | None:
        messages.add("user", "half-done")
        if isinstance(error, anthropic.RateLimitError):
            raise Abort("rate limited: try again tomorrow")
        return None


async def test_a_processor_aborts_the_run_with_what_it_completed(harness: Harness) -> None:
    """Abort is not skipped: the caller gets it, with the completed steps on .result and the
    conversation as it was before that processor ran."""
    harness.emulator.reply_with([_weather_call()])
    harness.emulator.script(Fault(429), when=lambda r: len(r.body["messages"]) == 3)
    agent = harness.agent(
        tools=[get_weather], error_processors=[AbortsOnRateLimit()], max_retries=0
    )
    conversation = MessageList(QUESTION)
    with pytest.raises(Abort, match="try again tomorrow") as info:
        await harness.run(agent, conversation)
    assert info.value.result is not None
    assert info.value.result.stop_reason == "aborted"
    assert len(info.value.result.steps) == 1
    assert [m["role"] for m in conversation] == ["user", "assistant", "user"]


async def test_a_tool_aborts_the_run(harness: Harness) -> None:
    """A tool that raises Abort ends the run: no result for it, the caller gets the Abort."""

    def refuse(city: str) -> str:
        """Refuses."""
        raise Abort(f"{city} is off limits")

    harness.emulator.reply_with([tool_use("refuse", {"city": "Oslo"}, id="toolu_r")])
    with pytest.raises(Abort, match="Oslo is off limits"):
        await harness.run(harness.agent(tools=[refuse]), QUESTION)
    assert len(harness.emulator.message_requests) == 1


async def test_a_parameter_repair_holds_for_the_rest_of_the_run(harness: Harness) -> None:
    """Opus 4.7 refuses temperature: dropped once, in step 0; step 1 is sent without it, so
    the run pays the rejected request once, not once per step."""
    harness.emulator.reply_with([_weather_call()])
    agent = harness.agent("claude-opus-4-7", tools=[get_weather], temperature=0.5)
    result = await harness.run(agent, QUESTION)
    bodies = [r.body for r in harness.emulator.message_requests]
    assert len(bodies) == 3
    assert bodies[0]["temperature"] == 0.5
    assert all("temperature" not in body for body in bodies[1:])
    assert result.retried_by == ("deprecated-sampling-handler",)


async def test_the_recommended_processors_are_on_by_default(harness: Harness) -> None:
    """Agent(model) with no error_processors repairs the prefill 400 (here before sending);
    error_processors=[] means none."""
    ends_with_assistant = [*QUESTION, {"role": "assistant", "content": "Let me see"}]
    result = await harness.run(harness.agent(), ends_with_assistant)
    assert result.text == DEFAULT_REPLY_TEXT
    assert len(harness.emulator.message_requests) == 1
    with pytest.raises(anthropic.BadRequestError, match="assistant message prefill"):
        await harness.run(harness.agent(error_processors=[]), ends_with_assistant)


async def test_sampling_parameters_reach_the_wire_whatever_the_sdk(harness: Harness) -> None:
    """temperature, top_p and top_k go in the request body (the SDK takes them only in
    extra_body since 1.0), from the Agent's defaults and from a call alike."""
    agent = harness.agent("claude-haiku-4-5", temperature=0.3)
    await harness.run(agent, QUESTION)
    assert harness.emulator.message_requests[-1].body["temperature"] == 0.3


def test_an_unknown_keyword_is_refused_with_the_close_matches() -> None:
    """A misspelt or unknown keyword fails in Agent(), naming it and what it may have meant,
    instead of at the first request with the SDK's TypeError."""
    with pytest.raises(TypeError, match=r"'input_processors'; did you mean 'error_processors'"):
        Agent(MODEL, input_processors=[])
    with pytest.raises(TypeError, match=r"unknown keyword argument 'stop_sequence'.*extra_body"):
        Agent(MODEL, stop_sequence=["END"])
    with pytest.raises(TypeError, match=r"Agent\.generate\(\): unknown keyword argument 'temp'"):
        Agent(MODEL).generate("hi", temp=0.5)


async def test_the_tool_calls_of_one_reply_run_at_the_same_time(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """In agenerate, two async tools that each wait for the other finish: they ran
    concurrently (one after the other, they would wait for ever)."""
    first, second = asyncio.Event(), asyncio.Event()

    async def left() -> str:
        """Left."""
        first.set()
        await asyncio.wait_for(second.wait(), 5)
        return "left"

    async def right() -> str:
        """Right."""
        second.set()
        await asyncio.wait_for(first.wait(), 5)
        return "right"

    anthropic_emulator.reply_with([tool_use("left", {}), tool_use("right", {})])
    async with anthropic_emulator.async_client() as client:
        result = await Agent(MODEL, client=client, tools=[left, right]).agenerate(QUESTION)
    assert [call.result["content"] for call in result.tool_calls] == ["left", "right"]


def test_a_synchronous_run_refuses_an_async_tool_before_any_request(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """generate() cannot await an async tool: a clear TypeError, nothing sent."""

    async def lookup() -> str:
        """Async."""
        return "x"

    with anthropic_emulator.client() as client, pytest.raises(TypeError, match="'lookup' is async"):
        Agent(MODEL, client=client, tools=[lookup]).generate(QUESTION)
    assert anthropic_emulator.message_requests == []


def test_a_keyboard_interrupt_in_a_tool_is_not_swallowed(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """Only Exceptions become error results; KeyboardInterrupt goes to the caller."""

    def interrupted() -> str:
        """Interrupted."""
        raise KeyboardInterrupt

    anthropic_emulator.reply_with([tool_use("interrupted", {})])
    with anthropic_emulator.client() as client, pytest.raises(KeyboardInterrupt):
        Agent(MODEL, client=client, tools=[interrupted]).generate(QUESTION)


async def test_a_stream_yields_text_tool_calls_results_and_finished_steps(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """events(): every step's text as it arrives, each tool call before it runs and its result
    after, and each finished step, in order; sync and async alike."""
    expected = [
        ("text", 0),
        ("call", 0),
        ("result", 0),
        ("step", 0),
        *[("text", 1)] * len(DEFAULT_REPLY_TEXT.split()),
        ("step", 1),
    ]

    def kind(event: Any) -> tuple[str, int]:
        if isinstance(event, TextEvent):
            return ("text", event.step)
        if isinstance(event, ToolCallEvent):
            return ("call", event.step)
        if isinstance(event, ToolResultEvent):
            return ("result", event.step)
        assert isinstance(event, StepEvent)
        return ("step", event.step.number)

    anthropic_emulator.reply_with([{"type": "text", "text": "Checking."}, _weather_call()])
    with anthropic_emulator.client() as client:
        agent = Agent(MODEL, client=client, tools=[get_weather])
        with agent.stream(QUESTION) as stream:
            kinds = [kind(event) for event in stream.events()]
        assert stream.result.stop_reason == "end_turn"
    assert kinds == expected
    anthropic_emulator.reply_with([{"type": "text", "text": "Checking."}, _weather_call()])
    async with anthropic_emulator.async_client() as aclient:
        agent = Agent(MODEL, client=aclient, tools=[get_weather])
        async with agent.astream(QUESTION) as astream:
            akinds = [kind(event) async for event in astream.events()]
    assert akinds == expected


@pytest.mark.parametrize("driver", ["generate", "agenerate", "stream", "astream"])
async def test_a_thread_keeps_each_completed_step_and_resumes_without_rerunning_tools(
    anthropic_emulator: AnthropicEmulator, tmp_path: Path, driver: str
) -> None:
    """Step 0 (the tool call and its result) is saved when it completes; step 1 fails (a
    400), so it leaves nothing; replying again resumes from the tool result: the tool ran once."""
    calls: list[str] = []

    def counted(city: str) -> str:
        """Counted."""
        calls.append(city)
        return "sunny"

    anthropic_emulator.reply_with([tool_use("counted", {"city": "Oslo"}, id="toolu_t")])
    anthropic_emulator.script(Fault(400), when=lambda r: len(r.body["messages"]) == 3)
    harness = Harness(anthropic_emulator, driver)
    with SQLiteStore(tmp_path / "t.db") as store:
        agent = harness.agent(tools=[counted], store=store, error_processors=[])
        with pytest.raises(anthropic.BadRequestError):
            await _run_thread(harness, agent, "weather?")
        assert [m["role"] for m in store.load("t")] == ["user", "assistant", "user"]
        result = await _run_thread(harness, agent, None)
        assert [m["role"] for m in store.load("t")] == ["user", "assistant", "user", "assistant"]
    await harness.close()
    assert calls == ["Oslo"]
    assert result.text == DEFAULT_REPLY_TEXT


async def _run_thread(harness: Harness, agent: Agent, text: str | None) -> Any:
    if harness.driver == "generate":
        return agent.generate(text, thread_id="t")
    if harness.driver == "agenerate":
        return await agent.agenerate(text, thread_id="t")
    if harness.driver == "stream":
        with agent.stream(text, thread_id="t") as stream:
            stream.get_final_message()
            return stream.result
    async with agent.astream(text, thread_id="t") as astream:
        await astream.get_final_message()
        return astream.result


@pytest.mark.parametrize(("model", "requests"), [(MODEL, 1), ("acme-opus", 2)])
async def test_a_handed_off_conversation_costs_one_request_on_a_known_model_two_otherwise(
    harness: Harness, model: str, requests: int
) -> None:
    """A second Agent (other instructions, other tools) given a conversation that ends with
    the first Agent's reply: the reminder goes out before sending when the model is known
    to reject prefill, after the first rejection when it cannot be known."""
    treat_like(harness.emulator, {"acme-opus": MODEL})
    triage = harness.agent(model, instructions="You triage.")
    first = await harness.run(triage, "I'm off to Oslo, what should I pack?")
    forecaster = harness.agent(model, instructions="You forecast.", tools=[get_weather])
    second = await harness.run(forecaster, first.messages)
    handed = harness.emulator.message_requests[1:]
    assert len(handed) == requests
    assert handed[-1].body["system"] == "You forecast."
    assert handed[-1].body["tools"][0]["name"] == "get_weather"
    assert (
        handed[-1].body["messages"][-1]["content"] == "<system-reminder>continue</system-reminder>"
    )
    assert second.stop_reason == "end_turn"
    assert [m["role"] for m in second.messages] == ["user", "assistant", "user", "assistant"]
