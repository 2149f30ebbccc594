"""The built-in processors and the recommended stack.

Each built-in answers one of the 400s that a new Claude generation introduced for requests
that used to work. Each is reactive (it matches the API's error text, never a list of model
names), acts at most once per run (``retry_count == 0``), and declines (returns ``None``,
changing nothing) when it cannot repair the request without losing user content; the adaptive
handler adds the prefill repair up front for the models known to need it.
:func:`default_processors` is the recommended ordered stack. The contract they follow is in
:mod:`prefill_guard.contract`; writing your own: ``docs/processors.md``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from anthropic import APIError

from .contract import ParamsProcessor, ProcessAPIErrorResult, Processor, RawMessage, RequestParams
from .errors import error_texts, is_prefill_rejection, search_error
from .knowledge import PrefillKnowledge, shared_knowledge
from .messages import (
    INTERRUPTED_TOOL_RESULT,
    MessageList,
    append_system_reminder,
    interrupted_tool_results,
    tool_result_ids,
    tool_use_ids,
    with_tool_results,
)
from .models import continues_server_state
from .params import (
    SAMPLING_PARAMETERS,
    drop_request_params,
    is_set,
    request_param,
    set_request_param,
)

__all__ = [
    "PREFILL_REMINDER_TYPE",
    "TOOL_CHOICE_REMINDER_TYPE",
    "AdaptivePrefillHandler",
    "AdaptiveThinkingHandler",
    "DeprecatedSamplingHandler",
    "ForcedToolChoiceHandler",
    "OrphanedToolUseHandler",
    "PrefillErrorHandler",
    "SamplingConflictHandler",
    "WhitespaceHandler",
    "default_processors",
    "effort_for_budget",
]

PREFILL_REMINDER_TYPE = "anthropic-prefill-processor-retry"
"""The ``systemReminder`` type that tags the reminder :class:`PrefillErrorHandler` appends."""

TOOL_CHOICE_REMINDER_TYPE = "anthropic-tool-choice-processor-retry"
"""The ``systemReminder`` type of the reminder :class:`ForcedToolChoiceHandler` appends."""

_RETRY = ProcessAPIErrorResult(retry=True)


class AdaptivePrefillHandler:
    """Adds the hidden ``continue`` reminder before sending, for models known to reject prefill.

    The proactive half of the prefill repair, so a known model costs no rejected request. As a
    ``before_send`` step it appends the reminder when the conversation ends with an assistant
    turn, the model is known to reject prefill (:class:`~prefill_guard.knowledge.PrefillKnowledge`:
    the model table's version rule, learned and configured models) and the request continues
    no server-side state (:func:`~prefill_guard.models.continues_server_state`). As an error
    processor it only watches, learning each model whose request is rejected for prefill; it
    never asks for a retry itself (:class:`PrefillErrorHandler`, registered after it, repairs).
    The reminder is the handler's, tagged identically, so UIs and stores treat both alike.
    ``knowledge`` defaults to the process-wide :func:`~prefill_guard.knowledge.shared_knowledge`.
    """

    id = "adaptive-prefill-handler"

    def __init__(self, knowledge: PrefillKnowledge | None = None) -> None:
        self.knowledge = knowledge if knowledge is not None else shared_knowledge()

    def before_send(self, *, messages: MessageList, params: RequestParams) -> None:
        """Append the reminder for a known model's prefill (after a ``tool_use``, it answers the
        calls first)."""
        last = messages.last
        model = params.get("model")
        if last is None or last["role"] != "assistant" or not isinstance(model, str):
            return
        if self.knowledge.rejects_prefill(model) and not continues_server_state(messages, params):
            append_system_reminder(messages, "continue", PREFILL_REMINDER_TYPE)

    def process_api_error(
        self, *, error: APIError, messages: MessageList, retry_count: int, params: RequestParams
    ) -> ProcessAPIErrorResult | None:
        """Learn the model of a prefill rejection; leave the repair to the handler."""
        model = params.get("model")
        if isinstance(model, str) and is_prefill_rejection(error):
            self.knowledge.learn(model)
        return None

    def __repr__(self) -> str:
        return f"AdaptivePrefillHandler(learned={self.knowledge.export()!r})"


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

    def __init__(self, *, keep: Literal["temperature", "top_p"] = "temperature") -> None:
        if keep not in ("temperature", "top_p"):
            raise ValueError(f"keep must be 'temperature' or 'top_p', got {keep!r}")
        self.keep = keep

    def process_api_error(
        self, *, error: APIError, messages: MessageList, retry_count: int, params: RequestParams
    ) -> ProcessAPIErrorResult | None:
        """Drop the parameter not kept and ask for a retry, once per run."""
        if retry_count != 0 or search_error(error, _TEMPERATURE_TOP_P) is None:
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
    processor that acts once per run must not leave the next one of them for another
    400. Pass ``drop_together=()`` to drop only what the error names. Declines when none of the
    named parameters is set in the request.
    """

    id = "deprecated-sampling-handler"

    def __init__(self, *, drop_together: Iterable[str] = SAMPLING_PARAMETERS) -> None:
        if isinstance(drop_together, str):
            raise TypeError("drop_together must be a collection of parameter names, not a str")
        self.drop_together = tuple(drop_together)

    def process_api_error(
        self, *, error: APIError, messages: MessageList, retry_count: int, params: RequestParams
    ) -> ProcessAPIErrorResult | None:
        """Drop the deprecated (and accompanying) parameters and ask for a retry, once."""
        if retry_count != 0:
            return None
        named = {
            match.group(1).lower()
            for text in error_texts(error)
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

    def __init__(self, *, effort: Callable[[int], str | None] = effort_for_budget) -> None:
        if not callable(effort):
            raise TypeError(f"effort must be a callable of budget_tokens, got {effort!r}")
        self.effort = effort

    def process_api_error(
        self, *, error: APIError, messages: MessageList, retry_count: int, params: RequestParams
    ) -> ProcessAPIErrorResult | None:
        """Rewrite ``thinking`` (and ``output_config.effort``) and ask for a retry, once."""
        if retry_count != 0 or search_error(error, _THINKING_ENABLED) is None:
            return None
        thinking = request_param(params, "thinking")
        if not isinstance(thinking, Mapping) or thinking.get("type") != "enabled":
            return None
        adaptive: dict[str, Any] = {"type": "adaptive"}
        if is_set(thinking.get("display")):
            adaptive["display"] = thinking["display"]
        budget = thinking.get("budget_tokens")
        output_config = request_param(params, "output_config")
        config = dict(output_config) if isinstance(output_config, Mapping) else {}
        effort = None
        if not is_set(config.get("effort")) and isinstance(budget, int):
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

    def __init__(self, *, remind: bool = True) -> None:
        self.remind = remind

    def process_api_error(
        self, *, error: APIError, messages: MessageList, retry_count: int, params: RequestParams
    ) -> ProcessAPIErrorResult | None:
        """Switch to ``auto``, remind the model of the forced tool, ask for a retry, once."""
        if retry_count != 0 or search_error(error, _FORCED_TOOL_CHOICE) is None:
            return None
        tool_choice = request_param(params, "tool_choice")
        if not isinstance(tool_choice, Mapping) or tool_choice.get("type") not in ("any", "tool"):
            return None
        auto: dict[str, Any] = {"type": "auto"}
        if is_set(tool_choice.get("disable_parallel_tool_use")):
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

    def __init__(self, *, result_text: str = INTERRUPTED_TOOL_RESULT) -> None:
        if not isinstance(result_text, str) or not result_text.strip():
            raise ValueError("result_text must be a non-blank str")
        self.result_text = result_text

    def process_api_error(
        self, *, error: APIError, messages: MessageList, retry_count: int
    ) -> ProcessAPIErrorResult | None:
        """Add the missing results and ask for a retry, once per run."""
        if retry_count != 0:
            return None
        match = search_error(error, _ORPHANED_TOOL_USE)
        if match is None:
            return None
        reported = _reported_ids(match["ids"])
        orphans: list[tuple[int, list[str]]] = []
        for index, message in enumerate(messages):
            following = messages[index + 1] if index + 1 < len(messages) else None
            answered = tool_result_ids(following)
            missing = [i for i in tool_use_ids(message) if i not in answered]
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
                    "content": with_tool_results(following["content"], results),
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
    makes every whitespace repair at once, so it acts once per run: whitespace-only text
    blocks are removed; a user message left with nothing becomes ``placeholder`` (``"."``, the
    filler that works), keeping the turn; an assistant message left with nothing is removed;
    the final assistant message's last text loses its trailing whitespace. Declines when there
    is nothing to change.
    """

    id = "whitespace-handler"

    def __init__(self, *, placeholder: str = ".") -> None:
        if not isinstance(placeholder, str) or not placeholder.strip():
            raise ValueError("placeholder must be a non-blank str")
        self.placeholder = placeholder

    def process_api_error(
        self, *, error: APIError, messages: MessageList, retry_count: int
    ) -> ProcessAPIErrorResult | None:
        """Normalise the whitespace and ask for a retry, once per run."""
        if retry_count != 0:
            return None
        if not any(search_error(error, rule) for rule in (_BLANK_TEXT, _TRAILING_WHITESPACE)):
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

    0. ``AdaptivePrefillHandler`` first: it never asks for a retry,
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

    Each repair acts at most once per run and costs one request, so a request needing
    ``k`` different repairs takes ``k + 1`` requests (one fewer when the adaptive handler already
    knows the model rejects prefill). ``max_processor_retries`` (default 3) bounds ``k``; raise
    it if your requests can need more repairs at once.
    """
    return [
        AdaptivePrefillHandler(),
        DeprecatedSamplingHandler(),
        SamplingConflictHandler(),
        AdaptiveThinkingHandler(),
        ForcedToolChoiceHandler(),
        OrphanedToolUseHandler(),
        WhitespaceHandler(),
        PrefillErrorHandler(),
    ]
