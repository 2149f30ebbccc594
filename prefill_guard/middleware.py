"""Drop-in everywhere: the processor pipeline as anthropic SDK client middleware.

Most people who meet the prefill 400 do not call the SDK themselves; a framework does.
:class:`ErrorProcessorMiddleware` runs the same pipeline as the Agent inside any anthropic
client, so the framework's code is fixed without being changed: :func:`guard` returns a guarded
copy of one client, and :func:`install` puts the middleware into every client created afterwards
(for frameworks that build their own client), reversibly.

The middleware runs inside the SDK's retry loop, once per attempt, and makes a run of each
Messages request (:class:`~prefill_guard.run.Run`), sent through the same loop as the Agent's.
Transient errors that the SDK is about to retry are left to it; any other error response is
turned into the SDK's own typed error and given to the processors, and if one asks to retry,
the request is resent with the rebuilt body (hidden metadata stripped). When nobody retries,
the error response goes back to the SDK, which raises exactly what the caller would have seen.
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anthropic
from anthropic import APIRequest, APIResponse, APIStatusError, AsyncAPIResponse
from anthropic._base_client import AsyncAPIClient, SyncAPIClient

from .errors import status_error_from_response
from .imports import when_imported
from .messages import MessageList
from .processors import default_processors
from .retries import RetryPolicy
from .run import AnyProcessor, Pipeline, Step, asend_with_retries, send_with_retries
from .telemetry import captures_content

__all__ = ["ErrorProcessorMiddleware", "guard", "install", "installed", "uninstall"]

logger = logging.getLogger("prefill_guard")

ClientT = TypeVar("ClientT", bound="SyncAPIClient | AsyncAPIClient")

_MESSAGES_PATHS = ("/v1/messages",)
_NO_TRANSIENT_RETRIES = RetryPolicy(max_retries=0)
"""A guarded client's runs retry nothing transient themselves: that is the SDK's retry loop's."""


class ErrorProcessorMiddleware(anthropic.Middleware):
    """Runs the error-processor pipeline for every Messages request of an anthropic client.

    Works for ``messages.create`` (streaming or not), ``messages.stream`` and ``beta.messages``,
    with the Anthropic, Bedrock and Vertex clients alike (the SDK applies the platform's URL and
    body shape after the middleware). Requests it does not understand pass through untouched.
    Semantics are the Agent's: order, per-processor retry counts, the cap, raising processors
    skipped, the original error when nobody retries.

    ``captures_content`` puts the messages actually sent on the retry and repair span events
    (:mod:`prefill_guard.telemetry`). :func:`guard` sets it by the client's own switch (its
    ``open_telemetry`` option, or the SDK's environment variable); it is off otherwise, and
    always for :func:`install`, whose one middleware serves clients with different switches.
    """

    def __init__(
        self,
        processors: Iterable[AnyProcessor] | None = None,
        *,
        max_processor_retries: int = 3,
    ) -> None:
        chosen = default_processors() if processors is None else processors
        self.pipeline = Pipeline(chosen, max_processor_retries=max_processor_retries)
        self.enabled = True
        self.captures_content = False

    def __repr__(self) -> str:
        ids = [getattr(p, "id", "?") for p in self.pipeline.processors]
        return f"ErrorProcessorMiddleware(processors={ids}, enabled={self.enabled})"

    def handle(self, request: APIRequest, call_next: Callable[[APIRequest], Any]) -> Any:
        """The synchronous client's hook: one run over the request, through the run's loop."""
        run = self._run(request)
        if run is None:
            return call_next(request)
        failed: list[APIResponse[Any]] = []  # the last error response, once it came

        def send(body: dict[str, Any]) -> Any:
            if failed:
                failed.pop().http_response.close()
            response = call_next(_rebuilt(request, body))
            # A low-level call (cast_to=httpx2.Response) gets the raw response back from the
            # chain, which the SDK returns as it is, error status or not: so do we.
            if not isinstance(response, APIResponse) or response.http_response.is_success:
                return response
            response.http_response.read()
            if _sdk_will_retry(request, response):
                run.hands_back = True
                return response
            failed.append(response)
            raise status_error_from_response(response)

        try:
            return send_with_retries(run, send)
        except APIStatusError:
            if not failed:
                raise
            return failed[0]  # the SDK raises its own error for it, as without the guard

    async def handle_async(
        self, request: APIRequest, call_next: Callable[[APIRequest], Any]
    ) -> Any:
        """The async client's hook: the same steps, with ``async def`` processors awaited."""
        run = self._run(request)
        if run is None:
            return await call_next(request)
        failed: list[AsyncAPIResponse[Any]] = []

        async def send(body: dict[str, Any]) -> Any:
            if failed:
                await failed.pop().http_response.aclose()
            response = await call_next(_rebuilt(request, body))
            if not isinstance(response, AsyncAPIResponse) or response.http_response.is_success:
                return response
            await response.http_response.aread()
            if _sdk_will_retry(request, response):
                run.hands_back = True
                return response
            failed.append(response)
            raise status_error_from_response(response)

        try:
            return await asend_with_retries(run, send)
        except APIStatusError:
            if not failed:
                raise
            return failed[0]

    def _run(self, request: APIRequest) -> Step | None:
        """A run of one step over a Messages request, or ``None`` for any other request."""
        if request.method.lower() != "post":
            return None
        if urlsplit(request.url).path.rstrip("/") not in _MESSAGES_PATHS:
            return None
        return self.step_for(request.json)

    def step_for(self, body: object) -> Step | None:
        """A run of one step over the JSON body of a Messages request, or ``None`` when the
        guard is switched off or the body is not a conversation (then it passes untouched).

        Every driver outside the SDK (LiteLLM's HTTP client) makes its runs here, so they are
        the SDK's: the same processors, the same request shape, the same typed errors.
        """
        if not self.enabled:
            return None
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return None
        try:
            messages = MessageList(body["messages"])
        except (TypeError, ValueError) as exc:
            logger.debug("passing a Messages request through untouched: %s", exc)
            return None
        params = copy.deepcopy({key: value for key, value in body.items() if key != "messages"})
        return Step(
            self.pipeline,
            _NO_TRANSIENT_RETRIES,
            messages,
            params,
            consults=APIStatusError,
            captures_content=self.captures_content,
        )


def _rebuilt(request: APIRequest, body: dict[str, Any]) -> APIRequest:
    """The request with ``body``: the very request when the body is what it already sends."""
    return request if body == request.json else request.copy(body=body)


def _sdk_will_retry(
    request: APIRequest, response: APIResponse[Any] | AsyncAPIResponse[Any]
) -> bool:
    """Whether the SDK's own retry loop is about to retry this response (then it is not ours)."""
    client: Any = response._client
    max_retries = request.options.get_max_retries(client.max_retries)
    return request.retries_taken < max_retries and bool(
        client._should_retry(response.http_response)
    )


def _has_guard(middleware: Iterable[object]) -> bool:
    return any(isinstance(entry, ErrorProcessorMiddleware) for entry in middleware)


def _refuse_async_for_sync(middleware: ErrorProcessorMiddleware, what: str) -> None:
    """A synchronous client cannot await an ``async def`` processor: say so up front."""
    if middleware.pipeline.has_async_processor:
        raise TypeError(
            f"{what}: an async processor (async def process_api_error) cannot run in a "
            "synchronous anthropic client; guard an async client (AsyncAnthropic) with it, "
            "or use a synchronous processor"
        )


def guard(
    client: ClientT,
    processors: Iterable[AnyProcessor] | None = None,
    *,
    max_processor_retries: int = 3,
) -> ClientT:
    """A copy of ``client`` with :class:`ErrorProcessorMiddleware`; ``client`` stays untouched.

    ``processors`` defaults to the recommended stack. A client that already has a guard of its
    own is returned as it is, so guarding twice never doubles it. A client that has the guard
    :func:`install` gave it gets a guard of its own in that one's place, which stays when
    :func:`uninstall` switches the installed one off. Async processors need an async client.
    """
    if not isinstance(client, (SyncAPIClient, AsyncAPIClient)):
        raise TypeError(f"guard() takes an anthropic client, got {type(client).__name__}")
    current = client.middleware
    installed_now = _installed_middleware
    if any(entry is not installed_now for entry in current if _has_guard([entry])):
        return client
    middleware = ErrorProcessorMiddleware(processors, max_processor_retries=max_processor_retries)
    middleware.captures_content = captures_content(client)
    if isinstance(client, SyncAPIClient):
        _refuse_async_for_sync(middleware, "guard()")
    others = [entry for entry in current if entry is not installed_now]
    guarded: ClientT = client.copy(middleware=[*others, middleware])  # type: ignore[union-attr]
    return guarded


# -- install / uninstall ---------------------------------------------------------------------
# The one piece of global state in the library: explicit, idempotent, thread-safe, reversible.
_install_lock = threading.Lock()
_installed_middleware: ErrorProcessorMiddleware | None = None
_patched: dict[type, tuple[Callable[..., None] | None, Callable[..., None]]] = {}
_undo_litellm: Callable[[], None] | None = None
_NOT_ASKED: Any = object()
"""The patched constructors' default for ``middleware``: the caller passed nothing."""
"""Each patched class: the ``__init__`` it defined itself before (None: inherited), and ours."""


def _client_classes() -> list[type]:
    """Every anthropic client class whose constructor takes ``middleware=``, once each.

    Once each: the package exports aliases (``Client`` is ``Anthropic``).
    """
    found: dict[type, None] = {}
    for name in dir(anthropic):
        cls = getattr(anthropic, name)
        if (
            isinstance(cls, type)
            and issubclass(cls, (SyncAPIClient, AsyncAPIClient))
            and "middleware" in inspect.signature(cls.__init__).parameters
        ):
            found[cls] = None
    return list(found)


def _patch(cls: type) -> None:
    original: Callable[..., None] = cls.__init__  # type: ignore[misc]

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, middleware: Any = _NOT_ASKED, **kwargs: Any) -> None:
        # Only a client made without a middleware= argument gets the guard. Any value given is
        # kept as it is: a list, an empty one, None (which copy(middleware=None) passes on to
        # clear the list), and the list copy() and with_options() pass on from the original.
        if middleware is _NOT_ASKED:
            current = _installed_middleware
            middleware = None if current is None else [current]
        original(self, *args, middleware=middleware, **kwargs)

    _patched[cls] = (cls.__dict__.get("__init__"), __init__)
    cls.__init__ = __init__  # type: ignore[misc]


def install(
    processors: Iterable[AnyProcessor] | None = None,
    *,
    max_processor_retries: int = 3,
) -> ErrorProcessorMiddleware:
    """Put the middleware into every anthropic client created from now on, sync and async.

    For frameworks that construct their own client (LangChain's ChatAnthropic does). Covers
    the Anthropic, Bedrock and Vertex clients. A client created with a ``middleware=`` argument
    of any value (a list, ``None``; also a copy, which passes its original's list on) gets
    exactly that; only a client created without one gets the guard. Idempotent (a second call
    returns the installed middleware), thread-safe, and reversed by :func:`uninstall`. Since
    it guards synchronous clients too, async processors are refused: use :func:`guard` on
    async clients for those.

    When LiteLLM is installed, its Anthropic calls are guarded too, by the same middleware
    (:mod:`prefill_guard.litellm_driver`), from the moment the program imports it; install()
    itself does not import it.
    """
    global _installed_middleware, _undo_litellm
    with _install_lock:
        if _installed_middleware is not None:
            return _installed_middleware
        middleware = ErrorProcessorMiddleware(
            processors, max_processor_retries=max_processor_retries
        )
        _refuse_async_for_sync(middleware, "install()")
        _installed_middleware = middleware
        for cls in _client_classes():
            _patch(cls)
        logger.info("installed prefill_guard into %d anthropic client classes", len(_patched))
        _undo_litellm = _reach_litellm(middleware)
        return middleware


def uninstall() -> None:
    """Undo :func:`install`: new clients get no middleware, and existing ones stop using it.

    Only what install() did is undone: a constructor that another library wrapped after
    install() keeps its wrapper (ours, inside it, then passes every call straight through),
    and guards made by :func:`guard` stay on. LiteLLM gets back the transport and callbacks
    it had (or, not imported yet, is left alone when it is).
    """
    global _installed_middleware, _undo_litellm
    with _install_lock:
        if _installed_middleware is None:
            return
        _installed_middleware.enabled = False
        _installed_middleware = None
        if _undo_litellm is not None:
            _undo_litellm()
            _undo_litellm = None
        for cls, (original, ours) in _patched.items():
            if cls.__dict__.get("__init__") is not ours:
                continue  # wrapped again by someone else: leave theirs in place
            if original is None:
                del cls.__init__  # type: ignore[misc]
            else:
                cls.__init__ = original  # type: ignore[misc]
        _patched.clear()


def _reach_litellm(middleware: ErrorProcessorMiddleware) -> Callable[[], None]:
    """Hook the middleware's runs into LiteLLM once it is imported; return what unhooks them.

    :mod:`prefill_guard.litellm_driver` imports LiteLLM, an optional package, so it is loaded
    by name here, and only once LiteLLM itself is imported (see :mod:`prefill_guard.imports`).
    """
    detaches: list[Callable[[], None]] = []
    undone = False
    lock = threading.Lock()  # attach() may run in the thread importing LiteLLM

    def attach() -> None:
        with lock:
            if undone:  # uninstall() came while LiteLLM was being imported
                return
            driver = importlib.import_module("prefill_guard.litellm_driver")
            detaches.append(driver.attach(middleware.step_for))

    cancel = when_imported("litellm", attach)

    def undo() -> None:
        nonlocal undone
        cancel()
        with lock:
            undone = True
            while detaches:
                detaches.pop()()

    return undo


def installed() -> ErrorProcessorMiddleware | None:
    """The middleware :func:`install` put in place, or ``None``."""
    return _installed_middleware
