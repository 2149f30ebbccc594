"""Shared fixtures: a harness that runs one conversation through any of the four drivers, and the
fixtures and helpers the emulator's own tests (test_testing_*.py) share."""

from __future__ import annotations

import importlib
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types import Message

from prefill_guard import (
    Agent,
    MemoryStore,
    MessageList,
    PrefillErrorHandler,
    ProcessAPIErrorResult,
    RetryDetails,
    RunResult,
    SQLiteStore,
    ThreadStore,
    api_error_type,
    api_message,
    shared_knowledge,
)
from prefill_guard.stores import AsyncThreadStore
from prefill_guard.testing import DEFAULT_RULES, AnthropicEmulator

DRIVERS = ("generate", "agenerate", "stream", "astream")
STORE_KINDS = ("memory", "sqlite", "postgres")
"""Every thread store: the contract tests and the Agent's thread tests run on each."""


def require(module: str) -> ModuleType:
    """Import an optional framework, skipping the test module when it is not installed.

    A CI environment lists the frameworks it must test in PREFILL_GUARD_REQUIRE_EXTRAS
    (comma-separated module names); for those a missing import fails instead of skipping.
    """
    required = os.environ.get("PREFILL_GUARD_REQUIRE_EXTRAS", "").split(",")
    if module in required:
        return importlib.import_module(module)
    imported: ModuleType = pytest.importorskip(module)
    return imported


def postgres_url() -> str:
    """The test server's URL (``PREFILL_GUARD_POSTGRES_URL``; ``scripts/postgres.sh start DIR``
    starts a throwaway server and prints one), or a skip: a failure when CI requires it
    (``postgres`` in ``PREFILL_GUARD_REQUIRE_EXTRAS``)."""
    require("psycopg")
    url = os.environ.get("PREFILL_GUARD_POSTGRES_URL", "")
    if url:
        return url
    reason = (
        "no PostgreSQL server: set PREFILL_GUARD_POSTGRES_URL (scripts/postgres.sh start DIR "
        "starts one and prints its URL)"
    )
    if "postgres" in os.environ.get("PREFILL_GUARD_REQUIRE_EXTRAS", "").split(","):
        pytest.fail(reason)
    pytest.skip(reason)


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A connection string whose tables live in a new, empty schema, dropped afterwards: each
    test sees a database of its own on the one server."""
    url = postgres_url()
    with require("prefill_guard.testing.postgres").temporary_schema(url) as conninfo:
        yield conninfo


@contextmanager
def store_location(kind: str, directory: Path) -> Iterator[str]:
    """Where a new, empty store of ``kind`` ("sqlite" or "postgres") opens: a file's path, or
    a connection string to a schema of its own."""
    if kind == "sqlite":
        yield str(directory / "threads.db")
    else:
        with postgres_schema() as conninfo:
            yield conninfo


def store_class(kind: str) -> Any:
    """The class of the store ``kind`` ("sqlite" or "postgres"), opened with its location."""
    return SQLiteStore if kind == "sqlite" else require("prefill_guard.postgres").PostgresStore


@contextmanager
def open_store(kind: str, directory: Path) -> Iterator[ThreadStore]:
    """A new, empty store of ``kind`` (``STORE_KINDS``), closed afterwards."""
    if kind == "memory":
        with MemoryStore() as memory:
            yield memory
        return
    with store_location(kind, directory) as where, store_class(kind)(where) as opened:
        yield opened


@pytest.fixture(params=STORE_KINDS)
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ThreadStore]:
    """Each store kind, new and empty, closed afterwards (an async store with ``aclose``, which
    also closes the connections of any async call the test made on it)."""
    with open_store(request.param, tmp_path) as opened:
        yield opened
        if isinstance(opened, AsyncThreadStore):
            await opened.aclose()  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _fresh_shared_knowledge() -> Iterator[None]:
    """Each test starts with a process that has learned nothing (what guards learn is shared
    by the whole process, so one test's learning would otherwise reach the next)."""
    shared_knowledge().clear()
    yield
    shared_knowledge().clear()


def treat_like(emulator: AnthropicEmulator, aliases: dict[str, str]) -> None:
    """Make ``emulator`` apply every rule of each model in ``aliases`` to its alias too.

    For models the adaptive guard cannot know: an alias (a gateway's name, a fine-tune's) whose
    version the model table cannot read, standing for a model that rejects prefill.
    """
    for name, rule in DEFAULT_RULES.items():
        emulator.set_rule(name, lambda seen, rule=rule: rule(aliases.get(seen, seen)))


class SwitchModel:
    """A params-aware test processor: on its first chance, switch to ``model`` and retry.

    ``only`` limits it to errors of those classes.
    """

    id = "switch-model"

    def __init__(
        self, model: str = "claude-haiku-4-5", only: tuple[type[BaseException], ...] = ()
    ) -> None:
        self.model = model
        self.only = only or (anthropic.APIError,)

    def process_api_error(
        self,
        *,
        error: anthropic.APIError,
        messages: MessageList,
        retry_count: int,
        params: dict[str, Any],
    ) -> ProcessAPIErrorResult | None:
        if retry_count or not isinstance(error, self.only):
            return None
        params["model"] = self.model
        return ProcessAPIErrorResult(retry=True)


class EditsInPlace:
    """A test processor that edits what it is given in place, then repairs the prefill 400.

    It appends "LEAK" to ``params["stop_sequences"]`` and, with ``edit_message``, " (edited)"
    to the last message: edits that must never reach the caller, the Agent or the SDK.
    """

    id = "edits-in-place"

    def __init__(self, *, edit_message: bool = False) -> None:
        self.edit_message = edit_message

    def process_api_error(
        self,
        *,
        error: anthropic.APIError,
        messages: MessageList,
        retry_count: int,
        params: dict[str, Any],
    ) -> ProcessAPIErrorResult | None:
        if self.edit_message:
            messages[-1]["content"] += " (edited)"
        params["stop_sequences"].append("LEAK")
        return PrefillErrorHandler().process_api_error(
            error=error, messages=messages, retry_count=retry_count
        )


class ErrorRecorder:
    """A test processor that records every error it is shown and never asks to retry."""

    id = "error-recorder"

    def __init__(self) -> None:
        self.errors: list[anthropic.APIError] = []

    def process_api_error(
        self, *, error: anthropic.APIError, messages: MessageList, retry_count: int
    ) -> ProcessAPIErrorResult | None:
        self.errors.append(error)
        return None


class AsyncPrefillRepair:
    """An ``async def`` processor doing PrefillErrorHandler's repair, for the async drivers."""

    id = "async-repair"

    async def process_api_error(
        self, *, error: anthropic.APIError, messages: MessageList, retry_count: int
    ) -> ProcessAPIErrorResult | None:
        return PrefillErrorHandler().process_api_error(
            error=error, messages=messages, retry_count=retry_count
        )


class Harness:
    """Builds Agents wired to the emulator for one driver and runs conversations through it.

    Waits are recorded instead of slept; retries are recorded through an on_retry hook; the
    text a streaming consumer received is kept in ``received``.
    """

    def __init__(self, emulator: AnthropicEmulator, driver: str) -> None:
        self.emulator = emulator
        self.driver = driver
        self.waits: list[float] = []
        self.retries: list[RetryDetails] = []
        self.received: list[str] = []
        self._clients: list[anthropic.Anthropic | anthropic.AsyncAnthropic] = []

    @property
    def streaming(self) -> bool:
        return self.driver in ("stream", "astream")

    def agent(self, model: str = "claude-opus-4-6", **kwargs: Any) -> Agent:
        client_kwargs = kwargs.pop("client_kwargs", {})
        client: anthropic.Anthropic | anthropic.AsyncAnthropic
        if self.driver in ("generate", "stream"):
            client = self.emulator.client(**client_kwargs)
        else:
            client = self.emulator.async_client(**client_kwargs)
        self._clients.append(client)
        kwargs.setdefault("sleep", self.waits.append)
        kwargs.setdefault("on_retry", [self.retries.append])
        return Agent(model, client=client, **kwargs)

    async def run(self, agent: Agent, messages: MessageList | list[Any] | str) -> RunResult:
        if self.driver == "generate":
            return agent.generate(messages)
        if self.driver == "agenerate":
            return await agent.agenerate(messages)
        if self.driver == "stream":
            with agent.stream(messages) as stream:
                for text in stream.text_stream:
                    self.received.append(text)
                return stream.result
        async with agent.astream(messages) as astream:
            async for text in astream.text_stream:
                self.received.append(text)
            return astream.result

    async def close(self) -> None:
        for client in self._clients:
            if isinstance(client, anthropic.AsyncAnthropic):
                await client.close()
            else:
                client.close()


@pytest.fixture(params=DRIVERS)
async def harness(
    request: pytest.FixtureRequest, anthropic_emulator: AnthropicEmulator
) -> AsyncIterator[Harness]:
    """A Harness for each of generate, agenerate, stream and astream."""
    harness = Harness(anthropic_emulator, request.param)
    yield harness
    await harness.close()


# -- the emulator's own tests ------------------------------------------------------------------

PREFILL_TEXT = (
    "This model does not support assistant message prefill. "
    "The conversation must end with a user message."
)
USER_HI: list[Any] = [{"role": "user", "content": "hi"}]
REPLY_CHUNKS = ["Hello ", "from ", "the ", "prefill_guard ", "emulator."]
"""The default reply's text deltas: each word with its trailing whitespace."""


@pytest.fixture
def emu() -> Iterator[AnthropicEmulator]:
    """A started emulator with default settings, stopped after the test."""
    with AnthropicEmulator() as emulator:
        yield emulator


@pytest.fixture
def client(emu: AnthropicEmulator) -> Iterator[anthropic.Anthropic]:
    """A sync SDK client on `emu`, over HTTP."""
    with emu.client() as sdk_client:
        yield sdk_client


def create(client: anthropic.Anthropic, model: str, messages: list[Any]) -> Message:
    return client.messages.create(model=model, max_tokens=64, messages=messages)


def raw_post(emu: AnthropicEmulator, body: bytes, headers: dict[str, str]) -> httpx2.Response:
    with httpx2.Client(base_url=emu.base_url) as http:
        response: httpx2.Response = http.post("/v1/messages", content=body, headers=headers)
    return response


def assert_error_shape(body: object, error_type: str, message: str) -> None:
    assert isinstance(body, dict)
    assert set(body) == {"type", "error", "request_id"}
    assert body["type"] == "error"
    assert body["error"] == {"type": error_type, "message": message}
    request_id = body["request_id"]
    assert isinstance(request_id, str)
    assert request_id.startswith("req_")
    assert len(request_id) == len("req_") + 24
    assert request_id[4:].isalnum()


def assert_bad_request(exc: anthropic.BadRequestError, message: str) -> None:
    assert exc.status_code == 400
    assert api_error_type(exc) == "invalid_request_error"
    assert api_message(exc) == message
    assert exc.request_id is not None
    assert exc.request_id.startswith("req_")
    assert_error_shape(exc.body, "invalid_request_error", message)
    assert isinstance(exc.body, dict)
    assert exc.body["request_id"] == exc.request_id


def stream_text(client: anthropic.Anthropic, received: list[str]) -> None:
    """Stream a reply through `client.messages.stream`, appending each text delta as it comes."""
    with client.messages.stream(
        model="claude-haiku-4-5", max_tokens=64, messages=USER_HI
    ) as stream:
        received.extend(stream.text_stream)


async def astream_text(client: anthropic.AsyncAnthropic, received: list[str]) -> None:
    """The async twin of `stream_text`."""
    async with client.messages.stream(
        model="claude-haiku-4-5", max_tokens=64, messages=USER_HI
    ) as stream:
        async for text in stream.text_stream:
            received.append(text)
