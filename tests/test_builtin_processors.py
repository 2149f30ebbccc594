"""The built-in repair processors and default_processors(): unit tests and end to end.

Unit tests call each hook directly with the SDK's own exception objects (``make_api_error``).
The end-to-end tests drive the real SDK over real HTTP against the emulator through all four
drivers (the ``harness`` fixture), with the emulator answering in the API's own words.
"""

from __future__ import annotations

import copy
from typing import Any

import anthropic
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from prefill_guard import (
    AdaptivePrefillHandler,
    MessageList,
    ParamsProcessor,
    PrefillErrorHandler,
    ProcessAPIErrorResult,
    Processor,
    default_processors,
    guard,
)
from prefill_guard.messages import (
    INTERRUPTED_TOOL_RESULT,
    append_system_reminder,
    interrupted_tool_results,
    is_system_reminder,
)
from prefill_guard.params import drop_request_params, request_param, set_request_param
from prefill_guard.processors import (
    PREFILL_REMINDER_TYPE,
    TOOL_CHOICE_REMINDER_TYPE,
    AdaptiveThinkingHandler,
    DeprecatedSamplingHandler,
    ForcedToolChoiceHandler,
    OrphanedToolUseHandler,
    SamplingConflictHandler,
    WhitespaceHandler,
    effort_for_budget,
)
from prefill_guard.run import Pipeline
from prefill_guard.testing import (
    DEFAULT_REPLY_TEXT,
    FORCED_TOOL_CHOICE_MESSAGE,
    PREFILL_MESSAGE,
    TEMPERATURE_DEPRECATED_MESSAGE,
    TEMPERATURE_TOP_P_MESSAGE,
    THINKING_ENABLED_MESSAGE,
    TRAILING_WHITESPACE_MESSAGE,
    WHITESPACE_TEXT_MESSAGE,
    AnthropicEmulator,
    Fault,
    deprecated_parameter_message,
    make_api_error,
    orphaned_tool_use_message,
)

from .conftest import Harness, treat_like

RETRY = ProcessAPIErrorResult(retry=True)
UNKNOWN_OPUS = "acme-opus"
"""An alias (a gateway's, a fine-tune's) for an Opus 4.7-class model: the emulator applies Opus
4.7's rules to it (prefill, sampling, thinking), and the model table cannot read its version, so
the adaptive guard does not know it: every prefill repair is reactive."""
UNKNOWN_SONNET = "acme-sonnet"
"""Likewise, for a Sonnet 4.6-class model (prefill; temperature beside top_p)."""


@pytest.fixture(autouse=True)
def _unknown_aliases(anthropic_emulator: AnthropicEmulator) -> None:
    treat_like(
        anthropic_emulator, {UNKNOWN_OPUS: "claude-opus-4-7", UNKNOWN_SONNET: "claude-sonnet-4-6"}
    )


OTHER_400 = make_api_error(400, "max_tokens: Field required")
FACTS_ORPHAN_TEXT = (
    "messages.1: tool_use ids were found without tool_result blocks immediately after: toolu_1"
)
ASK_FOR_WEATHER = "Respond by calling the get_weather tool."
TOOL = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def _error(message: str) -> anthropic.APIStatusError:
    return make_api_error(400, message)


def _tool_use(tool_id: str, name: str = "get_weather") -> dict[str, Any]:
    return {"type": "tool_use", "id": tool_id, "name": name, "input": {"city": "Oslo"}}


def _result(tool_id: str) -> dict[str, Any]:
    return {
        "type": "tool_result",
        "tool_use_id": tool_id,
        "content": INTERRUPTED_TOOL_RESULT,
        "is_error": True,
    }


def _call(processor: Any, error: anthropic.APIError, messages: MessageList, **kwargs: Any) -> Any:
    kwargs.setdefault("retry_count", 0)
    return processor.process_api_error(error=error, messages=messages, **kwargs)


# -- request-parameter helpers ------------------------------------------------------------------


def test_request_param_reads_extra_body_first_and_ignores_unset_values() -> None:
    """extra_body wins like it does in the SDK's body; None/NOT_GIVEN count as unset."""
    params = {"temperature": 0.1, "extra_body": {"temperature": 0.7}, "top_p": None}
    assert request_param(params, "temperature") == 0.7
    assert request_param(params, "top_p") is None
    assert request_param({"top_k": anthropic.NOT_GIVEN}, "top_k") is None
    assert request_param({"extra_body": "not a dict"}, "top_k") is None


def test_drop_request_params_copies_extra_body_instead_of_changing_it() -> None:
    """The caller's (the Agent's) extra_body dict is never changed in place."""
    shared = {"temperature": 0.5, "top_p": 0.9, "metadata_tag": "x"}
    params: dict[str, Any] = {"top_p": 0.8, "extra_body": shared}
    assert drop_request_params(params, "top_p")
    assert params == {"extra_body": {"temperature": 0.5, "metadata_tag": "x"}}
    assert shared == {"temperature": 0.5, "top_p": 0.9, "metadata_tag": "x"}
    assert not drop_request_params(params, "top_k")


def test_set_request_param_writes_where_the_key_or_its_neighbour_lives() -> None:
    """An existing key is updated in place of it; a new one goes beside ``near``."""
    shared = {"thinking": {"type": "enabled", "budget_tokens": 2048}}
    params: dict[str, Any] = {"extra_body": shared}
    set_request_param(params, "thinking", {"type": "adaptive"})
    set_request_param(params, "output_config", {"effort": "low"}, near="thinking")
    assert params == {
        "extra_body": {"thinking": {"type": "adaptive"}, "output_config": {"effort": "low"}}
    }
    assert shared == {"thinking": {"type": "enabled", "budget_tokens": 2048}}
    top: dict[str, Any] = {"thinking": {"type": "enabled"}}
    set_request_param(top, "output_config", {"effort": "low"}, near="thinking")
    assert top == {"thinking": {"type": "enabled"}, "output_config": {"effort": "low"}}


# -- SamplingConflictHandler ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        TEMPERATURE_TOP_P_MESSAGE,
        "temperature and top_p cannot both be specified for this model. Please use only one.",
    ],
)
def test_sampling_conflict_drops_top_p_from_extra_body(text: str) -> None:
    """The conflict 400 (with or without backticks): top_p goes, temperature stays."""
    shared = {"temperature": 0.5, "top_p": 0.9}
    params: dict[str, Any] = {"model": "claude-haiku-4-5", "extra_body": shared}
    messages = MessageList([{"role": "user", "content": "hi"}])
    result = _call(SamplingConflictHandler(), _error(text), messages, params=params)
    assert result == RETRY
    assert params["extra_body"] == {"temperature": 0.5}
    assert shared == {"temperature": 0.5, "top_p": 0.9}
    assert list(messages) == [{"role": "user", "content": "hi"}]


def test_sampling_conflict_top_level_and_keep_top_p() -> None:
    """Top-level parameters (a middleware's raw body) work; keep='top_p' drops temperature."""
    params: dict[str, Any] = {"temperature": 0.5, "top_p": 0.9}
    assert (
        _call(
            SamplingConflictHandler(),
            _error(TEMPERATURE_TOP_P_MESSAGE),
            MessageList(),
            params=params,
        )
        == RETRY
    )
    assert params == {"temperature": 0.5}
    params = {"temperature": 0.5, "top_p": 0.9}
    handler = SamplingConflictHandler(keep="top_p")
    assert _call(handler, _error(TEMPERATURE_TOP_P_MESSAGE), MessageList(), params=params) == RETRY
    assert params == {"top_p": 0.9}
    with pytest.raises(ValueError, match="keep"):
        SamplingConflictHandler(keep="top_k")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "params", "retry_count"),
    [
        (_error(TEMPERATURE_TOP_P_MESSAGE), {"extra_body": {"temperature": 0.5, "top_p": 1}}, 1),
        (_error(TEMPERATURE_TOP_P_MESSAGE), {"extra_body": {"temperature": 0.5}}, 0),
        (OTHER_400, {"extra_body": {"temperature": 0.5, "top_p": 0.9}}, 0),
    ],
    ids=["second-time", "nothing-to-drop", "other-error"],
)
def test_sampling_conflict_declines(
    error: anthropic.APIError, params: dict[str, Any], retry_count: int
) -> None:
    """Once per generation, only for its error, only with something to drop."""
    before = copy.deepcopy(params)
    handler = SamplingConflictHandler()
    assert _call(handler, error, MessageList(), params=params, retry_count=retry_count) is None
    assert params == before


# -- DeprecatedSamplingHandler -------------------------------------------------------------------


def test_deprecated_sampling_drops_all_sampling_parameters_by_default() -> None:
    """`temperature` is deprecated: temperature, top_p and top_k go, wherever they are."""
    params: dict[str, Any] = {"top_k": 5, "extra_body": {"temperature": 0.5, "top_p": 0.9}}
    error = _error(TEMPERATURE_DEPRECATED_MESSAGE)
    assert _call(DeprecatedSamplingHandler(), error, MessageList(), params=params) == RETRY
    assert params == {"extra_body": {}}


def test_deprecated_sampling_can_drop_only_what_the_error_names() -> None:
    """drop_together=() keeps the parameters the API did not name."""
    params: dict[str, Any] = {"extra_body": {"temperature": 0.5, "top_k": 5}}
    handler = DeprecatedSamplingHandler(drop_together=())
    assert (
        _call(
            handler, _error("`top_k` is deprecated for this model."), MessageList(), params=params
        )
        == RETRY
    )
    assert params == {"extra_body": {"temperature": 0.5}}
    with pytest.raises(TypeError):
        DeprecatedSamplingHandler(drop_together="top_p")


def test_deprecated_sampling_declines() -> None:
    """Not set, second time, or another error: None and nothing changed."""
    handler = DeprecatedSamplingHandler()
    params: dict[str, Any] = {"extra_body": {"top_p": 0.9}}
    error = _error(TEMPERATURE_DEPRECATED_MESSAGE)
    assert _call(handler, error, MessageList(), params=params) is None
    params = {"extra_body": {"temperature": 0.5}}
    assert _call(handler, error, MessageList(), params=params, retry_count=1) is None
    assert _call(handler, OTHER_400, MessageList(), params=params) is None
    assert params == {"extra_body": {"temperature": 0.5}}


# -- AdaptiveThinkingHandler ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("budget", "effort"),
    [
        (1024, "low"),
        (4095, "low"),
        (4096, "medium"),
        (16383, "medium"),
        (16384, "high"),
        (65535, "high"),
        (65536, "max"),
        (128000, "max"),
    ],
)
def test_effort_for_budget_table(budget: int, effort: str) -> None:
    """The documented mapping from budget_tokens to output_config.effort."""
    assert effort_for_budget(budget) == effort


def test_adaptive_thinking_maps_the_budget_and_keeps_the_rest() -> None:
    """enabled -> adaptive; budget -> effort; display and other output_config keys kept."""
    fmt = {"type": "json_schema", "schema": {"type": "object"}}
    params: dict[str, Any] = {
        "thinking": {"type": "enabled", "budget_tokens": 10_000, "display": "omitted"},
        "output_config": {"format": fmt},
    }
    error = _error(THINKING_ENABLED_MESSAGE)
    assert _call(AdaptiveThinkingHandler(), error, MessageList(), params=params) == RETRY
    assert params == {
        "thinking": {"type": "adaptive", "display": "omitted"},
        "output_config": {"format": fmt, "effort": "medium"},
    }


def test_adaptive_thinking_keeps_an_explicit_effort_and_works_in_extra_body() -> None:
    """An effort already set wins; thinking in extra_body is rewritten there."""
    params: dict[str, Any] = {
        "output_config": {"effort": "low"},
        "extra_body": {"thinking": {"type": "enabled", "budget_tokens": 50_000}},
    }
    error = _error(THINKING_ENABLED_MESSAGE)
    assert _call(AdaptiveThinkingHandler(), error, MessageList(), params=params) == RETRY
    assert params == {
        "output_config": {"effort": "low"},
        "extra_body": {"thinking": {"type": "adaptive"}},
    }
    params = {"extra_body": {"thinking": {"type": "enabled", "budget_tokens": 2_000}}}
    assert _call(AdaptiveThinkingHandler(), error, MessageList(), params=params) == RETRY
    assert params == {
        "extra_body": {"thinking": {"type": "adaptive"}, "output_config": {"effort": "low"}}
    }


def test_adaptive_thinking_custom_effort_and_declines() -> None:
    """effort= may leave the effort to the API; non-enabled thinking is not touched."""
    params: dict[str, Any] = {"thinking": {"type": "enabled", "budget_tokens": 2_000}}
    handler = AdaptiveThinkingHandler(effort=lambda budget: None)
    error = _error(THINKING_ENABLED_MESSAGE)
    assert _call(handler, error, MessageList(), params=params) == RETRY
    assert params == {"thinking": {"type": "adaptive"}}
    assert _call(handler, error, MessageList(), params=params) is None  # already adaptive
    params = {"thinking": {"type": "enabled", "budget_tokens": 2_000}}
    assert _call(handler, error, MessageList(), params=params, retry_count=1) is None
    assert _call(handler, OTHER_400, MessageList(), params=params) is None
    assert params == {"thinking": {"type": "enabled", "budget_tokens": 2_000}}
    with pytest.raises(TypeError):
        AdaptiveThinkingHandler(effort="high")  # type: ignore[arg-type]


# -- ForcedToolChoiceHandler ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        FORCED_TOOL_CHOICE_MESSAGE,
        "tool_choice forces tool use is not compatible with this model",
        "Thinking may not be enabled when tool_choice forces tool use.",
    ],
)
def test_forced_tool_choice_becomes_auto_with_a_hidden_reminder(text: str) -> None:
    """type 'tool' -> auto (parallel setting kept) and one hidden reminder naming the tool."""
    params: dict[str, Any] = {
        "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}
    }
    messages = MessageList([{"role": "user", "content": "Weather in Oslo?"}])
    assert _call(ForcedToolChoiceHandler(), _error(text), messages, params=params) == RETRY
    assert params == {"tool_choice": {"type": "auto", "disable_parallel_tool_use": True}}
    assert list(messages)[1:] == [
        {
            "role": "user",
            "content": f"<system-reminder>{ASK_FOR_WEATHER}</system-reminder>",
            "metadata": {"systemReminder": {"type": TOOL_CHOICE_REMINDER_TYPE}},
        }
    ]
    assert messages.to_ui() == [{"role": "user", "content": "Weather in Oslo?"}]


def test_forced_tool_choice_any_and_without_reminder() -> None:
    """type 'any' asks for any tool; remind=False changes only the parameter."""
    error = _error(FORCED_TOOL_CHOICE_MESSAGE)
    params: dict[str, Any] = {"extra_body": {"tool_choice": {"type": "any"}}}
    messages = MessageList([{"role": "user", "content": "go"}])
    assert _call(ForcedToolChoiceHandler(), error, messages, params=params) == RETRY
    assert params == {"extra_body": {"tool_choice": {"type": "auto"}}}
    assert "one of the available tools" in messages[-1]["content"]
    params = {"tool_choice": {"type": "any"}}
    messages = MessageList([{"role": "user", "content": "go"}])
    assert _call(ForcedToolChoiceHandler(remind=False), error, messages, params=params) == RETRY
    assert len(messages) == 1


def test_forced_tool_choice_declines() -> None:
    """Not forced, second time, or another error: nothing changes."""
    error = _error(FORCED_TOOL_CHOICE_MESSAGE)
    handler = ForcedToolChoiceHandler()
    messages = MessageList([{"role": "user", "content": "go"}])
    auto: dict[str, Any] = {"tool_choice": {"type": "auto"}}
    assert _call(handler, error, messages, params=auto) is None
    forced: dict[str, Any] = {"tool_choice": {"type": "any"}}
    assert _call(handler, error, messages, params=forced, retry_count=1) is None
    assert _call(handler, OTHER_400, messages, params=forced) is None
    assert _call(handler, error, messages, params={}) is None
    assert forced == {"tool_choice": {"type": "any"}}
    assert len(messages) == 1


# -- reminders never orphan a trailing tool_use ------------------------------------------------


def test_append_system_reminder_answers_a_trailing_tool_use_first() -> None:
    """After an assistant tool_use: one hidden message, results first, then the reminder."""
    messages = MessageList(
        [
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    _tool_use("toolu_1"),
                    _tool_use("toolu_2"),
                ],
            },
        ]
    )
    append_system_reminder(messages, "continue", PREFILL_REMINDER_TYPE)
    assert messages[-1] == {
        "role": "user",
        "content": [
            _result("toolu_1"),
            _result("toolu_2"),
            {"type": "text", "text": "<system-reminder>continue</system-reminder>"},
        ],
        "metadata": {"systemReminder": {"type": PREFILL_REMINDER_TYPE}},
    }
    assert is_system_reminder(messages[-1])


def test_prefill_handler_after_tool_use_carries_the_results() -> None:
    """PrefillErrorHandler's reminder answers trailing tool_use blocks in the same message."""
    messages = MessageList(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [_tool_use("t1")]}]
    )
    assert _call(PrefillErrorHandler(), _error(PREFILL_MESSAGE), messages) == RETRY
    assert len(messages) == 3
    assert messages[-1]["content"][0] == _result("t1")
    assert messages[-1]["metadata"] == {"systemReminder": {"type": PREFILL_REMINDER_TYPE}}


# -- OrphanedToolUseHandler ----------------------------------------------------------------------


def test_orphan_results_go_first_into_the_next_user_turn() -> None:
    """The user's own text stays, after the new is_error results."""
    messages = MessageList(
        [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": [_tool_use("toolu_1"), _tool_use("toolu_2")]},
            {"role": "user", "content": "Never mind, tell me a joke."},
        ]
    )
    error = _error(orphaned_tool_use_message(1, ["toolu_1", "toolu_2"]))
    assert _call(OrphanedToolUseHandler(), error, messages) == RETRY
    assert messages[2] == {
        "role": "user",
        "content": [
            _result("toolu_1"),
            _result("toolu_2"),
            {"type": "text", "text": "Never mind, tell me a joke."},
        ],
    }
    assert len(messages) == 3


def test_orphan_fix_keeps_existing_results_and_metadata() -> None:
    """Only the missing results are added, after those already there; metadata survives."""
    messages = MessageList(
        [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": [_tool_use("a"), _tool_use("b")]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "a", "content": "sunny"},
                    {"type": "text", "text": "and?"},
                ],
                "metadata": {"source": "ui"},
            },
        ]
    )
    assert (
        _call(OrphanedToolUseHandler(), _error(orphaned_tool_use_message(1, ["b"])), messages)
        == RETRY
    )
    assert messages[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "a", "content": "sunny"},
        _result("b"),
        {"type": "text", "text": "and?"},
    ]
    assert messages[2]["metadata"] == {"source": "ui"}


def test_orphans_everywhere_are_answered_at_once() -> None:
    """Every orphan gets results in one repair; a missing user turn is inserted."""
    messages = MessageList(
        [
            {"role": "user", "content": "Go"},
            {"role": "assistant", "content": [_tool_use("t1")]},
            {"role": "assistant", "content": "I was interrupted."},
            {"role": "user", "content": "Again"},
            {"role": "assistant", "content": [_tool_use("t2")]},
            {"role": "user", "content": "Stop"},
        ]
    )
    handler = OrphanedToolUseHandler(result_text="cancelled by the user")
    assert _call(handler, _error(FACTS_ORPHAN_TEXT.replace("toolu_1", "t1")), messages) == RETRY
    cancelled = {
        "type": "tool_result",
        "tool_use_id": "t1",
        "content": "cancelled by the user",
        "is_error": True,
    }
    assert messages[2] == {"role": "user", "content": [cancelled]}
    assert messages[6]["content"][0]["tool_use_id"] == "t2"
    assert messages[6]["content"][1] == {"type": "text", "text": "Stop"}
    assert len(messages) == 7


def test_orphan_reported_for_a_final_tool_use_gets_a_new_user_turn() -> None:
    """A final assistant tool_use the API reports is answered by a new user turn."""
    messages = MessageList(
        [{"role": "user", "content": "Go"}, {"role": "assistant", "content": [_tool_use("t9")]}]
    )
    assert (
        _call(OrphanedToolUseHandler(), _error(orphaned_tool_use_message(1, ["t9"])), messages)
        == RETRY
    )
    assert messages[-1] == {"role": "user", "content": [_result("t9")]}


def test_orphan_handler_declines_when_it_cannot_map_the_error() -> None:
    """Unknown ids, no orphans, second time, other errors: nothing changes."""
    conversation = [
        {"role": "user", "content": "Go"},
        {"role": "assistant", "content": [_tool_use("t1")]},
        {"role": "user", "content": "Stop"},
    ]
    messages = MessageList(conversation)
    handler = OrphanedToolUseHandler()
    assert _call(handler, _error(orphaned_tool_use_message(1, ["t7"])), messages) is None
    assert _call(handler, _error(FACTS_ORPHAN_TEXT), messages) is None  # toolu_1 unknown
    error = _error(orphaned_tool_use_message(1, ["t1"]))
    assert _call(handler, error, messages, retry_count=1) is None
    assert _call(handler, OTHER_400, messages) is None
    assert list(messages) == conversation
    answered = MessageList([*conversation[:2], {"role": "user", "content": [_result("t1")]}])
    assert _call(handler, error, answered) is None
    with pytest.raises(ValueError, match="result_text"):
        OrphanedToolUseHandler(result_text=" ")


def test_interrupted_tool_results_shape() -> None:
    """The blocks are tool_result, is_error, with the given text."""
    assert interrupted_tool_results(["x"], "gone") == [
        {"type": "tool_result", "tool_use_id": "x", "content": "gone", "is_error": True}
    ]


# -- WhitespaceHandler ---------------------------------------------------------------------------


def test_whitespace_repairs_everything_at_once_without_losing_text() -> None:
    """Blank blocks go, a blank user turn becomes '.', a blank assistant turn goes,
    and the final assistant text loses its trailing whitespace."""
    messages = MessageList(
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "\n"}],
            },
            {"role": "assistant", "content": "  "},
            {"role": "user", "content": " ", "metadata": {"keep": True}},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Sure, "},
                    {"type": "text", "text": "here:\n"},
                ],
            },
        ]
    )
    assert _call(WhitespaceHandler(), _error(WHITESPACE_TEXT_MESSAGE), messages) == RETRY
    assert list(messages) == [
        {"role": "user", "content": [{"type": "text", "text": "Hi "}]},
        {"role": "user", "content": ".", "metadata": {"keep": True}},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "Sure, "}, {"type": "text", "text": "here:"}],
        },
    ]


def test_whitespace_final_assistant_trailing_and_blank() -> None:
    """Trailing whitespace is stripped; a final assistant of only whitespace is removed."""
    messages = MessageList(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Ok \n"}]
    )
    assert _call(WhitespaceHandler(), _error(TRAILING_WHITESPACE_MESSAGE), messages) == RETRY
    assert messages[-1] == {"role": "assistant", "content": "Ok"}
    messages = MessageList(
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "text", "text": " "}]},
        ]
    )
    assert (
        _call(WhitespaceHandler(placeholder="…"), _error(TRAILING_WHITESPACE_MESSAGE), messages)
        == RETRY
    )
    assert list(messages) == [{"role": "user", "content": "hi"}]


def test_whitespace_declines_with_nothing_to_change() -> None:
    """No whitespace problem, second time, or another error: None."""
    conversation = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Ok"}]
    messages = MessageList(conversation)
    assert _call(WhitespaceHandler(), _error(WHITESPACE_TEXT_MESSAGE), messages) is None
    blank = MessageList([{"role": "user", "content": " "}])
    assert _call(WhitespaceHandler(), _error(WHITESPACE_TEXT_MESSAGE), blank, retry_count=1) is None
    assert _call(WhitespaceHandler(), OTHER_400, blank) is None
    assert list(messages) == conversation
    assert list(blank) == [{"role": "user", "content": " "}]
    with pytest.raises(ValueError, match="placeholder"):
        WhitespaceHandler(placeholder=" ")


_TEXT = st.text(alphabet=" \nab", max_size=6)
_CONTENT = st.one_of(_TEXT, st.lists(st.builds(lambda t: {"type": "text", "text": t}, _TEXT)))
_MESSAGE = st.builds(
    lambda role, content: {"role": role, "content": content},
    st.sampled_from(["user", "assistant"]),
    _CONTENT,
)


def _visible_text(messages: list[dict[str, Any]], placeholder: str) -> str:
    def text(content: Any) -> str:
        if isinstance(content, str):
            return "" if content == placeholder else content
        return "".join(block["text"] for block in content)

    return "".join("".join(text(m["content"]).split()) for m in messages)


def _is_blank_content(content: Any) -> bool:
    if isinstance(content, str):
        return not content.strip()
    return any(block["type"] == "text" and not block["text"].strip() for block in content)


@given(st.lists(_MESSAGE, min_size=1, max_size=6))
@example(  # a blank final turn dropped: the turn before it becomes final and is stripped too
    conversation=[{"role": "assistant", "content": "a "}, {"role": "assistant", "content": " "}]
)
def test_whitespace_repair_never_loses_text(conversation: list[dict[str, Any]]) -> None:
    """Whatever the conversation, the repair keeps every non-whitespace character, in order."""
    messages = MessageList(conversation)
    result = _call(WhitespaceHandler(placeholder="."), _error(WHITESPACE_TEXT_MESSAGE), messages)
    assert _visible_text(list(messages), ".") == _visible_text(conversation, ".")
    if result is None:
        assert list(messages) == conversation
        return
    final_assistant = messages[-1]["role"] == "assistant"
    checked = list(messages)[:-1] if final_assistant else list(messages)
    assert all(m["content"] not in ("", []) for m in checked)
    assert not any(_is_blank_content(m["content"]) for m in checked)
    if final_assistant and isinstance(messages[-1]["content"], str):
        assert messages[-1]["content"] == messages[-1]["content"].rstrip()


@pytest.mark.parametrize(
    "error",
    [
        make_api_error(400, body={"message": f"ValidationException: {FACTS_ORPHAN_TEXT}"}),
        make_api_error(400, body=f"upstream said: {FACTS_ORPHAN_TEXT}"),
        make_api_error(200, FACTS_ORPHAN_TEXT, error_type="invalid_request_error"),
    ],
    ids=["flat-body", "string-body", "sse-error"],
)
def test_error_text_is_found_in_every_shape(error: anthropic.APIError) -> None:
    """Like the prefill detection: proxies' flat bodies, string bodies and SSE errors."""
    messages = MessageList(
        [
            {"role": "user", "content": "Go"},
            {"role": "assistant", "content": [_tool_use("toolu_1")]},
            {"role": "user", "content": "Stop"},
        ]
    )
    assert _call(OrphanedToolUseHandler(), error, messages) == RETRY
    assert messages[2]["content"][0] == _result("toolu_1")


# -- identities and the default stack ----------------------------------------------------------

BUILTINS: list[tuple[type[Any], str, str]] = [
    (DeprecatedSamplingHandler, "deprecated-sampling-handler", "is deprecated for this model"),
    (SamplingConflictHandler, "sampling-conflict-handler", "cannot both be specified"),
    (AdaptiveThinkingHandler, "adaptive-thinking-handler", '"thinking.type.enabled" is not'),
    (ForcedToolChoiceHandler, "forced-tool-choice-handler", 'type "tool" and "any" are not'),
    (OrphanedToolUseHandler, "orphaned-tool-use-handler", "ids were found without tool_result"),
    (WhitespaceHandler, "whitespace-handler", "must contain non-whitespace text"),
    (PrefillErrorHandler, "prefill-error-handler", "does not support assistant message"),
]


def test_default_processors_order_ids_and_freshness() -> None:
    """The documented order; a new list of new instances each call; a valid pipeline."""
    first, second = default_processors(), default_processors()
    assert [type(p) for p in first] == [AdaptivePrefillHandler, *(cls for cls, _, _ in BUILTINS)]
    assert [p.id for p in first][1:] == [processor_id for _, processor_id, _ in BUILTINS]
    assert first is not second
    assert all(a is not b for a, b in zip(first, second, strict=True))
    first.pop()
    assert len(default_processors()) == len(BUILTINS) + 1
    assert Pipeline(default_processors()).processors


@pytest.mark.parametrize(("cls", "processor_id", "error_text"), BUILTINS)
def test_builtin_identity_and_documented_error(
    cls: type[Any], processor_id: str, error_text: str
) -> None:
    """A stable id, a protocol fit, a repr, and the docstring names the error."""
    processor = cls()
    assert processor.id == processor_id
    assert isinstance(processor, (Processor, ParamsProcessor))
    assert repr(processor).startswith(cls.__name__ + "(")
    assert error_text in " ".join((cls.__doc__ or "").split())


# -- end to end against the emulator, through all four drivers ---------------------------------


def _bodies(harness: Harness) -> list[dict[str, Any]]:
    return [request.body for request in harness.emulator.message_requests]


async def test_e2e_sampling_conflict(harness: Harness) -> None:
    """Haiku 4.5 with temperature+top_p in extra_body: one repair, the Agent's dict intact."""
    extra = {"temperature": 0.5, "top_p": 0.9}
    agent = harness.agent(
        "claude-haiku-4-5", error_processors=default_processors(), extra_body=extra
    )
    result = await harness.run(agent, "Name a colour.")
    bodies = _bodies(harness)
    assert len(bodies) == 2
    assert (bodies[0]["temperature"], bodies[0]["top_p"]) == (0.5, 0.9)
    assert bodies[1]["temperature"] == 0.5
    assert "top_p" not in bodies[1]
    assert result.retried_by == ("sampling-conflict-handler",)
    assert result.text == DEFAULT_REPLY_TEXT
    assert agent.default_params["extra_body"] == {"temperature": 0.5, "top_p": 0.9}


async def test_e2e_deprecated_sampling(harness: Harness) -> None:
    """Opus 4.7 with all three sampling parameters: one repair drops them all."""
    agent = harness.agent(
        "claude-opus-4-7",
        error_processors=default_processors(),
        extra_body={"temperature": 0.2, "top_p": 0.9, "top_k": 40},
    )
    result = await harness.run(agent, "Name a colour.")
    bodies = _bodies(harness)
    assert len(bodies) == 2
    assert not {"temperature", "top_p", "top_k"} & set(bodies[1])
    assert result.retried_by == ("deprecated-sampling-handler",)


async def test_e2e_adaptive_thinking(harness: Harness) -> None:
    """Opus 4.7 with thinking enabled: adaptive thinking and the mapped effort on the retry."""
    agent = harness.agent(
        "claude-opus-4-7",
        error_processors=default_processors(),
        max_tokens=16_000,
        thinking={"type": "enabled", "budget_tokens": 8_000},
    )
    result = await harness.run(agent, "Think about it.")
    bodies = _bodies(harness)
    assert len(bodies) == 2
    assert bodies[0]["thinking"] == {"type": "enabled", "budget_tokens": 8_000}
    assert bodies[1]["thinking"] == {"type": "adaptive"}
    assert bodies[1]["output_config"] == {"effort": "medium"}
    assert result.retried_by == ("adaptive-thinking-handler",)


async def test_e2e_forced_tool_choice(harness: Harness) -> None:
    """Opus 5.5 with a forced tool: auto plus a hidden reminder, hidden from the UI view."""
    conversation = MessageList([{"role": "user", "content": "Weather in Oslo?"}])
    agent = harness.agent(
        "claude-opus-5-5",
        error_processors=default_processors(),
        tools=[TOOL],
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    result = await harness.run(agent, conversation)
    bodies = _bodies(harness)
    assert len(bodies) == 2
    assert bodies[1]["tool_choice"] == {"type": "auto"}
    assert bodies[1]["messages"][-1] == {
        "role": "user",
        "content": f"<system-reminder>{ASK_FOR_WEATHER}</system-reminder>",
    }
    assert result.retried_by == ("forced-tool-choice-handler",)
    assert [m["content"] for m in conversation.to_ui()] == [
        "Weather in Oslo?",
        [{"type": "text", "text": DEFAULT_REPLY_TEXT}],
    ]


async def test_e2e_orphaned_tool_use(harness: Harness) -> None:
    """A tool call the user interrupted: is_error results in the next user turn, text kept."""
    conversation = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": [_tool_use("toolu_01A")]},
        {"role": "user", "content": "Actually, skip that."},
    ]
    agent = harness.agent("claude-haiku-4-5", error_processors=default_processors())
    result = await harness.run(agent, conversation)
    bodies = _bodies(harness)
    assert len(bodies) == 2
    assert bodies[1]["messages"][2] == {
        "role": "user",
        "content": [_result("toolu_01A"), {"type": "text", "text": "Actually, skip that."}],
    }
    assert result.retried_by == ("orphaned-tool-use-handler",)


async def test_e2e_whitespace(harness: Harness) -> None:
    """A blank filler user turn on a 4.6 model becomes '.', and the request succeeds."""
    conversation = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": " "},
    ]
    agent = harness.agent("claude-opus-4-6", error_processors=default_processors())
    result = await harness.run(agent, conversation)
    bodies = _bodies(harness)
    assert len(bodies) == 2
    assert bodies[1]["messages"][2] == {"role": "user", "content": "."}
    assert result.retried_by == ("whitespace-handler",)


async def test_e2e_trailing_whitespace_on_an_older_model(harness: Harness) -> None:
    """Haiku 4.5 accepts prefill but not trailing whitespace: stripped, then continued."""
    conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Well, "}]
    agent = harness.agent("claude-haiku-4-5", error_processors=default_processors())
    result = await harness.run(agent, conversation)
    bodies = _bodies(harness)
    assert len(bodies) == 2
    assert bodies[1]["messages"][-1] == {"role": "assistant", "content": "Well,"}
    assert result.retried_by == ("whitespace-handler",)


@pytest.mark.parametrize(
    ("model", "stack"),
    [(UNKNOWN_OPUS, default_processors), ("claude-opus-4-6", lambda: [PrefillErrorHandler()])],
    ids=["default-stack", "handler-alone"],
)
async def test_e2e_prefill_after_tool_use_leaves_no_orphan(
    harness: Harness, model: str, stack: Any
) -> None:
    """A conversation ending in an assistant tool_use: ONE repair, two requests."""
    conversation = MessageList(
        [
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "Let me check."}, _tool_use("toolu_01B")],
            },
        ]
    )
    agent = harness.agent(model, error_processors=stack())
    result = await harness.run(agent, conversation)
    bodies = _bodies(harness)
    assert len(bodies) == 2
    assert bodies[1]["messages"][-1] == {
        "role": "user",
        "content": [
            _result("toolu_01B"),
            {"type": "text", "text": "<system-reminder>continue</system-reminder>"},
        ],
    }
    assert result.retried_by == ("prefill-error-handler",)
    assert len(conversation.to_ui()) == 3  # the reminder (with its results) is hidden


async def test_e2e_known_model_after_tool_use_ends_well_formed(harness: Harness) -> None:
    """Opus 4.6 (known to the adaptive guard) ending in a tool_use: one request, in which the
    guard's reminder answers the call with an is_error result first; hidden from the UI."""
    conversation = MessageList(
        [
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": [_tool_use("toolu_01E")]},
        ]
    )
    agent = harness.agent("claude-opus-4-6", error_processors=default_processors())
    result = await harness.run(agent, conversation)
    bodies = _bodies(harness)
    assert len(bodies) == 1
    assert bodies[-1]["messages"][2] == {
        "role": "user",
        "content": [
            _result("toolu_01E"),
            {"type": "text", "text": "<system-reminder>continue</system-reminder>"},
        ],
    }
    assert result.text == DEFAULT_REPLY_TEXT
    assert len(conversation.to_ui()) == 3


@pytest.mark.parametrize(
    ("model", "requests", "retried_by"),
    [
        (UNKNOWN_SONNET, 3, ("sampling-conflict-handler", "prefill-error-handler")),
        ("claude-sonnet-4-6", 2, ("sampling-conflict-handler",)),
    ],
    ids=["reactive", "known-to-the-guard"],
)
async def test_e2e_multi_repair_sampling_and_prefill(
    harness: Harness, model: str, requests: int, retried_by: tuple[str, ...]
) -> None:
    """temperature+top_p AND a trailing assistant turn, default stack: the fewest requests.

    The emulator checks parameters before the conversation and reports one error at a time.
    Reactive (a model the adaptive guard does not know): 400 sampling (top_p dropped), 400
    prefill (reminder added), 200: three requests. Sonnet 4.6, which the guard knows: the
    reminder goes out with the first request, so 400 sampling, 200: two requests.
    """
    conversation = MessageList(
        [{"role": "user", "content": "Write a haiku."}, {"role": "assistant", "content": "Snow"}]
    )
    agent = harness.agent(
        model,
        error_processors=default_processors(),
        extra_body={"temperature": 0.5, "top_p": 0.9},
    )
    result = await harness.run(agent, conversation)
    bodies = _bodies(harness)
    assert len(bodies) == requests
    assert [a.error is None for a in result.attempts] == [False] * (requests - 1) + [True]
    assert result.retried_by == retried_by
    assert (bodies[0]["temperature"], bodies[0]["top_p"]) == (0.5, 0.9)
    assert all("top_p" not in body and body["temperature"] == 0.5 for body in bodies[1:])
    reminder = {"role": "user", "content": "<system-reminder>continue</system-reminder>"}
    assert bodies[-1]["messages"] == [*conversation.to_api()[:2], reminder]
    assert result.text == DEFAULT_REPLY_TEXT
    assert len(conversation.to_ui()) == 3


async def test_e2e_three_repairs_reach_the_default_cap_exactly(harness: Harness) -> None:
    """Opus-4.7 rules: sampling, thinking and a trailing tool_use turn: 3 repairs, 4 requests."""
    conversation = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": [_tool_use("toolu_01C")]},
    ]
    agent = harness.agent(
        UNKNOWN_OPUS,
        error_processors=default_processors(),
        max_tokens=8_000,
        thinking={"type": "enabled", "budget_tokens": 2_000},
        extra_body={"temperature": 0.5, "top_p": 0.9},
    )
    result = await harness.run(agent, conversation)
    assert len(harness.emulator.message_requests) == 4
    assert result.retried_by == (
        "deprecated-sampling-handler",
        "adaptive-thinking-handler",
        "prefill-error-handler",
    )
    last = _bodies(harness)[-1]
    assert last["thinking"] == {"type": "adaptive"}
    assert last["output_config"] == {"effort": "low"}
    assert not {"temperature", "top_p"} & set(last)
    assert last["messages"][-1]["content"][0] == _result("toolu_01C")


async def test_e2e_a_fourth_repair_is_beyond_the_default_cap(harness: Harness) -> None:
    """Four different repairs need max_processor_retries=4; at 3 the fourth error surfaces."""
    conversation = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": " "},
        {"role": "assistant", "content": "Sure"},
    ]
    params: dict[str, Any] = {
        "max_tokens": 8_000,
        "thinking": {"type": "enabled", "budget_tokens": 2_000},
        "extra_body": {"temperature": 0.5},
    }
    capped = harness.agent(UNKNOWN_OPUS, error_processors=default_processors(), **params)
    with pytest.raises(anthropic.BadRequestError, match="assistant message prefill"):
        await harness.run(capped, conversation)
    assert len(harness.emulator.message_requests) == 4
    harness.emulator.reset()
    roomy = harness.agent(
        UNKNOWN_OPUS, error_processors=default_processors(), max_processor_retries=4, **params
    )
    result = await harness.run(roomy, conversation)
    assert len(harness.emulator.message_requests) == 5
    assert result.retried_by == (
        "deprecated-sampling-handler",
        "adaptive-thinking-handler",
        "whitespace-handler",
        "prefill-error-handler",
    )


def test_builtins_repair_a_raw_body_in_the_client_middleware(
    anthropic_emulator: AnthropicEmulator,
) -> None:
    """Through the SDK middleware the sampling parameters are top level: dropped there."""
    with anthropic_emulator.client() as client:
        guarded = guard(client, processors=[SamplingConflictHandler()])
        message = guarded.messages.create(
            model="claude-haiku-4-5",
            max_tokens=64,
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"temperature": 0.5, "top_p": 0.9},
        )
    assert message.content[0].type == "text"
    first, retry = (r.body for r in anthropic_emulator.message_requests)
    assert (first["temperature"], first["top_p"]) == (0.5, 0.9)
    assert retry["temperature"] == 0.5
    assert "top_p" not in retry


async def test_e2e_an_unknown_400_reaches_the_caller_after_one_request(harness: Harness) -> None:
    """The stack declines errors it does not know: the caller gets the SDK's error at once."""
    harness.emulator.script(Fault(400))
    agent = harness.agent("claude-opus-4-6", error_processors=default_processors())
    with pytest.raises(anthropic.BadRequestError, match="issue with the format"):
        await harness.run(agent, [{"role": "user", "content": "hi"}])
    assert len(harness.emulator.message_requests) == 1


def test_deprecated_parameter_message_wording() -> None:
    """The emulator's wording for top_p/top_k follows the confirmed temperature sentence."""
    assert deprecated_parameter_message("temperature") == TEMPERATURE_DEPRECATED_MESSAGE
