"""LiteLLM: install() reaches its Anthropic calls (sync, async, streams, the /v1/messages
passthrough) through its own HTTP client, against the emulator; uninstall() takes it out."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from prefill_guard import PrefillErrorHandler, ProcessAPIErrorResult, install, uninstall
from prefill_guard.messages import MessageList
from prefill_guard.testing import DEFAULT_REPLY_TEXT, AnthropicEmulator, Fault

from ..conftest import require

litellm: Any = require("litellm")

import httpx  # noqa: E402 - installed with LiteLLM
from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler  # noqa: E402

from prefill_guard.litellm_driver import GuardTransport  # noqa: E402

MODEL = "anthropic/claude-sonnet-4-6"
ENDS_WITH_ASSISTANT: list[Any] = [
    {"role": "user", "content": "Write a haiku."},
    {"role": "assistant", "content": "Here is one"},
]


@pytest.fixture(autouse=True)
def _always_uninstall() -> Iterator[None]:
    yield
    uninstall()


def _options(emulator: AnthropicEmulator) -> dict[str, Any]:
    return {"api_base": emulator.base_url, "api_key": "test-key", "max_tokens": 64}


def _last_roles(emulator: AnthropicEmulator) -> list[str]:
    return [m["role"] for m in emulator.message_requests[-1].body["messages"]]


def test_litellm_fails_without_prefill_guard(anthropic_emulator: AnthropicEmulator) -> None:
    """Control: LiteLLM's own client sends the conversation as it is and gets the 400."""
    with pytest.raises(litellm.BadRequestError, match="assistant message prefill"):
        litellm.completion(MODEL, ENDS_WITH_ASSISTANT, **_options(anthropic_emulator))
    assert len(anthropic_emulator.message_requests) == 1


def test_install_reaches_completion_before_the_request(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """With the recommended stack the adaptive guard knows the model: one request, which ends
    with the hidden reminder as a plain user turn (no metadata on the wire)."""
    install()
    reply = litellm.completion(MODEL, ENDS_WITH_ASSISTANT, **_options(anthropic_emulator))
    assert reply.choices[0].message.content == DEFAULT_REPLY_TEXT
    assert len(anthropic_emulator.message_requests) == 1
    last = anthropic_emulator.message_requests[0].body["messages"][-1]
    assert last["role"] == "user"
    assert "systemReminder" not in str(anthropic_emulator.message_requests[0].body)


def test_install_repairs_the_rejected_request(anthropic_emulator: AnthropicEmulator) -> None:
    """The reactive path: the 400 is read in LiteLLM's transport, repaired, sent again."""
    install([PrefillErrorHandler()])
    reply = litellm.completion(MODEL, ENDS_WITH_ASSISTANT, **_options(anthropic_emulator))
    assert reply.choices[0].message.content == DEFAULT_REPLY_TEXT
    assert len(anthropic_emulator.message_requests) == 2
    assert _last_roles(anthropic_emulator) == ["user", "assistant", "user"]


def test_install_reaches_a_sync_stream(anthropic_emulator: AnthropicEmulator) -> None:
    """completion(stream=True): the stream's text arrives whole after the repair."""
    install([PrefillErrorHandler()])
    chunks = litellm.completion(
        MODEL, ENDS_WITH_ASSISTANT, stream=True, **_options(anthropic_emulator)
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert text == DEFAULT_REPLY_TEXT
    assert len(anthropic_emulator.message_requests) == 2


async def test_install_reaches_acompletion(anthropic_emulator: AnthropicEmulator) -> None:
    """acompletion gets a guarded client from the installed callback."""
    install([PrefillErrorHandler()])
    reply = await litellm.acompletion(MODEL, ENDS_WITH_ASSISTANT, **_options(anthropic_emulator))
    assert reply.choices[0].message.content == DEFAULT_REPLY_TEXT
    assert len(anthropic_emulator.message_requests) == 2


async def test_install_reaches_an_async_stream(anthropic_emulator: AnthropicEmulator) -> None:
    """acompletion(stream=True) through the same guarded async client."""
    install([PrefillErrorHandler()])
    chunks = await litellm.acompletion(
        MODEL, ENDS_WITH_ASSISTANT, stream=True, **_options(anthropic_emulator)
    )
    text = "".join([chunk.choices[0].delta.content or "" async for chunk in chunks])
    assert text == DEFAULT_REPLY_TEXT
    assert len(anthropic_emulator.message_requests) == 2


async def test_install_reaches_the_messages_passthrough(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """litellm.anthropic.messages.acreate, LiteLLM's /v1/messages passthrough."""
    install([PrefillErrorHandler()])
    reply = await litellm.anthropic.messages.acreate(
        model=MODEL, messages=ENDS_WITH_ASSISTANT, **_options(anthropic_emulator)
    )
    assert reply["content"][0]["text"] == DEFAULT_REPLY_TEXT
    assert len(anthropic_emulator.message_requests) == 2


async def test_a_call_with_its_own_client_keeps_it(anthropic_emulator: AnthropicEmulator) -> None:
    """A caller's own ``client=`` is left alone (and so is not guarded)."""
    install([PrefillErrorHandler()])
    own = AsyncHTTPHandler(transport=httpx.AsyncHTTPTransport())
    with pytest.raises(litellm.BadRequestError, match="assistant message prefill"):
        await litellm.acompletion(
            MODEL, ENDS_WITH_ASSISTANT, client=own, **_options(anthropic_emulator)
        )
    await own.close()
    assert len(anthropic_emulator.message_requests) == 1


def test_the_processors_see_the_sdks_typed_error_and_request(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """A processor gets what it gets through a guarded anthropic client: the SDK's
    ``BadRequestError`` with the API's body, and the request's messages and parameters."""
    seen: list[tuple[BaseException, list[Any], dict[str, Any]]] = []

    class Recorder:
        id = "recorder"

        def process_api_error(
            self, error: anthropic.APIError, messages: MessageList, retry_count: int, params: Any
        ) -> ProcessAPIErrorResult:
            seen.append((error, messages.to_api(), dict(params)))
            return ProcessAPIErrorResult(retry=False)

    install([Recorder(), PrefillErrorHandler()])
    litellm.completion(MODEL, ENDS_WITH_ASSISTANT, **_options(anthropic_emulator))
    [(error, messages, params)] = seen
    assert isinstance(error, anthropic.BadRequestError)
    assert error.status_code == 400
    assert error.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert params["model"] == "claude-sonnet-4-6"
    assert params["max_tokens"] == 64


def test_nobody_repairing_gives_litellms_own_error(anthropic_emulator: AnthropicEmulator) -> None:
    """With no processor that answers, LiteLLM raises exactly what it raises unguarded."""
    install([])
    with pytest.raises(litellm.BadRequestError, match="assistant message prefill") as guarded:
        litellm.completion(MODEL, ENDS_WITH_ASSISTANT, **_options(anthropic_emulator))
    uninstall()
    with pytest.raises(litellm.BadRequestError) as bare:
        litellm.completion(MODEL, ENDS_WITH_ASSISTANT, **_options(anthropic_emulator))
    assert type(guarded.value) is type(bare.value)
    assert guarded.value.status_code == bare.value.status_code == 400
    assert len(anthropic_emulator.message_requests) == 2


def test_a_request_the_api_accepts_is_sent_as_litellm_built_it(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """A conversation ending with a user turn goes out as without the guard: the same body,
    the same length, the same headers but the per-request ones."""
    ends_with_user = [{"role": "user", "content": "hi"}]
    litellm.completion(MODEL, ends_with_user, **_options(anthropic_emulator))
    install()
    litellm.completion(MODEL, ends_with_user, **_options(anthropic_emulator))
    bare, guarded = anthropic_emulator.message_requests
    assert guarded.body == bare.body
    assert guarded.headers == bare.headers


def test_transient_errors_are_left_to_litellm(anthropic_emulator: AnthropicEmulator) -> None:
    """A 529 goes back to LiteLLM at once: its own retries (none here) are the only ones."""
    install()
    anthropic_emulator.script(*[Fault(529, headers={"retry-after-ms": "1"})] * 5)
    with pytest.raises(litellm.InternalServerError):
        litellm.completion(
            MODEL, ENDS_WITH_ASSISTANT, num_retries=0, **_options(anthropic_emulator)
        )
    assert len(anthropic_emulator.message_requests) == 1


def test_what_litellm_learns_the_anthropic_sdk_knows() -> None:
    """One process-wide knowledge: a model first seen rejecting prefill through LiteLLM costs
    no failed request through an anthropic client afterwards."""
    install()
    with AnthropicEmulator(no_prefill_models=["acme-1"]) as emulator:
        litellm.completion("anthropic/acme-1", ENDS_WITH_ASSISTANT, **_options(emulator))
        assert len(emulator.message_requests) == 2
        with emulator.client() as client:
            client.messages.create(model="acme-1", max_tokens=16, messages=ENDS_WITH_ASSISTANT)
        assert len(emulator.message_requests) == 3


def test_uninstall_takes_the_guard_out_of_litellm(anthropic_emulator: AnthropicEmulator) -> None:
    """After uninstall() LiteLLM has the transport and callbacks it had before, and the
    conversation fails again; a transport the user had set is wrapped, then put back."""
    mine = httpx.HTTPTransport()
    litellm.sync_transport = mine
    callbacks = list(litellm.callbacks)
    try:
        install()
        guarded = litellm.sync_transport
        assert isinstance(guarded, GuardTransport)
        assert guarded.inner is mine
        uninstall()
        assert litellm.sync_transport is mine
        assert litellm.callbacks == callbacks
        with pytest.raises(litellm.BadRequestError):
            litellm.completion(MODEL, ENDS_WITH_ASSISTANT, **_options(anthropic_emulator))
    finally:
        del litellm.sync_transport


async def test_async_calls_stop_being_guarded_after_uninstall(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """The async side too: no callback is left to hand out guarded clients."""
    install()
    await litellm.acompletion(MODEL, ENDS_WITH_ASSISTANT, **_options(anthropic_emulator))
    uninstall()
    with pytest.raises(litellm.BadRequestError):
        await litellm.acompletion(MODEL, ENDS_WITH_ASSISTANT, **_options(anthropic_emulator))


def _python(code: str) -> str:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_install_does_not_import_litellm_and_reaches_it_once_imported() -> None:
    """install() before LiteLLM is imported: it stays unimported until the program imports
    it, and is guarded from that import on."""
    out = _python(
        "import sys, prefill_guard\n"
        "prefill_guard.install()\n"
        "print('litellm' in sys.modules)\n"
        "import litellm\n"
        "print(type(litellm.sync_transport).__name__, len(litellm.callbacks))\n"
    )
    assert out.splitlines() == ["False", "GuardTransport 1"]


def test_uninstall_before_litellm_is_imported_leaves_it_alone() -> None:
    """install() then uninstall(), then the import: LiteLLM is never touched."""
    out = _python(
        "import sys, prefill_guard\n"
        "prefill_guard.install()\n"
        "prefill_guard.uninstall()\n"
        "import litellm\n"
        "print(vars(litellm).get('sync_transport'), len(litellm.callbacks))\n"
        "print([type(f).__module__ for f in sys.meta_path])\n"
    )
    first, finders = out.splitlines()
    assert first == "None 0"
    assert "prefill_guard" not in finders


def test_sync_calls_keep_the_environments_proxy(
    anthropic_emulator: AnthropicEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guarded synchronous transport sends through HTTP_PROXY as LiteLLM's own does
    (here the emulator is the proxy: it gets the request in absolute form)."""
    install([PrefillErrorHandler()])
    monkeypatch.setenv("HTTP_PROXY", anthropic_emulator.base_url)
    options = {**_options(anthropic_emulator), "api_base": "http://api.anthropic.invalid"}
    reply = litellm.completion(MODEL, ENDS_WITH_ASSISTANT, **options)
    assert reply.choices[0].message.content == DEFAULT_REPLY_TEXT
    paths = [request.path for request in anthropic_emulator.message_requests]
    assert paths == ["http://api.anthropic.invalid/v1/messages"] * 2


def test_settings_made_after_install_still_apply(anthropic_emulator: AnthropicEmulator) -> None:
    """LiteLLM's SSL and HTTP/2 settings are read at each request, not when install() ran:
    setting ``litellm.ssl_verify`` afterwards gives the next request a client made with it."""
    install()
    guarded = litellm.sync_transport
    litellm.completion(MODEL, ENDS_WITH_ASSISTANT, **_options(anthropic_emulator))
    before = guarded.inner._client()
    litellm.ssl_verify = False
    try:
        litellm.completion(MODEL, ENDS_WITH_ASSISTANT, **_options(anthropic_emulator))
        assert guarded.inner._client() is not before
    finally:
        litellm.ssl_verify = True
    assert guarded.inner._client() is before
