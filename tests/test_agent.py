"""The Agent end to end: the real anthropic SDK over real HTTP against the emulator."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import anthropic
import pytest

from prefill_guard import (
    Agent,
    MessageList,
    PrefillErrorHandler,
    ProcessAPIErrorResult,
    RunResult,
    api_message,
    default_processors,
)
from prefill_guard.testing import DEFAULT_REPLY_TEXT, PREFILL_MESSAGE, AnthropicEmulator, Fault

from .conftest import AsyncPrefillRepair, EditsInPlace, ErrorRecorder, SwitchModel

MODEL = "claude-opus-4-6"
ENDS_WITH_ASSISTANT = [
    {"role": "user", "content": "Write a haiku."},
    {"role": "assistant", "content": "Here is one"},
]
REMINDER_ON_WIRE = {"role": "user", "content": "<system-reminder>continue</system-reminder>"}
PREFILL_FAULT = Fault(
    400, {"type": "error", "error": {"type": "invalid_request_error", "message": PREFILL_MESSAGE}}
)


def _wire_messages(emulator: AnthropicEmulator) -> list[list[dict[str, Any]]]:
    return [r.body["messages"] for r in emulator.message_requests]


def _assert_recovered(result: RunResult, emulator: AnthropicEmulator) -> None:
    wire = _wire_messages(emulator)
    assert len(wire) == 2
    assert wire[0] == ENDS_WITH_ASSISTANT
    assert wire[1] == [*ENDS_WITH_ASSISTANT, REMINDER_ON_WIRE]
    assert all("metadata" not in m for request in wire for m in request)
    assert result.text == DEFAULT_REPLY_TEXT
    assert result.retried_by == ("prefill-error-handler",)
    assert [a.error is None for a in result.attempts] == [False, True]
    assert result.messages.to_ui() == [
        *ENDS_WITH_ASSISTANT,
        {"role": "assistant", "content": [{"type": "text", "text": DEFAULT_REPLY_TEXT}]},
    ]


def test_sync_recovers_in_exactly_two_requests(anthropic_emulator: AnthropicEmulator) -> None:
    """Prefill 400, then the reminder goes on the wire (no metadata) and the retry succeeds."""
    with anthropic_emulator.client() as client:
        agent = Agent(MODEL, client=client, error_processors=[PrefillErrorHandler()])
        result = agent.generate(ENDS_WITH_ASSISTANT)
    _assert_recovered(result, anthropic_emulator)


async def test_async_recovers_in_exactly_two_requests(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """The async twin takes the same two requests."""
    async with anthropic_emulator.async_client() as client:
        agent = Agent(MODEL, client=client, error_processors=[PrefillErrorHandler()])
        result = await agent.agenerate(ENDS_WITH_ASSISTANT)
    _assert_recovered(result, anthropic_emulator)


def test_without_the_handler_the_original_error_is_raised(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """Control: with no processor (error_processors=[]) the prefill 400 reaches the caller
    after one request."""
    with anthropic_emulator.client() as client, pytest.raises(anthropic.BadRequestError):
        Agent(MODEL, client=client, error_processors=[]).generate(ENDS_WITH_ASSISTANT)
    assert len(anthropic_emulator.message_requests) == 1


def test_persistent_rejection_gives_two_requests_then_the_original_error(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """retry_count 1 means no second repair: 2 requests, then the SDK's own exception object."""
    anthropic_emulator.script(PREFILL_FAULT, PREFILL_FAULT)
    capture = ErrorRecorder()
    with anthropic_emulator.client() as client:
        agent = Agent(MODEL, client=client, error_processors=[PrefillErrorHandler(), capture])
        with pytest.raises(anthropic.BadRequestError) as info:
            agent.generate(ENDS_WITH_ASSISTANT)
    assert len(anthropic_emulator.message_requests) == 2
    assert type(info.value) is anthropic.BadRequestError
    assert info.value is capture.errors[-1]
    assert api_message(info.value) == PREFILL_MESSAGE


async def test_async_persistent_rejection_gives_the_original_error(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """The async path gives up the same way, with the same exception class."""
    anthropic_emulator.script(PREFILL_FAULT, PREFILL_FAULT)
    async with anthropic_emulator.async_client() as client:
        agent = Agent(MODEL, client=client, error_processors=[PrefillErrorHandler()])
        with pytest.raises(anthropic.BadRequestError):
            await agent.agenerate(ENDS_WITH_ASSISTANT)
    assert len(anthropic_emulator.message_requests) == 2


def test_other_400_takes_one_request_and_leaves_history_untouched(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """A non-prefill 400 is not repaired: one request, conversation as it was."""
    conversation = MessageList([{"role": "user", "content": "   "}])
    before = conversation.copy()
    with anthropic_emulator.client() as client:
        agent = Agent(MODEL, client=client, error_processors=[PrefillErrorHandler()])
        with pytest.raises(anthropic.BadRequestError, match="non-whitespace text"):
            agent.generate(conversation)
    assert len(anthropic_emulator.message_requests) == 1
    assert conversation == before


def test_plain_list_is_not_mutated_and_message_list_is_extended(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """A list is copied; a MessageList is the conversation and grows in place."""
    plain = [dict(m) for m in ENDS_WITH_ASSISTANT]
    conversation = MessageList(ENDS_WITH_ASSISTANT)
    with anthropic_emulator.client() as client:
        agent = Agent(MODEL, client=client, error_processors=[PrefillErrorHandler()])
        agent.generate(plain)
        result = agent.generate(conversation)
    assert plain == ENDS_WITH_ASSISTANT
    assert result.messages is conversation
    assert len(conversation) == 4
    assert conversation[2]["metadata"] == {
        "systemReminder": {"type": "anthropic-prefill-processor-retry"}
    }


def test_string_input_instructions_and_params_reach_the_wire(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """A str is one user message; instructions become system; call params override defaults."""
    with anthropic_emulator.client() as client:
        agent = Agent(
            "claude-haiku-4-5",
            client=client,
            instructions="Be brief.",
            max_tokens=99,
            stop_sequences=["END"],
        )
        agent.generate("hello", max_tokens=7)
    body = anthropic_emulator.message_requests[0].body
    assert body["messages"] == [{"role": "user", "content": "hello"}]
    assert body["system"] == "Be brief."
    assert (body["model"], body["max_tokens"], body["stop_sequences"]) == (
        "claude-haiku-4-5",
        7,
        ["END"],
    )


def test_raising_processor_does_not_replace_the_recovery(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """A buggy processor listed first is skipped; the prefill repair still happens."""

    class Buggy:
        id = "buggy"

        def process_api_error(self, **kwargs: Any) -> ProcessAPIErrorResult | None:
            raise ZeroDivisionError("bug")

    with anthropic_emulator.client() as client:
        agent = Agent(MODEL, client=client, error_processors=[Buggy(), PrefillErrorHandler()])
        result = agent.generate(ENDS_WITH_ASSISTANT)
    assert result.retried_by == ("prefill-error-handler",)
    assert len(anthropic_emulator.message_requests) == 2


def test_order_and_cap_end_to_end(anthropic_emulator: AnthropicEmulator) -> None:
    """A blind retrier first, then the repair; the cap bounds the requests sent."""

    class Blind:
        id = "blind"

        def process_api_error(self, **kwargs: Any) -> ProcessAPIErrorResult | None:
            return ProcessAPIErrorResult(retry=True)

    with anthropic_emulator.client() as client:
        agent = Agent(
            MODEL,
            client=client,
            error_processors=[Blind(), PrefillErrorHandler()],
            max_processor_retries=2,
        )
        with pytest.raises(anthropic.BadRequestError):
            agent.generate(ENDS_WITH_ASSISTANT)
    assert len(anthropic_emulator.message_requests) == 3
    assert all(m[-1]["role"] == "assistant" for m in _wire_messages(anthropic_emulator))


def test_params_processor_changes_the_next_request(anthropic_emulator: AnthropicEmulator) -> None:
    """A processor declaring params= switches the model; the retry is sent with it."""

    with anthropic_emulator.client() as client:
        result = Agent(MODEL, client=client, error_processors=[SwitchModel()]).generate(
            ENDS_WITH_ASSISTANT
        )
    assert [r.body["model"] for r in anthropic_emulator.message_requests] == [
        MODEL,
        "claude-haiku-4-5",
    ]
    assert result.message.model == "claude-haiku-4-5"


def test_async_processor_is_refused_by_generate_before_any_request(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """A sync run with an async def processor raises TypeError and sends nothing."""

    class AsyncOnly:
        id = "async-only"

        async def process_api_error(self, **kwargs: Any) -> ProcessAPIErrorResult | None:
            return None

    with anthropic_emulator.client() as client:
        agent = Agent(MODEL, client=client, error_processors=[AsyncOnly()])
        with pytest.raises(TypeError, match="'async-only' has an async"):
            agent.generate(ENDS_WITH_ASSISTANT)
    assert anthropic_emulator.message_requests == []


async def test_async_processor_runs_in_agenerate(anthropic_emulator: AnthropicEmulator) -> None:
    """agenerate awaits an async def processor that performs the repair."""

    async with anthropic_emulator.async_client() as client:
        result = await Agent(
            MODEL, client=client, error_processors=[AsyncPrefillRepair()]
        ).agenerate(ENDS_WITH_ASSISTANT)
    assert result.retried_by == ("async-repair",)


async def test_wrong_kind_of_client_is_a_clear_type_error(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """generate() with an async client, or agenerate() with a sync one, says what to do."""
    async with anthropic_emulator.async_client() as aclient:
        with pytest.raises(TypeError, match="needs a synchronous client"):
            Agent(MODEL, client=aclient).generate("hi")
    with (
        anthropic_emulator.client() as client,
        pytest.raises(TypeError, match="needs an async client"),
    ):
        await Agent(MODEL, client=client).agenerate("hi")
    with pytest.raises(TypeError, match="client must be an anthropic client"):
        Agent(MODEL, client=object())  # type: ignore[arg-type]


def test_reserved_parameters_are_refused() -> None:
    """messages= or stream= as a request parameter is a mistake with a clear message."""
    with pytest.raises(TypeError, match="'stream' is not a request parameter"):
        Agent(MODEL, stream=True)
    with pytest.raises(TypeError, match="'messages' is not a request parameter"):
        Agent(MODEL, messages=[])
    with anthropic.Anthropic(api_key="x") as client, pytest.raises(TypeError, match="'stream'"):
        Agent(MODEL, client=client).generate("hi", stream=True)


def test_client_is_created_from_the_environment(
    anthropic_emulator: AnthropicEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no client, one is made from ANTHROPIC_API_KEY / ANTHROPIC_BASE_URL on first use."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "env-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", anthropic_emulator.base_url)
    agent = Agent(MODEL, error_processors=[PrefillErrorHandler()])
    assert agent.generate(ENDS_WITH_ASSISTANT).text == DEFAULT_REPLY_TEXT
    assert len(anthropic_emulator.message_requests) == 2


def test_one_agent_is_safe_to_share_between_threads(anthropic_emulator: AnthropicEmulator) -> None:
    """Eight threads, one Agent: every conversation recovers with its own two requests."""
    results: list[RunResult] = []
    with anthropic_emulator.client() as client:
        agent = Agent(MODEL, client=client, error_processors=[PrefillErrorHandler()])

        def run(i: int) -> None:
            results.append(
                agent.generate(
                    [
                        {"role": "user", "content": f"q{i}"},
                        {"role": "assistant", "content": f"a{i}"},
                    ]
                )
            )

        threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(results) == 8
    assert all(len(r.attempts) == 2 and len(r.messages) == 4 for r in results)
    assert sorted(r.messages[0]["content"] for r in results) == [f"q{i}" for i in range(8)]
    assert all(r.messages[1]["content"] == "a" + r.messages[0]["content"][1:] for r in results)
    assert len(anthropic_emulator.message_requests) == 16


async def test_one_agent_is_safe_to_share_between_tasks(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """Twenty concurrent agenerate calls on one Agent keep their conversations apart."""
    async with anthropic_emulator.async_client() as client:
        agent = Agent(MODEL, client=client, error_processors=[PrefillErrorHandler()])
        results = await asyncio.gather(
            *(
                agent.agenerate(
                    [
                        {"role": "user", "content": f"q{i}"},
                        {"role": "assistant", "content": f"a{i}"},
                    ]
                )
                for i in range(20)
            )
        )
    for i, result in enumerate(results):
        assert result.messages[0]["content"] == f"q{i}"
        assert len(result.messages) == 4
    assert len(anthropic_emulator.message_requests) == 40


def test_processors_never_change_the_agents_defaults(anthropic_emulator: AnthropicEmulator) -> None:
    """A processor editing nested params changes only its own generation, not the next call."""

    with anthropic_emulator.client() as client:
        agent = Agent(
            MODEL, client=client, error_processors=[EditsInPlace()], stop_sequences=["END"]
        )
        agent.generate(ENDS_WITH_ASSISTANT)
        agent.generate(ENDS_WITH_ASSISTANT)
    sent = [r.body["stop_sequences"] for r in anthropic_emulator.message_requests]
    assert sent == [["END"], ["END", "LEAK"], ["END"], ["END", "LEAK"]]
    assert agent.default_params["stop_sequences"] == ["END"]


def test_processors_never_change_the_callers_params(anthropic_emulator: AnthropicEmulator) -> None:
    """Per-call params are copied before a processor edits them in place, not on every call."""

    stop = ["END"]
    with anthropic_emulator.client() as client:
        agent = Agent(MODEL, client=client, error_processors=[EditsInPlace()])
        agent.generate(ENDS_WITH_ASSISTANT, stop_sequences=stop)
    sent = [r.body["stop_sequences"] for r in anthropic_emulator.message_requests]
    assert sent == [["END"], ["END", "LEAK"]]
    assert stop == ["END"]


def test_a_before_send_hook_never_changes_the_agents_defaults(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """A before_send hook (not append-only) edits a copy of the params, every call afresh."""

    class EditsBeforeSend:
        id = "edits-before-send"

        def before_send(self, *, messages: MessageList, params: dict[str, Any]) -> None:
            params["stop_sequences"].append("HOOK")

        def process_api_error(self, **kwargs: Any) -> ProcessAPIErrorResult | None:
            return None

    with anthropic_emulator.client() as client:
        agent = Agent(
            MODEL, client=client, error_processors=[EditsBeforeSend()], stop_sequences=["END"]
        )
        agent.generate("one")
        agent.generate("two")
    sent = [r.body["stop_sequences"] for r in anthropic_emulator.message_requests]
    assert sent == [["END", "HOOK"], ["END", "HOOK"]]
    assert agent.default_params["stop_sequences"] == ["END"]


def test_settings_are_read_only() -> None:
    """An Agent is immutable after construction: its settings cannot be reassigned."""
    agent = Agent(MODEL, stop_sequences=["END"])
    with pytest.raises(TypeError):
        agent.default_params["max_tokens"] = 5  # type: ignore[index]
    with pytest.raises(AttributeError):
        agent.model = "other"  # type: ignore[misc]


def test_an_empty_reply_is_returned_but_not_stored() -> None:
    """A reply with no text would poison the next turn with a 400: it is not appended."""
    with AnthropicEmulator(reply="") as emulator, emulator.client() as client:
        conversation = MessageList([{"role": "user", "content": "hi"}])
        result = Agent("claude-haiku-4-5", client=client).generate(conversation)
        assert result.text == ""
        assert conversation.to_api() == [{"role": "user", "content": "hi"}]


def test_errors_name_the_method_that_was_called() -> None:
    """Misuse of stream()/astream() names stream()/astream(), not generate()."""
    aclient = anthropic.AsyncAnthropic(api_key="k")
    with pytest.raises(TypeError, match=r"Agent\.stream\(\) needs a synchronous client"):
        Agent(MODEL, client=aclient).stream("hi")
    with pytest.raises(TypeError, match=r"Agent\.astream\(\): 'stream' is not a request"):
        Agent(MODEL, client=aclient).astream("hi", stream=True)


# -- request counts, scenario by scenario -----------------------------------------------------

OTHER_400 = Fault(
    400, {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}
)
ENDS_WITH_USER = [{"role": "user", "content": "Suggest a name for a grey cat."}]
OVERLOADED = Fault(529, headers={"retry-after-ms": "5"})
SCENARIOS: dict[str, tuple[str, list[dict[str, Any]], tuple[Fault, ...], int, list[Any]]] = {
    # name: (model, conversation, faults scripted, requests expected, what follows each attempt)
    "success": (MODEL, ENDS_WITH_USER, (), 1, [None]),
    "the guard appends first": (MODEL, ENDS_WITH_ASSISTANT, (), 1, [None]),
    "an unknown model is repaired": (
        "claude-nova-1",
        ENDS_WITH_ASSISTANT,
        (),
        2,
        ["processor", None],
    ),
    "a 529, then success": (MODEL, ENDS_WITH_USER, (OVERLOADED,), 2, ["transient", None]),
    "a 529, then a repair": (
        "claude-nova-1",
        ENDS_WITH_ASSISTANT,
        (OVERLOADED,),
        3,
        ["transient", "processor", None],
    ),
    "a 400 no processor repairs": (MODEL, ENDS_WITH_USER, (OTHER_400,), 1, []),
    "529 until the budget is spent": (MODEL, ENDS_WITH_USER, (OVERLOADED,) * 3, 3, []),
}


@pytest.mark.parametrize("driver", ["generate", "agenerate"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_each_scenario_makes_the_expected_requests(
    anthropic_emulator: AnthropicEmulator, driver: str, scenario: str
) -> None:
    """With the default stack: the requests sent, the retry that followed each attempt, the
    waits and the retry hooks, for success, repairs, transient retries and give-ups."""
    anthropic_emulator.set_rule("prefill", True)  # claude-nova-1 too, which no rule knows
    model, messages, faults, requests, follows = SCENARIOS[scenario]
    anthropic_emulator.script(*faults)
    waits: list[float] = []
    retries: list[Any] = []
    options: dict[str, Any] = {
        "error_processors": default_processors(),
        "sleep": waits.append,
        "on_retry": [retries.append],
    }
    conversation = MessageList(messages)
    try:
        if driver == "generate":
            with anthropic_emulator.client() as client:
                result = Agent(model, client=client, **options).generate(conversation)
        else:
            async with anthropic_emulator.async_client() as aclient:
                result = await Agent(model, client=aclient, **options).agenerate(conversation)
    except anthropic.APIError:
        assert follows == []
    else:
        assert [a.retry for a in result.attempts] == follows
        assert result.messages is conversation
        assert [d.kind for d in retries] == [f for f in follows if f is not None]
    assert len(anthropic_emulator.message_requests) == requests
    assert len(waits) == sum(1 for d in retries if d.kind == "transient")


def test_a_nan_retry_delay_cannot_remove_the_cap() -> None:
    """max_retry_delay=nan would make every min() with it nan: refused, as are bools for
    counts (True is an int in Python, never meant as one here)."""
    for kwargs in (
        {"max_retry_delay": float("nan")},
        {"max_retries": True},
        {"max_tokens": True},
        {"max_processor_retries": True},
    ):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            Agent(MODEL, **kwargs)


@pytest.mark.parametrize("driver", ["generate", "agenerate"])
async def test_no_messages_is_a_clear_error_before_any_request(
    anthropic_emulator: AnthropicEmulator, driver: str
) -> None:
    """generate([]) used to send a request the API refuses; it is a ValueError now."""
    empties: list[list[Any] | MessageList] = [[], MessageList()]
    for empty in empties:
        with pytest.raises(ValueError, match=r"messages is empty; pass at least one message"):
            await _call(anthropic_emulator, driver, empty)
    assert anthropic_emulator.message_requests == []


@pytest.mark.parametrize("driver", ["generate", "agenerate"])
async def test_text_utf8_cannot_encode_is_a_value_error_before_any_request(
    anthropic_emulator: AnthropicEmulator, driver: str
) -> None:
    """A lone surrogate used to escape as a raw UnicodeEncodeError from the SDK."""
    bad = [{"role": "user", "content": "fine"}, {"role": "user", "content": "caf\udce9"}]
    with pytest.raises(ValueError, match=r"messages\[1\]: text 'caf\\udce9' holds a lone"):
        await _call(anthropic_emulator, driver, bad)
    assert anthropic_emulator.message_requests == []


async def _call(
    emulator: AnthropicEmulator, driver: str, messages: Any, **kwargs: Any
) -> RunResult:
    if driver == "generate":
        with emulator.client() as client:
            return Agent(MODEL, client=client, **kwargs).generate(messages)
    async with emulator.async_client() as aclient:
        return await Agent(MODEL, client=aclient, **kwargs).agenerate(messages)


_MESSAGE_WITHOUT_CONTENT = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": MODEL,
    "content": None,
    "stop_reason": "end_turn",
    "usage": {"input_tokens": 1, "output_tokens": 1},
}


@pytest.mark.parametrize("driver", ["generate", "agenerate"])
@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ({"type": "error", "error": {"type": "invalid_request_error", "message": "no"}}, {}),
        ("<html><body>Gateway says hi</body></html>", {}),
        (_MESSAGE_WITHOUT_CONTENT, {}),
        (b'{"type": "message", "content": [', {"content-type": "application/json"}),
        (b'{"type": "\xff"}', {"content-type": "application/json"}),
    ],
    ids=["error-object", "html", "content-null", "malformed-json", "invalid-utf8"],
)
async def test_a_200_that_is_not_a_message_is_the_sdks_error_not_a_crash(
    anthropic_emulator: AnthropicEmulator, driver: str, body: Any, headers: dict[str, str]
) -> None:
    """Each once gave a raw TypeError, JSONDecodeError or UnicodeDecodeError; now the SDK's own
    error, which no processor repairs: the caller gets it after one request."""
    anthropic_emulator.script(Fault(200, body=body, headers=headers))
    seen = ErrorRecorder()
    with pytest.raises(anthropic.APIError) as info:
        await _call(anthropic_emulator, driver, "hi", error_processors=[seen])
    expected = (
        anthropic.APIStatusError
        if isinstance(body, dict) and body["type"] == "error"
        else anthropic.APIResponseValidationError
    )
    assert type(info.value) is expected
    assert seen.errors == [info.value]
    assert len(anthropic_emulator.message_requests) == 1


@pytest.mark.parametrize("driver", ["generate", "agenerate"])
@pytest.mark.parametrize("error_type", ["overloaded_error", "api_error"])
async def test_a_200_holding_a_transient_error_object_is_retried(
    anthropic_emulator: AnthropicEmulator, driver: str, error_type: str
) -> None:
    """An overloaded (or api) error object in a 200 is retried like the SSE error event of
    the same type; the retry's reply is the result."""
    body = {"type": "error", "error": {"type": error_type, "message": "busy"}}
    anthropic_emulator.script(Fault(200, body=body))
    waits: list[float] = []
    result = await _call(anthropic_emulator, driver, "hi", sleep=waits.append)
    assert result.text == DEFAULT_REPLY_TEXT
    assert [a.retry for a in result.attempts] == ["transient", None]
    assert len(anthropic_emulator.message_requests) == 2
