"""ErrorProcessorMiddleware and guard(): the pipeline inside any anthropic client."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from prefill_guard import (
    ErrorProcessorMiddleware,
    MessageList,
    PrefillErrorHandler,
    ProcessAPIErrorResult,
    api_message,
    default_processors,
    guard,
)
from prefill_guard.testing import DEFAULT_REPLY_TEXT, PREFILL_MESSAGE, AnthropicEmulator, Fault

from .conftest import AsyncPrefillRepair, EditsInPlace, ErrorRecorder, SwitchModel

MODEL = "claude-opus-4-6"
ENDS_WITH_ASSISTANT: list[Any] = [
    {"role": "user", "content": "Write a haiku."},
    {"role": "assistant", "content": "Here is one"},
]
REMINDER_ON_WIRE = {"role": "user", "content": "<system-reminder>continue</system-reminder>"}
PREFILL_400 = Fault(
    400, {"type": "error", "error": {"type": "invalid_request_error", "message": PREFILL_MESSAGE}}
)
REACTIVE = [PrefillErrorHandler()]


def _wire(emulator: AnthropicEmulator) -> list[list[dict[str, Any]]]:
    return [r.body["messages"] for r in emulator.message_requests]


def _assert_repaired_on_the_wire(emulator: AnthropicEmulator) -> None:
    wire = _wire(emulator)
    assert wire == [ENDS_WITH_ASSISTANT, [*ENDS_WITH_ASSISTANT, REMINDER_ON_WIRE]]
    assert all(set(m) == {"role", "content"} for request in wire for m in request)


def test_guarded_sync_create_recovers_and_the_original_is_untouched(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """guard(client) repairs the prefill 400 in 2 requests; the original client still fails."""
    with anthropic_emulator.client() as client:
        guarded = guard(client, REACTIVE)
        message = guarded.messages.create(model=MODEL, max_tokens=64, messages=ENDS_WITH_ASSISTANT)
        assert message.content[0].type == "text"
        assert message.content[0].text == DEFAULT_REPLY_TEXT
        _assert_repaired_on_the_wire(anthropic_emulator)
        with pytest.raises(anthropic.BadRequestError):
            client.messages.create(model=MODEL, max_tokens=64, messages=ENDS_WITH_ASSISTANT)


async def test_guarded_async_create_recovers(anthropic_emulator: AnthropicEmulator) -> None:
    """The async client takes the same 2 requests."""
    async with anthropic_emulator.async_client() as client:
        message = await guard(client, REACTIVE).messages.create(
            model=MODEL, max_tokens=64, messages=ENDS_WITH_ASSISTANT
        )
    assert message.content[0].type == "text"
    _assert_repaired_on_the_wire(anthropic_emulator)


def test_sync_stream_helper_and_create_stream(anthropic_emulator: AnthropicEmulator) -> None:
    """messages.stream() and create(stream=True) are repaired when the stream opens."""
    with anthropic_emulator.client() as client:
        guarded = guard(client, REACTIVE)
        with guarded.messages.stream(
            model=MODEL, max_tokens=64, messages=ENDS_WITH_ASSISTANT
        ) as stream:
            assert "".join(stream.text_stream) == DEFAULT_REPLY_TEXT
        _assert_repaired_on_the_wire(anthropic_emulator)
        anthropic_emulator.reset()
        events = guarded.messages.create(
            model=MODEL, max_tokens=64, messages=ENDS_WITH_ASSISTANT, stream=True
        )
        with events:
            assert [e.type for e in events][-1] == "message_stop"
        _assert_repaired_on_the_wire(anthropic_emulator)


async def test_async_stream_helper(anthropic_emulator: AnthropicEmulator) -> None:
    """The async stream helper is repaired too, with an async def processor awaited."""
    async with anthropic_emulator.async_client() as client:
        guarded = guard(client, [AsyncPrefillRepair()])
        async with guarded.messages.stream(
            model=MODEL, max_tokens=64, messages=ENDS_WITH_ASSISTANT
        ) as stream:
            text = "".join([t async for t in stream.text_stream])
    assert text == DEFAULT_REPLY_TEXT
    _assert_repaired_on_the_wire(anthropic_emulator)


def test_beta_messages_are_guarded(anthropic_emulator: AnthropicEmulator) -> None:
    """client.beta.messages posts to /v1/messages?beta=true and is repaired the same way."""
    with anthropic_emulator.client() as client:
        message = guard(client, REACTIVE).beta.messages.create(
            model=MODEL, max_tokens=64, messages=ENDS_WITH_ASSISTANT
        )
    assert message.content[0].type == "text"
    _assert_repaired_on_the_wire(anthropic_emulator)


def test_a_messages_request_at_another_url_is_recognised_by_its_path(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """A URL the SDK's resources never use (another query) is still a Messages request."""
    with anthropic_emulator.client() as client:
        message = guard(client, REACTIVE).post(
            "/v1/messages?source=test",
            body={"model": MODEL, "max_tokens": 64, "messages": ENDS_WITH_ASSISTANT},
            cast_to=anthropic.types.Message,
        )
    assert message.content[0].type == "text"
    _assert_repaired_on_the_wire(anthropic_emulator)


def test_persistent_rejection_raises_the_sdks_own_error(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """2 requests, then the SDK raises BadRequestError, as it would have without the guard."""
    anthropic_emulator.script(PREFILL_400, PREFILL_400)
    with anthropic_emulator.client() as client, pytest.raises(anthropic.BadRequestError) as info:
        guard(client, REACTIVE).messages.create(
            model=MODEL, max_tokens=64, messages=ENDS_WITH_ASSISTANT
        )
    assert type(info.value) is anthropic.BadRequestError
    assert api_message(info.value) == PREFILL_MESSAGE
    assert len(anthropic_emulator.message_requests) == 2


def test_other_errors_pass_through_after_one_request(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """A non-prefill 400 reaches the processors (as the SDK's typed error) and the caller."""
    recorder = ErrorRecorder()
    with anthropic_emulator.client() as client, pytest.raises(anthropic.BadRequestError):
        guard(client, [PrefillErrorHandler(), recorder]).messages.create(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": " "}]
        )
    assert len(anthropic_emulator.message_requests) == 1
    assert [type(e) for e in recorder.errors] == [anthropic.BadRequestError]


def test_transient_errors_are_left_to_the_sdks_retries(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """A 529 the SDK will retry is not shown to processors; its last one is."""
    anthropic_emulator.script(Fault(529), Fault(529), Fault(529))
    recorder = ErrorRecorder()
    with (
        anthropic_emulator.client(max_retries=2) as client,
        pytest.raises(anthropic.OverloadedError),
    ):
        guard(client, [recorder]).with_options(timeout=5).messages.create(
            model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    assert len(anthropic_emulator.message_requests) == 3
    assert [type(e) for e in recorder.errors] == [anthropic.OverloadedError]


def test_sdk_retry_then_repair(anthropic_emulator: AnthropicEmulator) -> None:
    """A 529 retried by the SDK, then the prefill 400 repaired by the middleware: 3 requests."""
    anthropic_emulator.script(Fault(529, headers={"retry-after-ms": "1"}))
    with anthropic_emulator.client(max_retries=2) as client:
        guard(client, REACTIVE).messages.create(
            model=MODEL, max_tokens=64, messages=ENDS_WITH_ASSISTANT
        )
    assert len(anthropic_emulator.message_requests) == 3
    assert _wire(anthropic_emulator)[-1][-1] == REMINDER_ON_WIRE


def test_same_semantics_as_the_agent(anthropic_emulator: AnthropicEmulator) -> None:
    """A raising processor is skipped, order holds, and the cap bounds the requests."""

    class Raiser:
        id = "raiser"

        def process_api_error(self, **kwargs: Any) -> ProcessAPIErrorResult | None:
            raise RuntimeError("bug")

    class Blind:
        id = "blind"

        def process_api_error(self, **kwargs: Any) -> ProcessAPIErrorResult | None:
            return ProcessAPIErrorResult(retry=True)

    with anthropic_emulator.client() as client:
        guarded = guard(client, [Raiser(), PrefillErrorHandler()])
        guarded.messages.create(model=MODEL, max_tokens=64, messages=ENDS_WITH_ASSISTANT)
        assert len(anthropic_emulator.message_requests) == 2
        anthropic_emulator.reset()
        capped = guard(client, [Blind(), PrefillErrorHandler()], max_processor_retries=2)
        with pytest.raises(anthropic.BadRequestError):
            capped.messages.create(model=MODEL, max_tokens=64, messages=ENDS_WITH_ASSISTANT)
        assert len(anthropic_emulator.message_requests) == 3


def test_requests_it_does_not_understand_pass_through(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """A non-Messages endpoint is never given to processors nor rewritten."""
    recorder = ErrorRecorder()
    with anthropic_emulator.client() as client, pytest.raises(anthropic.NotFoundError):
        guard(client, [recorder]).messages.count_tokens(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        )
    assert recorder.errors == []
    assert len(anthropic_emulator.requests) == 1


def test_guard_never_doubles_and_checks_its_argument(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """Guarding a guarded client returns it as is; guarding a non-client is a TypeError."""
    with anthropic_emulator.client() as client:
        once = guard(client)
        assert guard(once) is once
        ours = [m for m in once._middleware if isinstance(m, ErrorProcessorMiddleware)]
        assert len(ours) == 1
        assert len([m for m in client._middleware if isinstance(m, ErrorProcessorMiddleware)]) == 0
        copy = once.with_options(timeout=3)
        assert len([m for m in copy._middleware if isinstance(m, ErrorProcessorMiddleware)]) == 1
    with pytest.raises(TypeError, match="guard\\(\\) takes an anthropic client"):
        guard(object())  # type: ignore[type-var]


def test_default_stack_needs_one_request_for_a_known_model(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """With the recommended stack, a built-in no-prefill model is repaired before sending."""
    with anthropic_emulator.client() as client:
        guard(client).messages.create(model=MODEL, max_tokens=64, messages=ENDS_WITH_ASSISTANT)
    assert _wire(anthropic_emulator) == [[*ENDS_WITH_ASSISTANT, REMINDER_ON_WIRE]]


def _vertex(emulator: AnthropicEmulator, *, async_: bool = False) -> Any:
    kind = anthropic.AsyncAnthropicVertex if async_ else anthropic.AnthropicVertex
    return kind(
        region="us-east5",
        project_id="demo-project",
        access_token="token",
        base_url=emulator.base_url,
        max_retries=0,
    )


def test_vertex_client_is_guarded_end_to_end(anthropic_emulator: AnthropicEmulator) -> None:
    """Vertex's rawPredict shape (model in the path): repaired the same way, sync."""
    with _vertex(anthropic_emulator) as client:
        message = guard(client, REACTIVE).messages.create(
            model=MODEL, max_tokens=64, messages=ENDS_WITH_ASSISTANT
        )
    assert message.content[0].text == DEFAULT_REPLY_TEXT
    requests = anthropic_emulator.message_requests
    assert [r.path.rsplit("/", 1)[-1] for r in requests] == [f"{MODEL}:rawPredict"] * 2
    assert all("model" not in r.body for r in requests)
    assert requests[-1].body["messages"][-1] == REMINDER_ON_WIRE


async def test_async_vertex_stream_is_guarded(anthropic_emulator: AnthropicEmulator) -> None:
    """Vertex streaming (streamRawPredict), async, through the stream helper."""
    async with (
        _vertex(anthropic_emulator, async_=True) as client,
        guard(client, REACTIVE).messages.stream(
            model=MODEL, max_tokens=64, messages=ENDS_WITH_ASSISTANT
        ) as stream,
    ):
        text = "".join([t async for t in stream.text_stream])
    assert text == DEFAULT_REPLY_TEXT
    paths = [r.path.rsplit(":", 1)[-1] for r in anthropic_emulator.message_requests]
    assert paths == ["streamRawPredict"] * 2


def test_bedrock_client_is_guarded_end_to_end(anthropic_emulator: AnthropicEmulator) -> None:
    """Bedrock's invoke shape, with a Bedrock API key (anthropic 2.x; 1.x signs with botocore)."""
    import inspect

    if "api_key" not in inspect.signature(anthropic.AnthropicBedrock.__init__).parameters:
        pytest.skip("this anthropic version's Bedrock client needs botocore request signing")
    client = anthropic.AnthropicBedrock(
        api_key="bedrock-key", aws_region="us-east-1", base_url=anthropic_emulator.base_url
    )
    with client:
        message = guard(client, REACTIVE).messages.create(
            model="anthropic.claude-opus-4-6-v1:0", max_tokens=64, messages=ENDS_WITH_ASSISTANT
        )
    assert message.content[0].type == "text"
    requests = anthropic_emulator.message_requests
    assert [r.path for r in requests] == ["/model/anthropic.claude-opus-4-6-v1:0/invoke"] * 2
    assert requests[-1].body["messages"][-1] == REMINDER_ON_WIRE


def test_in_place_edits_never_reach_the_sdks_own_request(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """The body is used without a copy until processors run; their edits stay in the repair.

    The repaired request meets a 529 that the SDK retries from its own copy of the request:
    that retry must go out exactly as the caller wrote it, and the caller's data is unchanged.
    """
    anthropic_emulator.script(PREFILL_400, Fault(529, headers={"retry-after-ms": "1"}))
    messages: list[Any] = [dict(m) for m in ENDS_WITH_ASSISTANT]
    stop = ["END"]
    with anthropic_emulator.client(max_retries=1) as client:
        guard(client, [EditsInPlace(edit_message=True)]).messages.create(
            model=MODEL, max_tokens=64, messages=messages, stop_sequences=stop
        )
    sent = [(r.body["messages"], r.body["stop_sequences"]) for r in anthropic_emulator.requests]
    edited = [ENDS_WITH_ASSISTANT[0], {"role": "assistant", "content": "Here is one (edited)"}]
    repaired = ([*edited, REMINDER_ON_WIRE], ["END", "LEAK"])
    assert sent == [(ENDS_WITH_ASSISTANT, ["END"]), repaired] * 2
    assert messages == ENDS_WITH_ASSISTANT
    assert stop == ["END"]


def test_a_request_the_hooks_leave_alone_is_sent_as_the_sdk_built_it(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """No hook changed anything: the middleware hands on the SDK's own request, not a copy."""

    class Spy(anthropic.Middleware):
        def __init__(self) -> None:
            self.requests: list[anthropic.APIRequest] = []

        def handle(self, request: anthropic.APIRequest, call_next: Any) -> Any:
            self.requests.append(request)
            return call_next(request)

    outer, inner = Spy(), Spy()
    with anthropic_emulator.client(middleware=[outer, ErrorProcessorMiddleware(), inner]) as client:
        client.messages.create(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
        client.messages.create(model=MODEL, max_tokens=64, messages=ENDS_WITH_ASSISTANT)
    assert inner.requests[0] is outer.requests[0]
    assert inner.requests[1] is not outer.requests[1]  # the adaptive guard added the reminder
    assert _wire(anthropic_emulator)[1] == [*ENDS_WITH_ASSISTANT, REMINDER_ON_WIRE]


class CountingHook:
    """A ``before_send`` hook that appends nothing and counts its calls."""

    id = "counting-hook"

    def __init__(self) -> None:
        self.calls = 0

    def before_send(self, *, messages: MessageList, params: dict[str, Any]) -> None:
        self.calls += 1

    def process_api_error(self, **kwargs: Any) -> ProcessAPIErrorResult | None:
        return None


def test_a_repair_made_after_the_first_attempt_runs_before_send_once(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """The hooks prepare the first attempt only: a repair after it does not run them again,
    and goes out as the Agent's would (2 requests)."""
    hook = CountingHook()
    messages: list[Any] = [dict(m) for m in ENDS_WITH_ASSISTANT]
    with anthropic_emulator.client() as client:
        guard(client, [hook, PrefillErrorHandler()]).messages.create(
            model=MODEL, max_tokens=64, messages=messages
        )
    assert hook.calls == 1
    _assert_repaired_on_the_wire(anthropic_emulator)
    assert messages == ENDS_WITH_ASSISTANT


async def test_an_async_repair_made_after_the_first_attempt_runs_before_send_once(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """The async twin of the test above."""
    hook = CountingHook()
    async with anthropic_emulator.async_client() as client:
        await guard(client, [hook, PrefillErrorHandler()]).messages.create(
            model=MODEL, max_tokens=64, messages=ENDS_WITH_ASSISTANT
        )
    assert hook.calls == 1
    _assert_repaired_on_the_wire(anthropic_emulator)


@pytest.mark.parametrize("async_", [False, True])
async def test_a_repair_keeps_every_other_parameter_of_the_body(
    anthropic_emulator: AnthropicEmulator, async_: bool
) -> None:
    """A request sent as the SDK built it is repaired from the body it was sent with: the
    repair (a switch of model, which Vertex puts in the URL) keeps every other parameter and
    the conversation."""
    anthropic_emulator.script(Fault(404, {"type": "error", "error": {"type": "not_found_error"}}))
    stack = [*default_processors(), SwitchModel()]
    conversation = [ENDS_WITH_ASSISTANT[0]]
    if async_:
        async with _vertex(anthropic_emulator, async_=True) as client:
            await guard(client, stack).messages.create(
                model=MODEL, max_tokens=64, messages=conversation, stop_sequences=["END"]
            )
    else:
        with _vertex(anthropic_emulator) as client:
            guard(client, stack).messages.create(
                model=MODEL, max_tokens=64, messages=conversation, stop_sequences=["END"]
            )
    requests = anthropic_emulator.message_requests
    assert [r.path.rsplit("/", 1)[-1] for r in requests] == [
        f"{MODEL}:rawPredict",
        "claude-haiku-4-5:rawPredict",
    ]
    assert requests[0].body == requests[1].body
    assert requests[1].body["messages"] == conversation
    assert requests[1].body["stop_sequences"] == ["END"]


class _DoNothing(anthropic.Middleware):
    """The control: a middleware that only calls on."""

    def handle(self, request: Any, call_next: Any) -> Any:
        return call_next(request)

    async def handle_async(self, request: Any, call_next: Any) -> Any:
        return await call_next(request)


def _raw_clients(emulator: AnthropicEmulator, *, async_: bool) -> list[Any]:
    """An Anthropic and a Vertex client (and, on anthropic 2.x, a Bedrock one) at the emulator."""
    import inspect

    made: list[Any] = [
        (anthropic.AsyncAnthropic if async_ else anthropic.Anthropic)(
            api_key="k", base_url=emulator.base_url, max_retries=0
        ),
        _vertex(emulator, async_=async_),
    ]
    bedrock = anthropic.AsyncAnthropicBedrock if async_ else anthropic.AnthropicBedrock
    if "api_key" in inspect.signature(bedrock.__init__).parameters:
        made.append(
            bedrock(api_key="b", aws_region="us-east-1", base_url=emulator.base_url, max_retries=0)
        )
    return made


@pytest.mark.parametrize("messages", [[{"role": "user", "content": "hi"}], ENDS_WITH_ASSISTANT])
def test_a_raw_response_comes_back_as_the_sdk_gives_it(
    anthropic_emulator: AnthropicEmulator, messages: list[Any]
) -> None:
    """client.post(..., cast_to=httpx2.Response) through a guarded Anthropic, Vertex or
    Bedrock client: the raw response, exactly as through a do-nothing middleware (before:
    AttributeError 'Response' object has no attribute 'http_response', even on a 200)."""
    import httpx2

    body = {"model": MODEL, "max_tokens": 16, "messages": messages}
    for client in _raw_clients(anthropic_emulator, async_=False):
        chains = (guard(client, REACTIVE), client.with_middleware(_DoNothing()))
        # all closed: on anthropic 1.x, Bedrock's copy() makes a connection pool of its own
        with client, chains[0], chains[1]:
            outcomes = []
            for chained in chains:
                response = chained.post("/v1/messages", cast_to=httpx2.Response, body=body)
                assert isinstance(response, httpx2.Response)
                outcomes.append(response.status_code)
            assert outcomes[0] == outcomes[1] == (200 if len(messages) == 1 else 400)


async def test_an_async_raw_response_comes_back_as_the_sdk_gives_it(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """The async twin, on the same three clients."""
    import httpx2

    body = {"model": MODEL, "max_tokens": 16, "messages": ENDS_WITH_ASSISTANT}
    for client in _raw_clients(anthropic_emulator, async_=True):
        # closed as well: on anthropic 1.x, Bedrock's copy() makes a connection pool of its own
        async with client, guard(client, REACTIVE) as guarded:
            response = await guarded.post("/v1/messages", cast_to=httpx2.Response, body=body)
            assert isinstance(response, httpx2.Response)
            assert response.status_code == 400
