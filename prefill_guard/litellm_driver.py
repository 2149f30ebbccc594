"""LiteLLM as one more driver: the installed guard inside LiteLLM's own HTTP clients.

LiteLLM speaks to the Messages API with httpx, not with the anthropic SDK, so the SDK's
middleware never sees its requests. This module puts the same guard one layer lower, in the
httpx transport LiteLLM's Anthropic calls go through: :class:`GuardTransport` (and its async
twin) makes one run per request, of the same kind a guarded anthropic client makes
(:meth:`~prefill_guard.middleware.ErrorProcessorMiddleware.step_for`), so the processors see
the same request body and the SDK's own typed errors, and the adaptive guard learns from both.

It reaches LiteLLM through two public extension points: ``litellm.sync_transport`` (the
transport every synchronous LiteLLM HTTP client is made with) and a ``CustomLogger`` in
``litellm.callbacks`` whose ``async_pre_call_deployment_hook`` hands LiteLLM's async Anthropic
calls a client of ours (async clients take no transport setting). :func:`attach` does both;
:func:`~prefill_guard.install` calls it once LiteLLM is imported. This module imports LiteLLM,
so nothing else in the package imports it: ``install()`` loads it by name, only then.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import threading
from collections.abc import Callable
from typing import Any

import httpx
import litellm
from anthropic import APIStatusError
from litellm.integrations.custom_logger import CustomLogger
from litellm.llms.custom_httpx.http_handler import (
    AsyncHTTPHandler,
    get_ssl_configuration,
    http2_enabled,
)
from litellm.types.utils import CallTypes

from .errors import status_error_from_http
from .run import Step, asend_with_retries, send_with_retries

__all__ = ["AsyncGuardTransport", "GuardTransport", "StepFor", "attach"]

logger = logging.getLogger("prefill_guard")

StepFor = Callable[[object], "Step | None"]
"""Makes the run of one Messages request from its JSON body (``None``: pass it untouched)."""

_MESSAGES_PATH = "/v1/messages"
_ASYNC_CALLS = frozenset(
    {CallTypes.acompletion, CallTypes.anthropic_messages, CallTypes.aanthropic_messages}
)
"""The async LiteLLM calls that reach the Messages API: chat completions and the passthrough
(whose async call LiteLLM names ``anthropic_messages``)."""


class GuardTransport(httpx.BaseTransport):
    """An httpx transport that runs the error processors for every Messages request it sends.

    Other requests, successful responses and streams pass through untouched. An error response
    is read and handed to the processors as the anthropic SDK's typed error; when one repairs
    the request it is sent again with the rebuilt body, and when none does the error response
    goes back to the caller (LiteLLM then raises its own error for it, as without the guard).
    """

    def __init__(self, inner: httpx.BaseTransport, step_for: StepFor) -> None:
        self.inner = inner
        self._step_for = step_for

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        original = _messages_body(request)
        step = None if original is None else self._step_for(original)
        if step is None:
            return self.inner.handle_request(request)
        failed: list[httpx.Response] = []  # the last error response, once it came

        def send(body: dict[str, Any]) -> httpx.Response:
            failed.clear()
            response = self.inner.handle_request(_rebuilt(request, original, body))
            if not response.is_error:
                return response
            try:
                content = b"".join(response.iter_raw())
            finally:
                response.close()
            failed.append(_kept(response, content, request))
            raise _typed_error(response, content, request)

        try:
            return send_with_retries(step, send)
        except APIStatusError:
            if not failed:
                raise
            return failed[0]

    def close(self) -> None:
        self.inner.close()


class AsyncGuardTransport(httpx.AsyncBaseTransport):
    """The async twin of :class:`GuardTransport`: the same steps, with ``async def``
    processors awaited."""

    def __init__(self, inner: httpx.AsyncBaseTransport, step_for: StepFor) -> None:
        self.inner = inner
        self._step_for = step_for

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        original = _messages_body(request)
        step = None if original is None else self._step_for(original)
        if step is None:
            return await self.inner.handle_async_request(request)
        failed: list[httpx.Response] = []

        async def send(body: dict[str, Any]) -> httpx.Response:
            failed.clear()
            response = await self.inner.handle_async_request(_rebuilt(request, original, body))
            if not response.is_error:
                return response
            try:
                content = b"".join([chunk async for chunk in response.aiter_raw()])
            finally:
                await response.aclose()
            failed.append(_kept(response, content, request))
            raise _typed_error(response, content, request)

        try:
            return await asend_with_retries(step, send)
        except APIStatusError:
            if not failed:
                raise
            return failed[0]

    async def aclose(self) -> None:
        await self.inner.aclose()


def _messages_body(request: httpx.Request) -> object:
    """The JSON body of a Messages request, or ``None`` for any other request."""
    if request.method != "POST" or not request.url.path.rstrip("/").endswith(_MESSAGES_PATH):
        return None
    try:
        body: object = json.loads(request.content)
    except (UnicodeDecodeError, json.JSONDecodeError, httpx.RequestNotRead):
        return None
    return body


def _rebuilt(request: httpx.Request, original: object, body: dict[str, Any]) -> httpx.Request:
    """The request with ``body``: the very request when the body is what it already sends."""
    if body == original:
        return request
    headers = [(k, v) for k, v in request.headers.raw if k.lower() != b"content-length"]
    return httpx.Request(
        request.method,
        request.url,
        headers=headers,
        content=json.dumps(body).encode(),
        extensions=request.extensions,
    )


def _kept(response: httpx.Response, content: bytes, request: httpx.Request) -> httpx.Response:
    """The error response again, its body (read to decide on it) held in memory."""
    return httpx.Response(
        response.status_code,
        headers=response.headers.raw,
        stream=httpx.ByteStream(content),
        request=request,
        extensions=response.extensions,
    )


def _typed_error(
    response: httpx.Response, content: bytes, request: httpx.Request
) -> APIStatusError:
    return status_error_from_http(
        response.status_code,
        response.headers.raw,
        content,
        method=request.method,
        url=str(request.url),
    )


class _AsyncClients(CustomLogger):  # type: ignore[misc]
    """Hands each async Anthropic call of LiteLLM a client whose transport is guarded.

    One client per running event loop, since LiteLLM's async transports belong to the loop
    that opened their connections; those of loops that have closed are dropped when the next
    one is made (LiteLLM's transport then disposes of their connections). A call that brings
    its own ``client`` keeps it.
    """

    def __init__(self, step_for: StepFor) -> None:
        super().__init__()
        self._step_for = step_for
        self._clients: dict[asyncio.AbstractEventLoop, AsyncHTTPHandler] = {}
        self._lock = threading.Lock()  # loops may run in several threads

    async def async_pre_call_deployment_hook(
        self, kwargs: dict[str, Any], call_type: CallTypes | None
    ) -> dict[str, Any] | None:
        if call_type not in _ASYNC_CALLS or kwargs.get("client") is not None:
            return None
        if not _is_anthropic(kwargs):
            return None
        return {**kwargs, "client": self._client()}

    def forget(self) -> None:
        """Drop the clients handed out (calls running on them finish on them)."""
        with self._lock:
            self._clients.clear()

    def _client(self) -> AsyncHTTPHandler:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.get(loop)
            if client is None:
                for gone in [other for other in self._clients if other.is_closed()]:
                    del self._clients[gone]
                client = self._clients[loop] = self._new_client()
            return client

    def _new_client(self) -> AsyncHTTPHandler:
        verify, cert = _ssl_settings()
        inner = AsyncHTTPHandler.create_async_transport(
            ssl_context=verify if isinstance(verify, ssl.SSLContext) else None,
            ssl_verify=verify if isinstance(verify, bool) else None,
            cert=cert,
        ) or httpx.AsyncHTTPTransport(verify=verify, cert=cert)
        transport = AsyncGuardTransport(inner, self._step_for)
        return AsyncHTTPHandler(transport=transport, client_alias="prefill_guard")


def _is_anthropic(kwargs: dict[str, Any]) -> bool:
    """Whether LiteLLM sends this call to the Anthropic Messages API (its own provider).

    A model passed positionally is not in ``kwargs``; the call's logging object has it.
    """
    model = kwargs.get("model") or getattr(kwargs.get("litellm_logging_obj"), "model", None)
    if not isinstance(model, str):
        return False
    try:
        _, provider, _, _ = litellm.get_llm_provider(
            model=model,
            custom_llm_provider=kwargs.get("custom_llm_provider"),
            api_base=kwargs.get("api_base"),
        )
    except Exception:  # an unknown model: LiteLLM raises its own error for it later
        return False
    return bool(provider == "anthropic")


_attach_lock = threading.Lock()


def attach(step_for: StepFor) -> Callable[[], None]:
    """Put the guard into LiteLLM's Anthropic calls, and return what takes it out again.

    The synchronous transport wraps the one set in ``litellm.sync_transport`` before, if any
    (else one that sends as LiteLLM's own clients do); detaching puts that one back (or
    closes ours). LiteLLM's cached HTTP clients are dropped both times, so every client made
    afterwards is made with the transport in force.
    """
    with _attach_lock:
        had_one = "sync_transport" in vars(litellm)  # LiteLLM reads it with a default of None
        previous: httpx.BaseTransport | None = getattr(litellm, "sync_transport", None)
        transport = GuardTransport(previous or _AsLiteLLMWould(), step_for)
        hooks = _AsyncClients(step_for)
        litellm.sync_transport = transport
        litellm.callbacks.append(hooks)
        _drop_cached_clients()
        logger.info("installed prefill_guard into LiteLLM")

    def detach() -> None:
        with _attach_lock:
            if vars(litellm).get("sync_transport") is transport:
                if had_one:
                    litellm.sync_transport = previous
                else:
                    del litellm.sync_transport
            if hooks in litellm.callbacks:
                litellm.callbacks.remove(hooks)
            hooks.forget()
            _drop_cached_clients()
            if previous is None:
                transport.close()  # ours, and its connections (one the user set stays open)

    return detach


class _AsLiteLLMWould(httpx.BaseTransport):
    """Sends as LiteLLM's own synchronous clients do when no ``litellm.sync_transport`` is
    set: with the environment's proxies, and LiteLLM's SSL, client certificate and HTTP/2
    settings as they are at each request (one httpx client per set of settings)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[tuple[Any, ...], httpx.Client] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._client().send(request, stream=True)

    def _client(self) -> httpx.Client:
        http2 = http2_enabled()
        verify, cert = _ssl_settings(http2=http2)
        key = (verify, cert, http2)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                # trust_env: the environment's proxies (and NO_PROXY), as httpx's default.
                client = httpx.Client(verify=verify, cert=cert, http2=http2, trust_env=True)
                self._clients[key] = client
            return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()


def _ssl_settings(*, http2: bool = False) -> tuple[Any, Any]:
    """What LiteLLM makes its own transports with: its SSL verification setting
    (``litellm.ssl_verify``, ``SSL_CERT_FILE``, ...) and client certificate."""
    verify = get_ssl_configuration(None, http2=http2)
    return verify, os.getenv("SSL_CERTIFICATE", litellm.ssl_certificate)


def _drop_cached_clients() -> None:
    """LiteLLM keeps the HTTP clients it made; new ones are made with the current transport."""
    litellm.in_memory_llm_clients_cache.flush_cache()
    vars(litellm).pop("module_level_client", None)  # made again on first use
