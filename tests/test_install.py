"""install() / uninstall(): the middleware in every client created afterwards, reversibly."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from prefill_guard import ErrorProcessorMiddleware, PrefillErrorHandler, guard, install, uninstall
from prefill_guard.middleware import installed
from prefill_guard.testing import AnthropicEmulator

ENDS_WITH_ASSISTANT: list[Any] = [
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "Hello"},
]


@pytest.fixture(autouse=True)
def _always_uninstall() -> Iterator[None]:
    yield
    uninstall()


def _ours(client: Any) -> list[ErrorProcessorMiddleware]:
    return [m for m in client._middleware if isinstance(m, ErrorProcessorMiddleware)]


def _create(client: anthropic.Anthropic) -> anthropic.types.Message:
    return client.messages.create(
        model="claude-opus-4-6", max_tokens=16, messages=ENDS_WITH_ASSISTANT
    )


def test_install_fixes_clients_created_afterwards(anthropic_emulator: AnthropicEmulator) -> None:
    """A client made after install() recovers; the request count shows the reactive repair."""
    middleware = install([PrefillErrorHandler()])
    assert installed() is middleware
    with anthropic.Anthropic(api_key="k", base_url=anthropic_emulator.base_url) as client:
        assert _create(client).content[0].type == "text"
    assert len(anthropic_emulator.message_requests) == 2


async def test_install_covers_async_clients(anthropic_emulator: AnthropicEmulator) -> None:
    """AsyncAnthropic clients get the same middleware, driven by handle_async."""
    install([PrefillErrorHandler()])
    async with anthropic.AsyncAnthropic(api_key="k", base_url=anthropic_emulator.base_url) as c:
        await c.messages.create(
            model="claude-opus-4-6", max_tokens=16, messages=ENDS_WITH_ASSISTANT
        )
    assert len(anthropic_emulator.message_requests) == 2


def test_uninstall_reverses_everything(anthropic_emulator: AnthropicEmulator) -> None:
    """After uninstall(): new clients have no middleware, and existing ones stop using it."""
    install([PrefillErrorHandler()])
    with anthropic.Anthropic(api_key="k", base_url=anthropic_emulator.base_url) as before:
        uninstall()
        assert installed() is None
        with anthropic.Anthropic(api_key="k", base_url=anthropic_emulator.base_url) as after:
            assert _ours(after) == []
            with pytest.raises(anthropic.BadRequestError):
                _create(after)
        with pytest.raises(anthropic.BadRequestError):
            _create(before)
    assert len(anthropic_emulator.message_requests) == 2


def test_install_is_idempotent_and_never_doubles(anthropic_emulator: AnthropicEmulator) -> None:
    """A second install() returns the first; copies and guard() keep exactly one middleware."""
    first = install()
    assert install() is first
    with anthropic.Anthropic(api_key="k", base_url=anthropic_emulator.base_url) as client:
        assert _ours(client) == [first]
        assert _ours(client.with_options(timeout=2)) == [first]
        assert len(_ours(guard(client))) == 1


def test_install_is_thread_safe() -> None:
    """Eight threads installing at once: one middleware, each client gets it exactly once."""
    results: list[ErrorProcessorMiddleware] = []

    def run() -> None:
        results.append(install())

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(m) for m in results}) == 1
    with anthropic.Anthropic(api_key="k") as client:
        assert _ours(client) == [results[0]]


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (
            anthropic.AnthropicBedrock,
            {"aws_region": "us-east-1", "aws_access_key": "a", "aws_secret_key": "b"},
        ),
        (
            anthropic.AsyncAnthropicBedrock,
            {"aws_region": "us-east-1", "aws_access_key": "a", "aws_secret_key": "b"},
        ),
        (anthropic.AnthropicVertex, {"region": "us-east5", "project_id": "p", "access_token": "t"}),
        (
            anthropic.AsyncAnthropicVertex,
            {"region": "us-east5", "project_id": "p", "access_token": "t"},
        ),
    ],
)
def test_install_covers_bedrock_and_vertex(cls: type, kwargs: dict[str, Any]) -> None:
    """The Bedrock and Vertex clients are constructed with the middleware too."""
    middleware = install()
    client = cls(**kwargs)
    assert _ours(client) == [middleware]
    uninstall()
    assert _ours(cls(**kwargs)) == []


def test_uninstall_restores_the_original_constructors() -> None:
    """Every patched class gets back exactly its own __init__ (or none, if it inherited it)."""

    def constructors() -> dict[str, object]:
        classes = {name: getattr(anthropic, name) for name in dir(anthropic)}
        return {n: vars(c).get("__init__") for n, c in classes.items() if isinstance(c, type)}

    before = constructors()
    install()
    assert constructors()["Anthropic"] is not before["Anthropic"]
    uninstall()
    assert constructors() == before


class _Tagger(anthropic.Middleware):
    """A do-nothing middleware of the caller's own."""

    def handle(self, request: Any, call_next: Any) -> Any:
        return call_next(request)


def test_a_client_that_names_its_middleware_gets_exactly_that(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """With install() active, an explicit middleware= list (also through copy() and
    with_options()) is kept exactly; only a client that asks for none gets the guard."""
    middleware = install()
    mine = _Tagger()
    url = anthropic_emulator.base_url
    with anthropic.Anthropic(api_key="k", base_url=url) as client:
        assert client.middleware == (middleware,)
        assert client.copy().middleware == (middleware,)
        assert client.with_options(timeout=3).middleware == (middleware,)
        assert client.copy(middleware=[]).middleware == ()
        assert client.with_options(middleware=[mine]).middleware == (mine,)
        with pytest.raises(anthropic.BadRequestError):  # no guard: the SDK's own behaviour
            _create(client.copy(middleware=[]))
    with anthropic.Anthropic(api_key="k", base_url=url, middleware=[mine]) as client:
        assert client.middleware == (mine,)
    with anthropic.Anthropic(api_key="k", base_url=url, middleware=[]) as client:
        assert client.middleware == ()
        assert client.copy(middleware=None).middleware == ()  # copy's way to clear the list
    with anthropic.Anthropic(api_key="k", base_url=url, middleware=None) as client:
        assert client.middleware == ()


def test_uninstall_leaves_a_constructor_wrapped_after_install() -> None:
    """Another library that wraps Anthropic.__init__ after install() keeps its wrapper when
    uninstall() runs (before, uninstall() put back the constructor saved at install time,
    dropping the wrapper); the clients made through it get no guard any more."""
    original = vars(anthropic.Anthropic)["__init__"]
    install()
    ours = anthropic.Anthropic.__init__
    calls: list[int] = []

    def theirs(self: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(1)
        ours(self, *args, **kwargs)

    anthropic.Anthropic.__init__ = theirs  # type: ignore[method-assign]
    try:
        uninstall()
        assert anthropic.Anthropic.__init__ is theirs
        with anthropic.Anthropic(api_key="k") as client:
            assert client.middleware == ()
        assert calls == [1]
    finally:
        anthropic.Anthropic.__init__ = original  # type: ignore[method-assign]


def test_a_client_guarded_after_install_stays_guarded_after_uninstall(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """guard() of an installed-guard client gives it a guard of its own, which uninstall()
    does not switch off (before, it returned the client, unguarded after uninstall)."""
    install([PrefillErrorHandler()])
    with anthropic.Anthropic(api_key="k", base_url=anthropic_emulator.base_url) as client:
        guarded = guard(client, [PrefillErrorHandler()])
        assert len(_ours(guarded)) == 1
        assert _ours(guarded) != _ours(client)
        uninstall()
        assert _create(guarded).content[0].type == "text"
        with pytest.raises(anthropic.BadRequestError):
            _create(client)
    assert len(anthropic_emulator.message_requests) == 3


class _AsyncRepair:
    id = "async-repair"

    async def process_api_error(self, *, error: Any, messages: Any, retry_count: int) -> Any:
        return None


def test_async_processors_are_refused_for_sync_clients() -> None:
    """guard(sync client) and install() (which guards sync clients too) refuse an async
    processor up front; before, every API error of a sync client came out as a TypeError."""
    with pytest.raises(TypeError, match=r"guard\(\): an async processor"):
        guard(anthropic.Anthropic(api_key="k"), [_AsyncRepair()])
    with pytest.raises(TypeError, match=r"install\(\): an async processor"):
        install([_AsyncRepair()])
    assert installed() is None
    assert len(_ours(guard(anthropic.AsyncAnthropic(api_key="k"), [_AsyncRepair()]))) == 1
