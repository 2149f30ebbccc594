"""The Agent as an agent runner: tools, steps, processors at every step, abort, defaults.

Every test runs through the real SDK over HTTP against the emulator, which is scripted to
reply with tool calls; the drivers are generate, agenerate, stream and astream where it
applies (the ``harness`` fixture).
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

import anthropic
import pytest
from anthropic.lib.tools import ToolError

from prefill_guard import (
    Abort,
    Agent,
    MemoryStore,
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


def refuse(city: str) -> str:
    """Refuses."""
    raise Abort(f"{city} is off limits")


async def test_a_tool_aborts_the_run(harness: Harness) -> None:
    """A tool that raises Abort ends the run: the caller gets the Abort, nothing more is sent."""
    harness.emulator.reply_with([tool_use("refuse", {"city": "Oslo"}, id="toolu_r")])
    conversation = MessageList(QUESTION)
    with pytest.raises(Abort, match="Oslo is off limits") as info:
        await harness.run(harness.agent(tools=[refuse]), conversation)
    assert len(harness.emulator.message_requests) == 1
    assert info.value.result is None  # no step completed
    assert conversation.to_api() == QUESTION


async def test_a_tool_abort_leaves_the_conversation_at_the_last_completed_step(
    harness: Harness,
) -> None:
    """The reply whose tool aborted leaves the conversation (no tool_use without its result):
    it ends with step 0, as .result says, and can be sent again with no processor at all."""
    harness.emulator.reply_with(
        [_weather_call()], [tool_use("refuse", {"city": "Bergen"}, id="toolu_r")]
    )
    conversation = MessageList(QUESTION)
    agent = harness.agent(tools=[get_weather, refuse], error_processors=[])
    with pytest.raises(Abort, match="Bergen is off limits") as info:
        await harness.run(agent, conversation)
    result = info.value.result
    assert result is not None
    assert len(result.steps) == 1
    assert result.messages.to_api() == conversation.to_api()
    assert [m["role"] for m in conversation] == ["user", "assistant", "user"]
    again = await harness.run(agent, conversation)
    assert again.text == DEFAULT_REPLY_TEXT


class DropsTheFirstMessage:
    """After a 400, removes the conversation's first message and asks for a retry."""

    id = "drops-the-first-message"

    def process_api_error(
        self, *, error: Any, messages: MessageList, retry_count: int
    ) -> ProcessAPIErrorResult | None:
        if retry_count == 0:
            del messages[0]
            return ProcessAPIErrorResult(retry=True)
        return None


async def test_only_the_unanswered_reply_leaves_after_a_repair_moved_messages(
    harness: Harness,
) -> None:
    """A repair that inserts a message before the caller's last one (the default processors
    answer an old orphaned tool_use), then a tool aborts: the caller's messages and the
    repair stay, only the reply whose tool did not run goes."""
    orphaned = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [tool_use("refuse", {"city": "Rome"}, id="toolu_old")]},
        {"role": "assistant", "content": "x"},
        {"role": "user", "content": "the last prompt"},
    ]
    harness.emulator.reply_with([tool_use("refuse", {"city": "Oslo"}, id="toolu_new")])
    conversation = MessageList(orphaned)
    with pytest.raises(Abort):
        await harness.run(harness.agent("claude-sonnet-4-5", tools=[refuse]), conversation)
    sent = harness.emulator.message_requests[-1].body["messages"]
    assert conversation.to_api() == sent
    assert sent[-1] == {"role": "user", "content": "the last prompt"}


async def test_the_unanswered_reply_leaves_after_a_repair_removed_a_message(
    harness: Harness,
) -> None:
    """A repair that removes an earlier message, then a tool aborts: the reply still goes,
    so no tool_use is left without its result."""
    harness.emulator.script(Fault(400))
    harness.emulator.reply_with([tool_use("refuse", {"city": "Oslo"}, id="toolu_new")])
    conversation = MessageList([{"role": "user", "content": "old"}, *QUESTION])
    agent = harness.agent(tools=[refuse], error_processors=[DropsTheFirstMessage()])
    with pytest.raises(Abort):
        await harness.run(agent, conversation)
    assert conversation.to_api() == QUESTION


class RaisesAfterReplacing:
    """A before_send hook that replaces the question, then raises (``Abort`` or a bug)."""

    id = "raises-after-replacing"

    def __init__(self, error: Exception) -> None:
        self.error = error

    def before_send(self, *, messages: MessageList, params: Any) -> None:
        messages[0] = {"role": "user", "content": "replaced"}
        messages.append({"role": "user", "content": "appended"})
        raise self.error

    def process_api_error(self, **kwargs: Any) -> None:
        return None


@pytest.mark.parametrize("error", [Abort("stop"), RuntimeError("a bug")], ids=["abort", "bug"])
async def test_a_before_send_hook_that_raises_leaves_the_messages_as_they_were(
    harness: Harness, error: Exception
) -> None:
    """What the hook replaced and appended is undone: an Abort reaches the caller with the
    conversation as it was; a hook that fails otherwise is skipped and the original is sent."""
    conversation = MessageList(QUESTION)
    agent = harness.agent(error_processors=[RaisesAfterReplacing(error)])
    if isinstance(error, Abort):
        with pytest.raises(Abort):
            await harness.run(agent, conversation)
        assert harness.emulator.message_requests == []
    else:
        await harness.run(agent, conversation)
        assert harness.emulator.message_requests[0].body["messages"] == QUESTION
    assert conversation.to_api()[: len(QUESTION)] == QUESTION


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
    agent = harness.agent("claude-haiku-4-5", temperature=0.3, top_k=5)
    await harness.run(agent, QUESTION)
    body = harness.emulator.message_requests[-1].body
    assert (body["temperature"], body["top_k"]) == (0.3, 5)
    await _run_with(harness, agent, QUESTION, temperature=0.7, top_k=40)
    body = harness.emulator.message_requests[-1].body
    assert (body["temperature"], body["top_k"]) == (0.7, 40)
    await _run_with(harness, harness.agent("claude-haiku-4-5"), QUESTION, top_p=0.9)
    assert harness.emulator.message_requests[-1].body["top_p"] == 0.9
    assert len(harness.emulator.message_requests) == 3


async def _run_with(harness: Harness, agent: Agent, messages: Any, **params: Any) -> Any:
    """One run with per-call parameters, through the harness's driver."""
    if harness.driver == "generate":
        return agent.generate(messages, **params)
    if harness.driver == "agenerate":
        return await agent.agenerate(messages, **params)
    if harness.driver == "stream":
        with agent.stream(messages, **params) as stream:
            stream.get_final_message()
            return stream.result
    async with agent.astream(messages, **params) as astream:
        await astream.get_final_message()
        return astream.result


def test_an_unknown_keyword_is_refused_with_the_close_matches() -> None:
    """A misspelt or unknown keyword fails in Agent(), naming it and what it may have meant,
    instead of at the first request with the SDK's TypeError."""
    with pytest.raises(TypeError, match=r"'input_processors'; did you mean 'error_processors'"):
        Agent(MODEL, input_processors=[])
    with pytest.raises(TypeError, match=r"unknown keyword argument 'stop_sequence'.*extra_body"):
        Agent(MODEL, stop_sequence=["END"])
    with pytest.raises(TypeError, match=r"Agent\.generate\(\): unknown keyword argument 'temp'"):
        Agent(MODEL).generate("hi", temp=0.5)


@pytest.mark.parametrize("driver", ["agenerate", "astream"])
async def test_the_tool_calls_of_one_reply_run_at_the_same_time(
    anthropic_emulator: AnthropicEmulator, driver: str
) -> None:
    """In agenerate and astream, two async tools that each wait for the other finish: they
    ran concurrently (one after the other, they would wait for ever)."""
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
    harness = Harness(anthropic_emulator, driver)
    result = await harness.run(harness.agent(tools=[left, right]), QUESTION)
    await harness.close()
    assert [call.result["content"] for call in result.tool_calls] == ["left", "right"]


@pytest.mark.parametrize(
    ("tool", "problem"),
    [
        (functools.partial(get_weather, "Oslo"), r"tools\[0\]: the SDK cannot make a tool of"),
        (lambda city: city, r"tools\[0\]: tool name '<lambda>' is not one the API takes"),
        ({"name": "lookup"}, r"tools\[0\]: tool 'lookup' needs an 'input_schema'"),
        ({"name": "a b", "input_schema": {"type": "object"}}, r"tool name 'a b' is not one"),
    ],
    ids=["partial", "lambda", "no-schema", "bad-name"],
)
def test_a_tool_the_api_would_refuse_is_refused_by_the_agent(tool: Any, problem: str) -> None:
    """A tool the SDK cannot describe, or a client tool the API would refuse, is a clear
    error naming tools[i] when the Agent is made, not a raw error or a 400 later."""
    with pytest.raises((TypeError, ValueError), match=problem):
        Agent(MODEL, tools=[tool])


def test_a_server_tool_needs_no_input_schema(anthropic_emulator: AnthropicEmulator) -> None:
    """A server tool (its own ``type``) is the API's to define: sent as it is, and a toolset
    (``mcp_toolset``) needs no name either."""
    server_tools = [
        {"type": "web_search_20250305", "name": "web_search"},
        {"type": "mcp_toolset", "mcp_server_name": "docs"},
    ]
    with anthropic_emulator.client() as client:
        Agent(MODEL, client=client, tools=server_tools).generate(QUESTION)
    assert anthropic_emulator.message_requests[0].body["tools"] == server_tools


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

    def streamed(agent: Agent, conversation: MessageList) -> None:
        with agent.stream(conversation) as stream:
            stream.get_final_message()

    for run in (Agent.generate, streamed):
        anthropic_emulator.reply_with([tool_use("interrupted", {})])
        conversation = MessageList(QUESTION)
        with anthropic_emulator.client() as client:
            agent = Agent(MODEL, client=client, tools=[interrupted])
            with pytest.raises(KeyboardInterrupt):
                run(agent, conversation)
        assert conversation.to_api() == QUESTION, run


@pytest.mark.parametrize("driver", ["stream", "astream"])
async def test_a_stream_left_before_its_tools_ran_leaves_no_unanswered_reply(
    anthropic_emulator: AnthropicEmulator, driver: str
) -> None:
    """A consumer that stops at the message_stop of a tool step: the tools never ran, so the
    reply leaves the conversation, which can be sent again as it is."""
    anthropic_emulator.reply_with([_weather_call()])
    conversation = MessageList(QUESTION)
    harness = Harness(anthropic_emulator, driver)
    agent = harness.agent(tools=[get_weather], error_processors=[])
    if driver == "stream":
        with agent.stream(conversation) as stream:
            for event in stream:
                if event.type == "message_stop":
                    break
    else:
        async with agent.astream(conversation) as astream:
            async for event in astream:
                if event.type == "message_stop":
                    break
    assert conversation.to_api() == QUESTION
    assert (await harness.run(agent, conversation)).text == DEFAULT_REPLY_TEXT
    await harness.close()


async def test_a_cancelled_run_cancels_its_tools_and_leaves_no_unanswered_reply(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """agenerate cancelled while its tools run: the tools are cancelled, the cancellation
    goes on, and the reply whose tools did not finish leaves the conversation."""
    started, cancelled = asyncio.Event(), []

    async def slow() -> str:
        """Slow."""
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append("slow")
            raise
        return "done"

    anthropic_emulator.reply_with([tool_use("slow", {}), tool_use("slow", {})])
    conversation = MessageList(QUESTION)
    async with anthropic_emulator.async_client() as client:
        run = asyncio.ensure_future(
            Agent(MODEL, client=client, tools=[slow]).agenerate(conversation)
        )
        await asyncio.wait_for(started.wait(), 5)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
    assert cancelled == ["slow", "slow"]
    assert conversation.to_api() == QUESTION


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


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
async def test_a_thread_stores_each_message_of_a_multi_step_run_once(
    harness: Harness, tmp_path: Path, store_kind: str
) -> None:
    """Two tool steps and the answer: each step's reply and tool results are saved once when
    the step completes (not again with the next step's), so the next turn sends the thread
    as the run left it, each tool_use id once."""
    harness.emulator.reply_with([_weather_call(id="toolu_a")], [_weather_call("Bergen", "toolu_b")])
    store = MemoryStore() if store_kind == "memory" else SQLiteStore(tmp_path / "t.db")
    with store:
        agent = harness.agent(tools=[get_weather], store=store)
        result = await _run_thread(harness, agent, "weather?")
        assert len(result.steps) == 3
        assert [m["role"] for m in store.load("t")] == [
            "user",
            *["assistant", "user"] * 2,
            "assistant",
        ]
        assert store.load("t").to_api() == result.messages.to_api()
        await _run_thread(harness, agent, "thanks")
    await harness.close()
    sent = harness.emulator.message_requests[-1].body["messages"]
    ids = [
        b["id"]
        for m in sent
        if isinstance(m["content"], list)
        for b in m["content"]
        if b["type"] == "tool_use"
    ]
    assert ids == ["toolu_a", "toolu_b"]
    assert len(sent) == 7


class PolitenessRepair:
    """Repairs a stored message after a 400: the question is asked again, politely."""

    id = "politeness-repair"

    def process_api_error(
        self, *, error: Any, messages: MessageList, retry_count: int
    ) -> ProcessAPIErrorResult | None:
        if isinstance(error, anthropic.BadRequestError) and retry_count == 0:
            messages[0] = {"role": "user", "content": "What is the weather in Oslo, please?"}
            return ProcessAPIErrorResult(retry=True)
        return None


async def test_a_repair_of_a_stored_message_in_a_later_step_rewrites_the_thread_once(
    harness: Harness, tmp_path: Path
) -> None:
    """Step 0 is saved; a 400 in step 1 makes a processor repair the stored question: the
    thread holds the repaired question and every step once, as the last request sent them,
    plus the reply."""
    harness.emulator.reply_with([_weather_call()])
    harness.emulator.script(Fault(400), when=lambda r: len(r.body["messages"]) == 3)
    with SQLiteStore(tmp_path / "t.db") as store:
        agent = harness.agent(
            tools=[get_weather], store=store, error_processors=[PolitenessRepair()]
        )
        result = await _run_thread(harness, agent, "What is the weather in Oslo?")
        stored = store.load("t").to_api()
    await harness.close()
    assert len(harness.emulator.message_requests) == 3
    assert stored == result.messages.to_api()
    assert [m["role"] for m in stored] == ["user", "assistant", "user", "assistant"]
    assert stored[0]["content"] == "What is the weather in Oslo, please?"
    assert harness.emulator.message_requests[-1].body["messages"] == stored[:3]


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
