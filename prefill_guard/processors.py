"""The processor contract, the built-in repair processors and the recommended stack.

A processor is any object with an ``id`` and a ``process_api_error`` hook; no base class is
needed. When an API call fails, the pipeline calls each processor's hook in registration order
with keyword arguments ``error=``, ``messages=`` and ``retry_count=`` (and ``params=`` for hooks
that declare it). The first one that returns ``ProcessAPIErrorResult(retry=True)`` wins.

The built-ins each answer one of the 400s that a new Claude generation introduced for requests
that used to work. Each is reactive (it matches the API's error text, never a list of model
names), acts at most once per generation (``retry_count == 0``), and declines (returns
``None``, changing nothing) when it cannot repair the request without losing user content.
:func:`default_processors` is the recommended ordered stack.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from anthropic import APIError, APIStatusError, NotGiven, Omit

from .errors import api_message
from .messages import MessageList, RawMessage, system_reminder

__all__ = [
    "INTERRUPTED_TOOL_RESULT",
    "PREFILL_REMINDER_TYPE",
    "SAMPLING_PARAMETERS",
    "TOOL_CHOICE_REMINDER_TYPE",
    "AdaptiveThinkingHandler",
    "DeprecatedSamplingHandler",
    "ForcedToolChoiceHandler",
    "OrphanedToolUseHandler",
    "ParamsProcessor",
    "PrefillErrorHandler",
    "ProcessAPIErrorResult",
    "Processor",
    "RequestParams",
    "SamplingConflictHandler",
    "WhitespaceHandler",
    "append_system_reminder",
    "appends_only",
    "changes_only_on_retry",
    "default_processors",
    "drop_request_params",
    "effort_for_budget",
    "interrupted_tool_results",
    "is_prefill_rejection",
    "only_on_prefill",
    "request_param",
    "set_request_param",
]

RequestParams = dict[str, Any]
"""The next attempt's request parameters other than ``messages`` (``model``, ``max_tokens``,
``system``, ``temperature``, ``thinking``, ``tool_choice``, ...). Processors that declare a
``params`` argument may change this dict in place; the change applies to every later attempt
of the same generation."""

PREFILL_REMINDER_TYPE = "anthropic-prefill-processor-retry"
"""The ``systemReminder`` type that tags the reminder :class:`PrefillErrorHandler` appends."""

TOOL_CHOICE_REMINDER_TYPE = "anthropic-tool-choice-processor-retry"
"""The ``systemReminder`` type of the reminder :class:`ForcedToolChoiceHandler` appends."""

INTERRUPTED_TOOL_RESULT = "interrupted"
"""The content of the ``is_error`` ``tool_result`` blocks made for orphaned ``tool_use`` blocks."""

SAMPLING_PARAMETERS: tuple[str, ...] = ("temperature", "top_p", "top_k")
"""The sampling parameters (the SDK's ``messages.create()`` takes them only in ``extra_body``)."""

F = TypeVar("F", bound=Callable[..., object])

_APPENDS_ONLY: set[object] = set()
_CHANGES_ONLY_ON_RETRY: set[object] = set()
_ONLY_ON_PREFILL: set[object] = set()


def appends_only(hook: F) -> F:
    """Mark a ``before_send`` function that can change nothing but append messages at the end.

    It must not edit, replace or remove a message, nor change ``params``, directly or through
    anything it calls. Undoing such a hook after it raises means dropping what it appended, so
    the pipeline skips the deep copy of the whole conversation that it otherwise takes before
    every ``before_send`` call: on the happy path, before every request. An override in a
    subclass is not marked (it is another function) and gets the full copy.
    """
    _APPENDS_ONLY.add(hook)
    return hook


def changes_only_on_retry(hook: F) -> F:
    """Mark a ``process_api_error`` that changes ``messages`` and ``params`` only when it
    returns ``ProcessAPIErrorResult(retry=True)``.

    Before each processor, the pipeline saves the conversation and the parameters (a deep copy)
    so that it can undo what the processor changed if it raises or does not win. A marked
    processor that declines has changed nothing, so the save is kept for the next processor:
    a repair through a stack of marked processors copies the conversation once instead of once
    per processor. What a marked processor changed before raising is still undone. An override
    in a subclass is not marked (it is another function) and gets its own save.
    """
    _CHANGES_ONLY_ON_RETRY.add(hook)
    return hook


def only_on_prefill(hook: F) -> F:
    """Mark a ``before_send`` function to be called only for a prefill: a request whose
    conversation ends with an assistant turn.

    For any other request the pipeline does not call it, and when every hook of a pipeline is
    marked, a request that ends with a user turn (the common case) skips the ``before_send``
    step altogether: the guarded client then sends it without building a conversation for the
    hooks. Hooks that exist to handle prefill, like the adaptive guard's, lose nothing by it.
    An override in a subclass is not marked (it is another function) and is always called.
    """
    _ONLY_ON_PREFILL.add(hook)
    return hook


_PREFILL_PHRASES = ("assistant message prefill", "conversation must end with a user message")


@dataclass(frozen=True)
class ProcessAPIErrorResult:
    """A processor's answer: ``retry=True`` asks the runner to send the request again."""

    retry: bool


ProcessorReturn = ProcessAPIErrorResult | None | Awaitable[ProcessAPIErrorResult | None]


@runtime_checkable
class Processor(Protocol):
    """An error processor: ``id``, an optional ``name``, and the ``process_api_error`` hook.

    The hook may repair ``messages`` in place and return ``ProcessAPIErrorResult(retry=True)``
    to ask for a retry, or return ``None`` to pass. It may be ``async def``; only async runs can
    use such a processor. ``retry_count`` is how many retries *this* processor has already
    asked for in the current generation.
    """

    @property
    def id(self) -> str: ...

    def process_api_error(
        self, *, error: APIError, messages: MessageList, retry_count: int
    ) -> ProcessorReturn: ...


@runtime_checkable
class ParamsProcessor(Protocol):
    """A processor that also reads and changes the next attempt's request parameters.

    The pipeline passes ``params=`` only to hooks whose signature declares it (or ``**kwargs``),
    so three-argument processors keep working unchanged.
    """

    @property
    def id(self) -> str: ...

    def process_api_error(
        self, *, error: APIError, messages: MessageList, retry_count: int, params: RequestParams
    ) -> ProcessorReturn: ...


def _error_chain(error: BaseException) -> Iterator[BaseException]:
    """The error and the exceptions it wraps (``__cause__``, unsuppressed ``__context__``).

    The walk stops at an API status error: it is the authority on its own message and body.
    So a different 400 raised while a prefill rejection was being handled (its implicit
    ``__context__``) is not mistaken for the prefill rejection.
    """
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, APIStatusError):
            continue
        wrapped = [current.__cause__]
        if not current.__suppress_context__:
            wrapped.append(current.__context__)
        pending.extend(e for e in wrapped if e is not None)


def _strings(value: object, depth: int = 0) -> Iterator[str]:
    """Every string inside a body of any shape (dict, list, str), to a bounded depth."""
    if isinstance(value, str):
        yield value
    elif depth < 8 and isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item, depth + 1)
    elif depth < 8 and isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item, depth + 1)


def _mentions_prefill(text: str) -> bool:
    lowered = text.lower()
    return any(phrase in lowered for phrase in _PREFILL_PHRASES)


def _error_texts(error: BaseException) -> Iterator[str]:
    """Every text an error carries: API message, message, ``str()``, body strings; whole chain."""
    for exc in _error_chain(error):
        for text in (api_message(exc), getattr(exc, "message", None), str(exc)):
            if isinstance(text, str):
                yield text
        yield from _strings(getattr(exc, "body", None))


def _search(error: BaseException, pattern: re.Pattern[str]) -> re.Match[str] | None:
    """The first match of ``pattern`` in any of the error's texts."""
    for text in _error_texts(error):
        match = pattern.search(text)
        if match is not None:
            return match
    return None


def is_prefill_rejection(error: BaseException) -> bool:
    """Whether ``error`` is the API's "assistant message prefill" rejection.

    Looks case-insensitively in the API message, the body (any shape), ``str(error)`` and the
    cause/context chain, so the direct API, Vertex, Bedrock's ``ValidationException``, proxies'
    flat bodies and an SSE ``error`` event are all recognised.
    """
    return any(_mentions_prefill(text) for text in _error_texts(error))


_RETRY = ProcessAPIErrorResult(retry=True)


# -- request parameters: top level or inside extra_body ------------------------------------------
#
# The SDK's ``messages.create()`` has no ``temperature``/``top_p``/``top_k`` arguments, so Agent
# users send them as ``extra_body={...}``, which the SDK merges into the JSON body (winning over
# a top-level key of the same name). A middleware sees them top level in the raw body. These
# helpers read and change a parameter wherever it is, and replace a nested dict with a changed
# copy instead of editing it: a processor may be called with dicts it does not own.


def _is_set(value: object) -> bool:
    return value is not None and not isinstance(value, (NotGiven, Omit))


def _extra_body(params: Mapping[str, Any]) -> Mapping[str, Any] | None:
    extra = params.get("extra_body")
    return extra if isinstance(extra, Mapping) else None


def request_param(params: Mapping[str, Any], key: str) -> Any:
    """The value the API will see for ``key``: from ``extra_body`` if set there, else top level.

    ``None`` when it is not set (absent, ``None``, ``NOT_GIVEN`` or ``omit``).
    """
    extra = _extra_body(params)
    if extra is not None and _is_set(extra.get(key)):
        return extra[key]
    value = params.get(key)
    return value if _is_set(value) else None


def set_request_param(
    params: RequestParams, key: str, value: Any, *, near: str | None = None
) -> None:
    """Set ``key`` wherever it already is (top level and/or ``extra_body``).

    A new key goes where ``near`` is (into ``extra_body`` if ``near`` is only there), else top
    level. ``extra_body`` is replaced by a changed copy, never changed in place.
    """
    extra = _extra_body(params)
    in_extra = extra is not None and key in extra
    in_top = key in params
    if not in_extra and not in_top:
        in_extra = near is not None and extra is not None and near in extra and near not in params
        in_top = not in_extra
    if in_extra and extra is not None:
        params["extra_body"] = {**extra, key: value}
    if in_top:
        params[key] = value


def drop_request_params(params: RequestParams, *keys: str) -> bool:
    """Remove ``keys`` from the top level and from ``extra_body`` (replaced by a copy).

    Returns whether a set value was removed.
    """
    dropped = False
    for key in keys:
        if key in params:
            dropped = dropped or _is_set(params[key])
            del params[key]
    extra = _extra_body(params)
    if extra is not None and any(key in extra for key in keys):
        dropped = dropped or any(_is_set(extra.get(key)) for key in keys)
        params["extra_body"] = {k: v for k, v in extra.items() if k not in keys}
    return dropped


# -- tool_use / tool_result bookkeeping --------------------------------------------------------


def _blocks(message: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    content = None if message is None else message.get("content")
    if not isinstance(content, list):
        return []
    return [block for block in content if isinstance(block, Mapping)]


def _tool_use_ids(message: Mapping[str, Any] | None) -> list[str]:
    if message is None or message.get("role") != "assistant":
        return []
    return [
        block["id"]
        for block in _blocks(message)
        if block.get("type") == "tool_use" and isinstance(block.get("id"), str)
    ]


def _tool_result_ids(message: Mapping[str, Any] | None) -> set[str]:
    if message is None or message.get("role") != "user":
        return set()
    return {
        block["tool_use_id"]
        for block in _blocks(message)
        if block.get("type") == "tool_result" and isinstance(block.get("tool_use_id"), str)
    }


def interrupted_tool_results(
    tool_use_ids: Iterable[str], text: str = INTERRUPTED_TOOL_RESULT
) -> list[dict[str, Any]]:
    """``tool_result`` blocks marked ``is_error`` that answer ``tool_use_ids`` with ``text``."""
    return [
        {"type": "tool_result", "tool_use_id": tool_use_id, "content": text, "is_error": True}
        for tool_use_id in tool_use_ids
    ]


def _with_results(content: Any, results: list[dict[str, Any]]) -> list[Any]:
    """``content`` as blocks, with ``results`` after any leading ``tool_result`` blocks."""
    if isinstance(content, str):
        blocks: list[Any] = [{"type": "text", "text": content}] if content else []
    else:
        blocks = list(content)
    lead = 0
    while (
        lead < len(blocks)
        and isinstance(blocks[lead], Mapping)
        and blocks[lead].get("type") == "tool_result"
    ):
        lead += 1
    return [*blocks[:lead], *results, *blocks[lead:]]


def append_system_reminder(messages: MessageList, text: str, reminder_type: str) -> RawMessage:
    """Append one hidden user reminder ``<system-reminder>{text}</system-reminder>``; return it.

    Tagged in ``metadata`` with ``reminder_type`` like ``messages.system_reminder()`` makes it.
    When the conversation ends with an assistant turn holding ``tool_use`` blocks, a plain text
    message after it would be rejected (``tool_use ids were found without tool_result blocks
    immediately after``), so the reminder then carries an ``is_error`` ``tool_result``
    ("interrupted") for each of those calls first, followed by the reminder text block: still
    one hidden message.
    """
    reminder = system_reminder(text, reminder_type)
    pending = _tool_use_ids(messages.last)
    if pending:
        text_block = {"type": "text", "text": reminder["content"]}
        reminder["content"] = [*interrupted_tool_results(pending), text_block]
    messages.append(reminder)
    return messages[-1]


# -- the built-in processors -----------------------------------------------------------------


class PrefillErrorHandler:
    """Repairs the "assistant message prefill" 400 by appending a hidden ``continue`` reminder.

    Answers ``This model does not support assistant message prefill. The conversation must end
    with a user message.`` (Claude 4.6 and later). Purely reactive: it matches the API's error
    text, never a list of model names, and acts on the first attempt only
    (``retry_count == 0``), so a persistent rejection costs exactly one extra request.

    When the trailing assistant turn holds ``tool_use`` blocks, the reminder also answers them
    with ``is_error`` ``tool_result`` blocks, so the repair never leaves a call orphaned (see
    :func:`append_system_reminder`).
    """

    id = "prefill-error-handler"
    name = "Prefill Error Handler"

    @changes_only_on_retry
    def process_api_error(
        self, *, error: APIError, messages: MessageList, retry_count: int
    ) -> ProcessAPIErrorResult | None:
        """Append ``<system-reminder>continue</system-reminder>`` and ask for a retry, once."""
        if retry_count != 0 or not is_prefill_rejection(error):
            return None
        append_system_reminder(messages, "continue", PREFILL_REMINDER_TYPE)
        return _RETRY

    def __repr__(self) -> str:
        return "PrefillErrorHandler()"


_TEMPERATURE_TOP_P = re.compile(
    r"`?temperature`?\s+and\s+`?top_p`?\s+cannot\s+both\s+be\s+specified", re.IGNORECASE
)


class SamplingConflictHandler:
    """Drops ``top_p`` when the API refuses ``temperature`` and ``top_p`` together.

    Answers ``400 `temperature` and `top_p` cannot both be specified for this model. Please use
    only one.`` (Sonnet/Haiku 4.5 and later). ``keep="top_p"`` drops ``temperature`` instead.
    The parameter is removed from the top level and from ``extra_body``. Declines unless both
    are set in the request.
    """

    id = "sampling-conflict-handler"
    name = "Sampling Conflict Handler"

    def __init__(self, *, keep: Literal["temperature", "top_p"] = "temperature") -> None:
        if keep not in ("temperature", "top_p"):
            raise ValueError(f"keep must be 'temperature' or 'top_p', got {keep!r}")
        self.keep = keep

    @changes_only_on_retry
    def process_api_error(
        self, *, error: APIError, messages: MessageList, retry_count: int, params: RequestParams
    ) -> ProcessAPIErrorResult | None:
        """Drop the parameter not kept and ask for a retry, once per generation."""
        if retry_count != 0 or _search(error, _TEMPERATURE_TOP_P) is None:
            return None
        if request_param(params, "temperature") is None or request_param(params, "top_p") is None:
            return None
        drop_request_params(params, "top_p" if self.keep == "temperature" else "temperature")
        return _RETRY

    def __repr__(self) -> str:
        return f"SamplingConflictHandler(keep={self.keep!r})"


_DEPRECATED_SAMPLING = re.compile(
    r"`?(temperature|top_p|top_k)`?\s+is\s+deprecated\s+for\s+this\s+model", re.IGNORECASE
)


class DeprecatedSamplingHandler:
    """Drops sampling parameters when the API says they are deprecated for the model.

    Answers ``400 `temperature` is deprecated for this model.`` (Opus 4.7 and later), and the
    same sentence for ``top_p`` or ``top_k``. It drops every parameter the error names and, by
    default, the other sampling parameters with them (``drop_together``): the models that
    deprecate ``temperature`` fix sampling entirely and reject ``top_p``/``top_k`` too, and a
    processor that acts once per generation must not leave the next one of them for another
    400. Pass ``drop_together=()`` to drop only what the error names. Declines when none of the
    named parameters is set in the request.
    """

    id = "deprecated-sampling-handler"
    name = "Deprecated Sampling Handler"

    def __init__(self, *, drop_together: Iterable[str] = SAMPLING_PARAMETERS) -> None:
        if isinstance(drop_together, str):
            raise TypeError("drop_together must be a collection of parameter names, not a str")
        self.drop_together = tuple(drop_together)

    @changes_only_on_retry
    def process_api_error(
        self, *, error: APIError, messages: MessageList, retry_count: int, params: RequestParams
    ) -> ProcessAPIErrorResult | None:
        """Drop the deprecated (and accompanying) parameters and ask for a retry, once."""
        if retry_count != 0:
            return None
        named = {
            match.group(1).lower()
            for text in _error_texts(error)
            for match in _DEPRECATED_SAMPLING.finditer(text)
        }
        if not any(request_param(params, name) is not None for name in named):
            return None
        drop_request_params(params, *sorted(named), *self.drop_together)
        return _RETRY

    def __repr__(self) -> str:
        return f"DeprecatedSamplingHandler(drop_together={self.drop_together!r})"


def effort_for_budget(budget_tokens: int) -> Literal["low", "medium", "high", "max"]:
    """The ``output_config.effort`` that stands in for a ``thinking.budget_tokens`` budget.

    ============================  =========
    ``budget_tokens``             effort
    ============================  =========
    below 4,096                   ``low``
    4,096 to 16,383               ``medium``
    16,384 to 65,535              ``high`` (the API's default effort)
    65,536 and more               ``max``
    ============================  =========

    ``xhigh`` is never chosen: not every model that takes adaptive thinking accepts it.
    """
    if budget_tokens < 4_096:
        return "low"
    if budget_tokens < 16_384:
        return "medium"
    if budget_tokens < 65_536:
        return "high"
    return "max"


_THINKING_ENABLED = re.compile(r"thinking\.type\.enabled\"?\s+is\s+not\s+supported", re.IGNORECASE)


class AdaptiveThinkingHandler:
    """Switches ``thinking.type.enabled`` to adaptive thinking, keeping the budget as an effort.

    Answers ``400 "thinking.type.enabled" is not supported for this model. Use
    "thinking.type.adaptive" and "output_config.effort" to control thinking behavior.`` (Opus 4.7
    and later). ``thinking`` becomes ``{"type": "adaptive"}`` (``display`` kept) and, unless the
    request already sets ``output_config.effort``, ``budget_tokens`` is mapped onto an effort by
    ``effort`` (default :func:`effort_for_budget`; return ``None`` to leave the effort to the
    API). Other ``output_config`` keys are kept. Declines unless the request's ``thinking`` has
    type ``enabled``.
    """

    id = "adaptive-thinking-handler"
    name = "Adaptive Thinking Handler"

    def __init__(self, *, effort: Callable[[int], str | None] = effort_for_budget) -> None:
        if not callable(effort):
            raise TypeError(f"effort must be a callable of budget_tokens, got {effort!r}")
        self.effort = effort

    @changes_only_on_retry
    def process_api_error(
        self, *, error: APIError, messages: MessageList, retry_count: int, params: RequestParams
    ) -> ProcessAPIErrorResult | None:
        """Rewrite ``thinking`` (and ``output_config.effort``) and ask for a retry, once."""
        if retry_count != 0 or _search(error, _THINKING_ENABLED) is None:
            return None
        thinking = request_param(params, "thinking")
        if not isinstance(thinking, Mapping) or thinking.get("type") != "enabled":
            return None
        adaptive: dict[str, Any] = {"type": "adaptive"}
        if _is_set(thinking.get("display")):
            adaptive["display"] = thinking["display"]
        budget = thinking.get("budget_tokens")
        output_config = request_param(params, "output_config")
        config = dict(output_config) if isinstance(output_config, Mapping) else {}
        effort = None
        if not _is_set(config.get("effort")) and isinstance(budget, int):
            effort = self.effort(budget)
        set_request_param(params, "thinking", adaptive)
        if effort is not None:
            set_request_param(
                params, "output_config", {**config, "effort": effort}, near="thinking"
            )
        return _RETRY

    def __repr__(self) -> str:
        return f"AdaptiveThinkingHandler(effort={getattr(self.effort, '__name__', self.effort)})"


_FORCED_TOOL_CHOICE = re.compile(  # one sentence: the reason follows tool_choice closely
    r"tool_choice[^\n]{0,80}?(?:not\s+supported|not\s+compatible|forces\s+tool\s+use)",
    re.IGNORECASE,
)


class ForcedToolChoiceHandler:
    """Turns a refused forced ``tool_choice`` into ``auto`` plus a hidden request for the tool.

    Answers ``400 tool_choice: type "tool" and "any" are not supported for this model.`` (the
    5-5 generation), and the neighbouring ``tool_choice forces tool use is not compatible with
    this model`` and ``Thinking may not be enabled when tool_choice forces tool use.``: any error
    naming ``tool_choice`` as not supported, not compatible, or forcing tool use, when the
    request forces one (type ``any`` or ``tool``). ``tool_choice`` becomes ``{"type": "auto"}``
    (``disable_parallel_tool_use`` kept) and, with ``remind=True``, a hidden reminder (type
    ``TOOL_CHOICE_REMINDER_TYPE``) asks for the tool that was forced.
    """

    id = "forced-tool-choice-handler"
    name = "Forced Tool Choice Handler"

    def __init__(self, *, remind: bool = True) -> None:
        self.remind = remind

    @changes_only_on_retry
    def process_api_error(
        self, *, error: APIError, messages: MessageList, retry_count: int, params: RequestParams
    ) -> ProcessAPIErrorResult | None:
        """Switch to ``auto``, remind the model of the forced tool, ask for a retry, once."""
        if retry_count != 0 or _search(error, _FORCED_TOOL_CHOICE) is None:
            return None
        tool_choice = request_param(params, "tool_choice")
        if not isinstance(tool_choice, Mapping) or tool_choice.get("type") not in ("any", "tool"):
            return None
        auto: dict[str, Any] = {"type": "auto"}
        if _is_set(tool_choice.get("disable_parallel_tool_use")):
            auto["disable_parallel_tool_use"] = tool_choice["disable_parallel_tool_use"]
        set_request_param(params, "tool_choice", auto)
        if self.remind:
            name = tool_choice.get("name")
            text = (
                f"Respond by calling the {name} tool."
                if tool_choice.get("type") == "tool" and isinstance(name, str) and name
                else "Respond by calling one of the available tools."
            )
            append_system_reminder(messages, text, TOOL_CHOICE_REMINDER_TYPE)
        return _RETRY

    def __repr__(self) -> str:
        return f"ForcedToolChoiceHandler(remind={self.remind!r})"


_ORPHANED_TOOL_USE = re.compile(
    r"`?tool_use`?\s+ids\s+were\s+found\s+without\s+`?tool_result`?\s+blocks\s+immediately\s+"
    r"after:?(?P<ids>[^\n]*)",
    re.IGNORECASE,
)


def _reported_ids(text: str) -> set[str]:
    """The ids listed after "immediately after:", up to the first character no id list has."""
    listed = re.match(r"[\w\s,`-]*", text)
    return set(re.findall(r"[\w-]+", listed[0] if listed else ""))


class OrphanedToolUseHandler:
    """Answers orphaned ``tool_use`` blocks with ``is_error`` "interrupted" ``tool_result`` blocks.

    Answers ``400 messages.N: tool_use ids were found without tool_result blocks immediately
    after: toolu_...`` (every model; the API puts backticks around ``tool_use`` and
    ``tool_result``). For every assistant turn whose ``tool_use`` blocks have no result in the
    next message (all of them at once, so it acts once), it adds ``tool_result`` blocks with
    ``is_error: true`` and content ``result_text`` to the next user turn, after any results
    already there, or inserts a user turn holding them when the next turn is not a user turn.
    Nothing is removed. Declines when the ids the API reports are not orphans in the
    conversation it was given.
    """

    id = "orphaned-tool-use-handler"
    name = "Orphaned Tool Use Handler"

    def __init__(self, *, result_text: str = INTERRUPTED_TOOL_RESULT) -> None:
        if not isinstance(result_text, str) or not result_text.strip():
            raise ValueError("result_text must be a non-blank str")
        self.result_text = result_text

    @changes_only_on_retry
    def process_api_error(
        self, *, error: APIError, messages: MessageList, retry_count: int
    ) -> ProcessAPIErrorResult | None:
        """Add the missing results and ask for a retry, once per generation."""
        if retry_count != 0:
            return None
        match = _search(error, _ORPHANED_TOOL_USE)
        if match is None:
            return None
        reported = _reported_ids(match["ids"])
        orphans: list[tuple[int, list[str]]] = []
        for index, message in enumerate(messages):
            following = messages[index + 1] if index + 1 < len(messages) else None
            answered = _tool_result_ids(following)
            missing = [i for i in _tool_use_ids(message) if i not in answered]
            if following is None:  # a final tool_use is only an orphan if the API says so
                missing = [i for i in missing if i in reported]
            if missing:
                orphans.append((index, missing))
        found = {tool_use_id for _, ids in orphans for tool_use_id in ids}
        if not found or not reported <= found:
            return None
        for index, ids in reversed(orphans):
            results = interrupted_tool_results(ids, self.result_text)
            following = messages[index + 1] if index + 1 < len(messages) else None
            if following is not None and following.get("role") == "user":
                messages[index + 1] = {
                    **following,
                    "content": _with_results(following["content"], results),
                }
            else:
                messages.insert(index + 1, {"role": "user", "content": results})
        return _RETRY

    def __repr__(self) -> str:
        return f"OrphanedToolUseHandler(result_text={self.result_text!r})"


_BLANK_TEXT = re.compile(r"text\s+content\s+blocks\s+must\s+contain\s+non-whitespace", re.I)
_TRAILING_WHITESPACE = re.compile(
    r"final\s+assistant\s+content\s+cannot\s+end\s+with\s+trailing\s+whitespace", re.I
)


def _is_blank_text(block: object) -> bool:
    return (
        isinstance(block, Mapping)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
        and not block["text"].strip()
    )


def _rstrip_final_text(content: Any) -> Any:
    if isinstance(content, str):
        return content.rstrip()
    blocks = list(content)
    for position in range(len(blocks) - 1, -1, -1):
        block = blocks[position]
        if isinstance(block, Mapping) and block.get("type") == "text":
            text = block.get("text")
            if isinstance(text, str):
                if text.strip():
                    blocks[position] = {**block, "text": text.rstrip()}
                else:
                    del blocks[position]
            break
    return blocks


class WhitespaceHandler:
    """Removes the whitespace the API refuses, without removing any text.

    Answers ``400 messages: text content blocks must contain non-whitespace text`` and ``400
    final assistant content cannot end with trailing whitespace`` (every model). On either, it
    makes every whitespace repair at once, so it acts once per generation: whitespace-only text
    blocks are removed; a user message left with nothing becomes ``placeholder`` (``"."``, the
    filler that works), keeping the turn; an assistant message left with nothing is removed;
    the final assistant message's last text loses its trailing whitespace. Declines when there
    is nothing to change.
    """

    id = "whitespace-handler"
    name = "Whitespace Handler"

    def __init__(self, *, placeholder: str = ".") -> None:
        if not isinstance(placeholder, str) or not placeholder.strip():
            raise ValueError("placeholder must be a non-blank str")
        self.placeholder = placeholder

    @changes_only_on_retry
    def process_api_error(
        self, *, error: APIError, messages: MessageList, retry_count: int
    ) -> ProcessAPIErrorResult | None:
        """Normalise the whitespace and ask for a retry, once per generation."""
        if retry_count != 0:
            return None
        if _search(error, _BLANK_TEXT) is None and _search(error, _TRAILING_WHITESPACE) is None:
            return None
        repaired: list[RawMessage] = []
        changed = False
        for message in messages:
            content = message.get("content")
            if isinstance(content, str):
                new: Any = content if content.strip() else ""
            else:
                new = [block for block in content or [] if not _is_blank_text(block)]
            if new == content and new:
                repaired.append(message)
                continue
            changed = True
            if not new:
                if message.get("role") == "assistant":
                    continue  # nothing but whitespace: the turn carried nothing
                new = self.placeholder
            repaired.append({**message, "content": new})
        # The turn that ends up last (after blank ones were dropped) is the final one.
        if repaired and repaired[-1].get("role") == "assistant":
            last = repaired[-1]
            stripped = _rstrip_final_text(last["content"])
            if stripped != last["content"]:
                repaired[-1] = {**last, "content": stripped}
                changed = True
        if not changed or not repaired:
            return None
        messages[:] = repaired
        return _RETRY

    def __repr__(self) -> str:
        return f"WhitespaceHandler(placeholder={self.placeholder!r})"


def default_processors() -> list[Processor | ParamsProcessor]:
    """The recommended stack, as a new list of new instances on each call.

    Why this order: the first processor that asks to retry wins, so order only matters when two
    processors could claim the same error, and each built-in repair matches its own error text.

    0. ``AdaptivePrefillGuard`` (``prefill_guard.adaptive``) first: it never asks for a retry,
       so it cannot shadow a repair. Before the first attempt it adds the prefill reminder for
       models known to reject prefill (saving the round trip), and it learns each model that
       rejects prefill; the repair itself stays with ``PrefillErrorHandler``.
    1. Request-parameter repairs next (``DeprecatedSamplingHandler``,
       ``SamplingConflictHandler``, ``AdaptiveThinkingHandler``, ``ForcedToolChoiceHandler``):
       the API checks parameters before the conversation, so these errors arrive first, and
       (except the tool-choice reminder) they leave the conversation alone.
       Deprecation before the ``temperature``/``top_p`` conflict: if both were ever reported
       together, dropping the deprecated parameters fixes both in one request.
    2. Conversation repairs, most specific first: orphaned ``tool_use``, whitespace, and last
       the prefill repair, whose detection is the broadest (two phrases anywhere in the error,
       its body and its cause chain), so it can never take an error meant for another repair.
    3. No blind retry. Transient errors are retried by the Agent's own layer; a processor you
       add that retries anything belongs after these, or it would spend requests before the
       repairs get their turn: ``[*default_processors(), MyRetrier()]``.

    Each repair acts at most once per generation and costs one request, so a request needing
    ``k`` different repairs takes ``k + 1`` requests (one fewer when the guard already knows the
    model rejects prefill). ``max_processor_retries`` (default 3) bounds ``k``; raise it if your
    requests can need more repairs at once.
    """
    from .adaptive import AdaptivePrefillGuard  # adaptive imports this module: import late

    return [
        AdaptivePrefillGuard(),
        DeprecatedSamplingHandler(),
        SamplingConflictHandler(),
        AdaptiveThinkingHandler(),
        ForcedToolChoiceHandler(),
        OrphanedToolUseHandler(),
        WhitespaceHandler(),
        PrefillErrorHandler(),
    ]
