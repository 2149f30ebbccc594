"""The Agent runner: one model, its default parameters and its processors, run sync or async."""

from __future__ import annotations

import asyncio
import copy
import difflib
import functools
import inspect
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import anthropic
from anthropic._base_client import AsyncAPIClient, SyncAPIClient
from anthropic.resources.messages import Messages
from anthropic.types import Message

from .contract import AnthropicClient, AsyncClient, RawMessage, RequestParams, SyncClient
from .errors import areply_from_response, reply_from_response
from .messages import MessageList, check_input
from .params import SAMPLING_PARAMETERS
from .processors import default_processors
from .retries import OnRetry, RetryPolicy
from .run import AnyProcessor, Pipeline, Run, RunResult, arun_steps, run_steps
from .stores import AsyncThreadStore, StoreError, ThreadStore, check_thread_id
from .streaming import AgentStream, AsyncAgentStream
from .telemetry import ClientTelemetry, RunTrace
from .tools import Toolbox

__all__ = ["Agent"]

MessagesInput = str | MessageList | Iterable[Any]

DEFAULT_MAX_STEPS = 10
"""How many model calls a run makes at most, unless ``Agent(max_steps=...)`` says otherwise."""

_RESERVED = {
    "messages": "pass the conversation as the first argument",
    "stream": "use agent.stream() / agent.astream() to stream",
    "tools": "give the tools to Agent(tools=...)",
}
_REQUEST_FIELDS = frozenset(inspect.signature(Messages.create).parameters) - {
    "self",
    "messages",
    "stream",
} | frozenset(SAMPLING_PARAMETERS)
"""The request fields a call may set: what the installed SDK's ``messages.create`` takes, and
the sampling parameters, which the Agent sends in ``extra_body`` (the SDK takes them no more)."""
_AGENT_OPTIONS = (
    "client",
    "instructions",
    "name",
    "tools",
    "max_steps",
    "error_processors",
    "max_processor_retries",
    "max_retries",
    "max_retry_delay",
    "on_retry",
    "sleep",
    "store",
    "max_tokens",
)
"""The Agent's own keyword arguments, for the close matches of a misspelt one."""
_CALLERS = {
    method: f"Agent.{method}()" for method in ("generate", "agenerate", "stream", "astream")
}


def _client_kind(client: object) -> str:
    if isinstance(client, AsyncAPIClient):
        return "async"
    if isinstance(client, SyncAPIClient):
        return "sync"
    raise TypeError(
        "client must be an anthropic client (Anthropic, AsyncAnthropic, or a Bedrock/Vertex "
        f"variant), got {type(client).__name__}"
    )


class Agent:
    """Runs generations for one model, each through the retry loop and a pipeline of processors.

    Each attempt's request is rebuilt from the conversation. Transient failures (429, 5xx, 529,
    connection errors) are retried up to ``max_retries`` times, honouring ``retry-after``;
    whatever error is left goes to the ``error_processors``, which may repair the request and
    ask for a retry (up to ``max_processor_retries``). The SDK's own retries are switched off
    on the clients the Agent uses, so the two layers never multiply. ``on_retry`` hooks get a
    :class:`~prefill_guard.RetryDetails` for every retry; ``sleep`` replaces real waiting
    (for tests). An Agent holds no per-call state: one instance is safe to share between
    threads and tasks.
    """

    def __init__(
        self,
        model: str,
        *,
        client: AnthropicClient | None = None,
        instructions: str | None = None,
        name: str | None = None,
        tools: Iterable[object] = (),
        max_steps: int = DEFAULT_MAX_STEPS,
        error_processors: Iterable[AnyProcessor] | None = None,
        max_processor_retries: int = 3,
        max_retries: int = 2,
        max_retry_delay: float = 60.0,
        on_retry: Iterable[OnRetry] = (),
        sleep: Callable[[float], object] | None = None,
        store: ThreadStore | None = None,
        max_tokens: int = 1024,
        **default_params: Any,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise TypeError(f"model must be a non-empty str, got {model!r}")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise ValueError(f"max_tokens must be an int >= 1, got {max_tokens!r}")
        if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1:
            raise ValueError(f"max_steps must be an int >= 1, got {max_steps!r}")
        _check_params(default_params, "Agent()", _AGENT_OPTIONS)
        if store is not None and not isinstance(store, ThreadStore):
            raise TypeError(f"store must be a ThreadStore (e.g. SQLiteStore), got {store!r}")
        self._store = store
        self._model = model
        self._instructions = instructions
        self._name = name or model
        self._toolbox = Toolbox(tools)
        self._max_steps = max_steps
        if error_processors is None:
            error_processors = default_processors()
        self._pipeline = Pipeline(error_processors, max_processor_retries=max_processor_retries)
        self._retry_policy = RetryPolicy(
            max_retries=max_retries, max_retry_delay=max_retry_delay, on_retry=on_retry, sleep=sleep
        )
        self._defaults: RequestParams = copy.deepcopy({"max_tokens": max_tokens, **default_params})
        # What every request starts from, in the order the keys are sent; each run deep-copies it.
        self._base_params: RequestParams = {"model": model, **self._defaults}
        if instructions is not None:
            self._base_params["system"] = instructions
        if self._toolbox:
            self._base_params["tools"] = self._toolbox.definitions
        self._client_kind = None if client is None else _client_kind(client)
        # Our retry layer replaces the SDK's; with both on, 1 + 2 retries become 9 requests.
        own: Any = None if client is None else client.with_options(max_retries=0)
        self._sync_client: SyncClient | None = own if self._client_kind == "sync" else None
        self._async_client: AsyncClient | None = own if self._client_kind == "async" else None
        self._telemetry: dict[str, ClientTelemetry] = {}
        """Each client's OpenTelemetry settings, read once (the SDK fixes them in the client)."""
        self._lock = threading.Lock()

    @property
    def model(self) -> str:
        """The model every request uses unless a call passes ``model=``."""
        return self._model

    @property
    def name(self) -> str:
        """A label for logs and the run's ``invoke_agent {name}`` span (the model name unless
        given)."""
        return self._name

    @property
    def instructions(self) -> str | None:
        """The system prompt sent as ``system``, if any."""
        return self._instructions

    @property
    def default_params(self) -> Mapping[str, Any]:
        """The default request parameters (read-only); every run works on its own deep copy."""
        return MappingProxyType(self._defaults)

    @property
    def store(self) -> ThreadStore | None:
        """Where threads are kept, for calls with ``thread_id=``."""
        return self._store

    @property
    def tools(self) -> Toolbox:
        """The tools every request offers, and the functions the Agent runs for them."""
        return self._toolbox

    @property
    def max_steps(self) -> int:
        """How many model calls a run makes at most."""
        return self._max_steps

    @property
    def pipeline(self) -> Pipeline:
        """The processors and their cap."""
        return self._pipeline

    @property
    def retry_policy(self) -> RetryPolicy:
        """The transient retry settings."""
        return self._retry_policy

    def __repr__(self) -> str:
        ids = [getattr(p, "id", "?") for p in self.pipeline.processors]
        return f"Agent(model={self.model!r}, name={self.name!r}, error_processors={ids})"

    def generate(
        self, messages: MessagesInput | None = None, *, thread_id: str | None = None, **params: Any
    ) -> RunResult:
        """Run one generation synchronously and return its :class:`RunResult`.

        ``messages`` is a str (one user message), a list of message dicts (copied, never
        changed) or a :class:`MessageList` (the conversation itself: extended in place).
        With ``thread_id`` (and a ``store`` on the Agent), ``messages`` is the *new* input,
        saved before the request is sent; the thread's history is loaded and the reminders
        and reply are saved once the run succeeds. ``messages`` may then be omitted: the
        model replies again to the thread as it is. ``params`` override the Agent's defaults
        for this call. When nothing retries, the original SDK exception is raised.
        """
        client, telemetry = self._sync_client_for("generate")
        run = self._start(telemetry, "generate", messages, params, thread_id)
        return run_steps(run, _sender(client))

    async def agenerate(
        self, messages: MessagesInput | None = None, *, thread_id: str | None = None, **params: Any
    ) -> RunResult:
        """The async twin of :meth:`generate`; ``async def`` processors are awaited."""
        client, telemetry = self._async_client_for("agenerate")
        run = await self._astart(telemetry, "agenerate", messages, params, thread_id)
        return await arun_steps(run, _async_sender(client))

    def stream(
        self, messages: MessagesInput | None = None, *, thread_id: str | None = None, **params: Any
    ) -> AgentStream:
        """Stream one generation: ``with agent.stream(messages) as stream:``.

        The request is sent when the block is entered; failures before any content reaches
        you are retried like :meth:`generate`'s. ``thread_id`` works as in :meth:`generate`
        (the reply is saved when its ``message_stop`` event arrives). See
        :class:`~prefill_guard.AgentStream`.
        """
        client, telemetry = self._sync_client_for("stream")
        return AgentStream(client, self._start(telemetry, "stream", messages, params, thread_id))

    def astream(
        self, messages: MessagesInput | None = None, *, thread_id: str | None = None, **params: Any
    ) -> AsyncAgentStream:
        """The async twin of :meth:`stream`: ``async with agent.astream(messages) as stream:``.

        The arguments and the new input are checked here; with ``thread_id``, the input is saved
        and the thread read when the block is entered, and each completed step saved, as in
        :meth:`agenerate`.
        """
        client, telemetry = self._async_client_for("astream")
        if thread_id is None:
            run = self._start(telemetry, "astream", messages, params, None)
            return AsyncAgentStream(client, functools.partial(_ready, run))
        caller = self._check_call("astream", params, thread_id)
        check_thread_id(thread_id)
        _new_input(messages, caller)  # refused here, as without a thread; saved when entered
        return AsyncAgentStream(
            client,
            functools.partial(self._astart, telemetry, "astream", messages, params, thread_id),
        )

    # -- internals -------------------------------------------------------------------
    def _check_call(self, method: str, params: dict[str, Any], thread_id: str | None) -> str:
        """Refuse a call that cannot run, before anything is read or sent; the caller's name."""
        caller = _CALLERS[method]
        _check_params(params, caller)
        if method in ("generate", "stream"):
            self._pipeline.require_sync(caller)
            if self._toolbox.async_names:
                raise TypeError(
                    f"tool {self._toolbox.async_names[0]!r} is async; {caller} is synchronous "
                    "and cannot await it: use the async twin, or a synchronous tool"
                )
        if thread_id is not None and self._store is None:
            raise ValueError(f"{caller}: thread_id needs a store, e.g. Agent(store=...)")
        return caller

    def _start(
        self,
        telemetry: ClientTelemetry,
        method: str,
        messages: MessagesInput | None,
        params: dict[str, Any],
        thread_id: str | None,
    ) -> Run:
        """Check a call's arguments; its run, over its conversation (a thread's history, with
        a thread, which the run saves after each step)."""
        caller = self._check_call(method, params, thread_id)
        thread = None
        if thread_id is not None:
            assert self._store is not None
            thread = _ThreadRun.open(self._store, thread_id, messages, caller)
        return self._run(telemetry, caller, messages, params, thread)

    async def _astart(
        self,
        telemetry: ClientTelemetry,
        method: str,
        messages: MessagesInput | None,
        params: dict[str, Any],
        thread_id: str | None,
    ) -> Run:
        """The async twin of :meth:`_start`: the thread is read without blocking the loop."""
        caller = self._check_call(method, params, thread_id)
        thread = None
        if thread_id is not None:
            assert self._store is not None
            thread = await _ThreadRun.aopen(self._store, thread_id, messages, caller)
        return self._run(telemetry, caller, messages, params, thread)

    def _run(
        self,
        telemetry: ClientTelemetry,
        caller: str,
        messages: MessagesInput | None,
        params: dict[str, Any],
        thread: _ThreadRun | None,
    ) -> Run:
        if thread is not None:
            conversation = thread.history
        elif messages is None:
            raise TypeError(f"{caller} needs messages, or a thread_id to continue a thread")
        else:
            conversation = _as_message_list(messages)
            if not conversation:
                raise ValueError(f"{caller}: messages is empty; pass at least one message")
            check_input(conversation)
        request = _with_sampling_in_extra_body({**self._base_params, **params})
        return Run(
            self._pipeline,
            self._retry_policy,
            conversation,
            request,
            toolbox=self._toolbox,
            max_steps=self._max_steps,
            on_step=None if thread is None else thread.save,
            aon_step=None if thread is None else thread.asave,
            trace=RunTrace(telemetry, agent=self._name, model=str(request["model"])),
        )

    def _sync_client_for(self, method: str) -> tuple[SyncClient, ClientTelemetry]:
        """The sync client, made from the environment on first use (under the lock), and its
        OpenTelemetry settings."""
        if self._client_kind == "async":
            raise TypeError(
                f"Agent.{method}() needs a synchronous client, but this Agent was given an async "
                f"one; use the async twin (a{method}) or pass client=anthropic.Anthropic()"
            )
        with self._lock:
            if self._sync_client is None:
                self._sync_client = anthropic.Anthropic(max_retries=0)
            if "sync" not in self._telemetry:
                self._telemetry["sync"] = ClientTelemetry.of(self._sync_client)
            return self._sync_client, self._telemetry["sync"]

    def _async_client_for(self, method: str) -> tuple[AsyncClient, ClientTelemetry]:
        """The async client, made from the environment on first use (under the lock), and its
        OpenTelemetry settings."""
        if self._client_kind == "sync":
            raise TypeError(
                f"Agent.{method}() needs an async client, but this Agent was given a synchronous "
                f"one; use the sync twin ({method[1:]}) or pass client=anthropic.AsyncAnthropic()"
            )
        with self._lock:
            if self._async_client is None:
                self._async_client = anthropic.AsyncAnthropic(max_retries=0)
            if "async" not in self._telemetry:
                self._telemetry["async"] = ClientTelemetry.of(self._async_client)
            return self._async_client, self._telemetry["async"]


def _sender(client: SyncClient) -> Callable[[dict[str, Any]], Message]:
    """Send one Messages request and return its reply, checked (:func:`reply_from_response`)."""
    create = client.messages.with_raw_response.create

    def send(request: dict[str, Any]) -> Message:
        return reply_from_response(create(**request))

    return send


def _async_sender(client: AsyncClient) -> Callable[[dict[str, Any]], Awaitable[Message]]:
    """The async twin of :func:`_sender`."""
    create = client.messages.with_raw_response.create

    async def send(request: dict[str, Any]) -> Message:
        return await areply_from_response(await create(**request))

    return send


class _ThreadRun:
    """One run on a stored thread: input saved first, then each completed step.

    What the thread holds for the run (what it loaded, then what each step saved) is kept as
    it was (a deep copy), so that saving can tell what the run changed however a processor
    changed it: the messages after those are new and are appended; if a processor repaired,
    replaced or removed a stored message, the stored messages are rewritten as the successful
    request sent them (:meth:`ThreadStore.rewrite`), so nothing is stored twice and the next
    turn sends the repaired history. In async code, an :class:`AsyncThreadStore` is awaited and
    any other store is called in a worker thread.
    """

    def __init__(self, store: ThreadStore, thread_id: str, history: MessageList) -> None:
        self.history = history
        self._store = store
        self._thread_id = thread_id
        self._loaded = list(history.copy())

    @classmethod
    def open(
        cls, store: ThreadStore, thread_id: str, messages: MessagesInput | None, caller: str
    ) -> _ThreadRun:
        """Save the new input (even if the run fails later), then load the thread."""
        new = _new_input(messages, caller)
        if new is not None:
            store.append(thread_id, new)
        return cls(store, thread_id, _loaded(store.load(thread_id), thread_id, caller))

    @classmethod
    async def aopen(
        cls, store: ThreadStore, thread_id: str, messages: MessagesInput | None, caller: str
    ) -> _ThreadRun:
        """The async twin of :meth:`open`."""
        if not isinstance(store, AsyncThreadStore):
            return await asyncio.to_thread(cls.open, store, thread_id, messages, caller)
        new = _new_input(messages, caller)
        if new is not None:
            await store.aappend(thread_id, new)
        return cls(store, thread_id, _loaded(await store.aload(thread_id), thread_id, caller))

    def save(self) -> None:
        """Store what the run sent and received since the last save, each message once, in
        order (called after each completed step)."""
        outcome, new = self._changes()
        if new is not None:
            self._store.append(self._thread_id, new)
        elif not self._store.rewrite(self._thread_id, self._loaded, outcome):
            raise self._changed()
        self._saved(outcome, new)

    async def asave(self) -> None:
        """The async twin of :meth:`save`."""
        store = self._store
        if not isinstance(store, AsyncThreadStore):
            await asyncio.to_thread(self.save)
            return
        outcome, new = self._changes()
        if new is not None:
            await store.aappend(self._thread_id, new)
        elif not await store.arewrite(self._thread_id, self._loaded, outcome):
            raise self._changed()
        self._saved(outcome, new)

    def _changes(self) -> tuple[list[RawMessage], list[RawMessage] | None]:
        """The history now, and the messages to append: ``None`` if a stored one changed."""
        outcome = list(self.history)
        loaded = self._loaded
        if outcome[: len(loaded)] == loaded:  # nothing stored was changed: append the rest
            return outcome, outcome[len(loaded) :]
        return outcome, None

    def _saved(self, outcome: list[RawMessage], appended: list[RawMessage] | None) -> None:
        """What the thread holds for the run now: the next step's save starts here."""
        if appended is not None:
            self._loaded = [*self._loaded, *copy.deepcopy(appended)]
        else:
            self._loaded = copy.deepcopy(outcome)

    def _changed(self) -> StoreError:
        return StoreError(
            f"thread {self._thread_id!r} changed while this run repaired messages it had "
            "loaded (another run rewrote or deleted them); the run's reply was not stored"
        )


async def _ready(run: Run) -> Run:
    return run


def _new_input(messages: MessagesInput | None, caller: str) -> list[RawMessage] | None:
    """A run's new input for its thread, checked as one that a reply will follow."""
    if messages is None:
        return None
    new = _as_message_list(messages)
    if not new:
        raise ValueError(f"{caller}: messages is empty; leave it out to ask for another reply")
    check_input(new, saved=True)
    return list(new)


def _loaded(history: MessageList, thread_id: str, caller: str) -> MessageList:
    if len(history) == 0:
        raise ValueError(f"{caller}: thread {thread_id!r} is empty and no messages were given")
    return history


def _check_params(params: dict[str, Any], where: str, options: Iterable[str] = ()) -> None:
    """Refuse a keyword that is no request field (nor one of ``options``), with the close
    matches, before anything is sent: the SDK would refuse it at the first call."""
    for key in params:
        if key in _RESERVED:
            raise TypeError(f"{where}: {key!r} is not a request parameter here; {_RESERVED[key]}")
        if key not in _REQUEST_FIELDS:
            known = sorted({*_REQUEST_FIELDS, *options})
            close = difflib.get_close_matches(key, known, n=3)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else "."
            raise TypeError(
                f"{where}: unknown keyword argument {key!r}{hint} An API field the installed "
                "anthropic SDK does not know goes in extra_body={...}"
            )


def _with_sampling_in_extra_body(params: RequestParams) -> RequestParams:
    """``temperature``, ``top_p`` and ``top_k`` moved into ``extra_body``, where every SDK
    version since 1.0 takes them (a value already in ``extra_body`` wins, as it does there)."""
    sampling = {key: params.pop(key) for key in SAMPLING_PARAMETERS if key in params}
    if sampling:
        params["extra_body"] = {**sampling, **(params.get("extra_body") or {})}
    return params


def _as_message_list(messages: MessagesInput) -> MessageList:
    if isinstance(messages, MessageList):
        return messages
    if isinstance(messages, str):
        result = MessageList()
        result.add("user", messages)
        return result
    return MessageList(messages)
