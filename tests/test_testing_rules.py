"""Tests for prefill_guard.testing.rules and .checks: the API's texts, the model rules and the
validation the emulator applies, in the API's order, through the real SDK over HTTP."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest
from anthropic.types import Message
from hypothesis import given
from hypothesis import strategies as st

from prefill_guard import api_message
from prefill_guard.testing import (
    DEFAULT_REPLY_TEXT,
    DEFAULT_RULES,
    FORCED_TOOL_CHOICE_MESSAGE,
    PREFILL_MESSAGE,
    RULE_NAMES,
    TEMPERATURE_DEPRECATED_MESSAGE,
    TEMPERATURE_TOP_P_MESSAGE,
    THINKING_ENABLED_MESSAGE,
    TRAILING_WHITESPACE_MESSAGE,
    WHITESPACE_TEXT_MESSAGE,
    AnthropicEmulator,
    duplicate_tool_use_message,
    model_deprecates_sampling,
    model_rejects_enabled_thinking,
    model_rejects_forced_tool_choice,
    model_rejects_prefill,
    model_rejects_temperature_with_top_p,
    orphaned_tool_use_message,
    prompt_too_long_message,
    unexpected_tool_result_message,
)

from .conftest import (
    PREFILL_TEXT,
    USER_HI,
    assert_bad_request,
    assert_error_shape,
    create,
    raw_post,
)

TOOL_USE = {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {}}


TOOLS: list[Any] = [
    {"name": "get_weather", "description": "Weather.", "input_schema": {"type": "object"}}
]


def post(client: anthropic.Anthropic, model: str, messages: list[Any], **params: Any) -> Message:
    """messages.create() with parameters the SDK has no argument for sent via extra_body."""
    extra = {key: params.pop(key) for key in ("temperature", "top_p", "top_k") if key in params}
    message = client.messages.create(
        model=model, max_tokens=4096, messages=messages, extra_body=extra or None, **params
    )
    assert isinstance(message, Message)
    return message


def rejected(client: anthropic.Anthropic, model: str, messages: list[Any], **params: Any) -> str:
    with pytest.raises(anthropic.BadRequestError) as info:
        post(client, model, messages, **params)
    assert_bad_request(info.value, api_message(info.value) or "")
    return api_message(info.value) or ""


@pytest.mark.parametrize("model", ["claude-opus-4-6", "claude-sonnet-5-5"])
def test_prefill_is_rejected_for_46_and_later_models(
    client: anthropic.Anthropic, model: str
) -> None:
    """A trailing assistant turn on a 4.6+ model gives the API's exact prefill 400."""
    messages: list[Any] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Sure, here"},
    ]
    with pytest.raises(anthropic.BadRequestError) as info:
        create(client, model, messages)

    assert_bad_request(info.value, PREFILL_TEXT)
    assert info.value.response.headers["request-id"] == info.value.request_id


def test_prefill_message_constant_is_the_exact_api_text() -> None:
    """The exported constants match the real API's wording byte for byte."""
    assert PREFILL_MESSAGE == PREFILL_TEXT


async def test_prefill_is_rejected_for_async_client(emu: AnthropicEmulator) -> None:
    """The async SDK raises the same BadRequestError for a rejected prefill."""
    messages: list[Any] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Sure"},
    ]
    async with emu.async_client() as client:
        with pytest.raises(anthropic.BadRequestError) as info:
            await client.messages.create(model="claude-opus-4-7", max_tokens=8, messages=messages)
    assert_bad_request(info.value, PREFILL_TEXT)


def test_prefill_rejection_wins_over_blank_final_assistant_text(
    client: anthropic.Anthropic,
) -> None:
    """A whitespace-only final assistant turn on a 4.6+ model still gets the prefill 400."""
    messages: list[Any] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "   "},
    ]
    with pytest.raises(anthropic.BadRequestError) as info:
        create(client, "claude-opus-4-6", messages)
    assert_bad_request(info.value, PREFILL_TEXT)


def test_prefill_is_allowed_for_older_models(client: anthropic.Anthropic) -> None:
    """claude-haiku-4-5 accepts an assistant prefill and answers 200 with the continuation."""
    messages: list[Any] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "The answer is"}]},
    ]
    message = create(client, "claude-haiku-4-5", messages)
    assert message.content[0].type == "text"
    assert message.content[0].text == DEFAULT_REPLY_TEXT


@pytest.mark.parametrize(
    "final_content",
    ["The answer is ", [{"type": "text", "text": "The answer is\n"}]],
    ids=["string", "text-block"],
)
def test_prefill_with_trailing_whitespace_is_rejected(
    client: anthropic.Anthropic, final_content: Any
) -> None:
    """On a prefill-allowing model, final assistant text ending in whitespace gives a 400."""
    messages: list[Any] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": final_content},
    ]
    with pytest.raises(anthropic.BadRequestError) as info:
        create(client, "claude-haiku-4-5", messages)
    assert_bad_request(info.value, "final assistant content cannot end with trailing whitespace")


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("claude-opus-4-6", True),
        ("claude-sonnet-4-6", True),
        ("claude-sonnet-4-6-20260101", True),
        ("claude-opus-4-7", True),
        ("claude-opus-4-8", True),
        ("claude-opus-5-5", True),
        ("claude-sonnet-5-5", True),
        ("claude-mythos-5-1", True),
        ("claude-opus-5", True),
        ("claude-haiku-4-5", False),
        ("claude-haiku-4-5-20251001", False),
        ("claude-opus-4-1", False),
        ("claude-opus-4-20250514", False),
        ("claude-sonnet-4-20250514", False),
        ("claude-3-5-sonnet-20241022", False),
        ("claude-3-opus", False),
        ("claude-3-opus-20240229", False),
        ("gpt-5", False),
        ("", False),
        ("claude-opus-4-6-preview", False),
    ],
)
def test_model_rejects_prefill_table(model: str, expected: bool) -> None:
    """The default rule: claude-<family>-<major>-<minor>[-date] rejects when >= 4.6."""
    assert model_rejects_prefill(model) is expected


@given(
    family=st.sampled_from(["opus", "sonnet", "haiku", "mythos"]),
    major=st.integers(min_value=0, max_value=99),
    minor=st.integers(min_value=0, max_value=99),
    date=st.one_of(st.none(), st.integers(min_value=20200101, max_value=20991231)),
)
def test_model_rejects_prefill_compares_versions(
    family: str, major: int, minor: int, date: int | None
) -> None:
    """For every well-formed name the rule is exactly (major, minor) >= (4, 6)."""
    name = f"claude-{family}-{major}-{minor}" + ("" if date is None else f"-{date}")
    assert model_rejects_prefill(name) is ((major, minor) >= (4, 6))


@given(st.text())
def test_model_rejects_prefill_never_raises(model: str) -> None:
    """Any string is classified without raising."""
    assert isinstance(model_rejects_prefill(model), bool)


@pytest.mark.parametrize(
    ("model", "rejects"),
    [
        ("my-model", True),
        ("my-model-20260101", True),
        ("my-model-2", False),
        ("claude-opus-4-6", False),
    ],
)
def test_custom_no_prefill_models_replace_the_default_rule(model: str, rejects: bool) -> None:
    """no_prefill_models lists exactly the rejecting models (date suffix allowed)."""
    messages: list[Any] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Sure"},
    ]
    with AnthropicEmulator(no_prefill_models=["my-model"]) as emu, emu.client() as client:
        assert emu.rejects_prefill(model) is rejects
        if rejects:
            with pytest.raises(anthropic.BadRequestError) as info:
                create(client, model, messages)
            assert_bad_request(info.value, PREFILL_TEXT)
        else:
            assert create(client, model, messages).model == model


def test_metadata_key_in_message_is_an_extra_input(client: anthropic.Anthropic) -> None:
    """A `metadata` key inside a message is rejected exactly like the real API does."""
    messages: list[Any] = [{"role": "user", "content": "hi", "metadata": {"source": "x"}}]
    with pytest.raises(anthropic.BadRequestError) as info:
        create(client, "claude-haiku-4-5", messages)
    assert_bad_request(info.value, "messages.0.metadata: Extra inputs are not permitted")


def test_extra_key_is_reported_with_its_message_index(client: anthropic.Anthropic) -> None:
    """The extra-input error names the offending message index."""
    messages: list[Any] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
        {"role": "user", "content": "again", "cache": True},
    ]
    with pytest.raises(anthropic.BadRequestError) as info:
        create(client, "claude-haiku-4-5", messages)
    assert_bad_request(info.value, "messages.2.cache: Extra inputs are not permitted")


def test_invalid_role_is_rejected(client: anthropic.Anthropic) -> None:
    """A role other than user/assistant gives the API's literal-error message."""
    messages: list[Any] = [{"role": "system", "content": "hi"}]
    with pytest.raises(anthropic.BadRequestError) as info:
        create(client, "claude-haiku-4-5", messages)
    assert_bad_request(info.value, "messages.0.role: Input should be 'user' or 'assistant'")


def test_missing_content_is_rejected(client: anthropic.Anthropic) -> None:
    """A message without `content` gives a Field required error."""
    messages: list[Any] = [{"role": "user"}]
    with pytest.raises(anthropic.BadRequestError) as info:
        create(client, "claude-haiku-4-5", messages)
    assert_bad_request(info.value, "messages.0.content: Field required")


@pytest.mark.parametrize(
    "content",
    [
        "",
        "  \n\t",
        [{"type": "text", "text": " "}],
        [{"type": "text", "text": "ok"}, {"type": "text", "text": ""}],
    ],
    ids=["empty-string", "whitespace-string", "whitespace-block", "empty-second-block"],
)
def test_whitespace_only_user_text_is_rejected(client: anthropic.Anthropic, content: Any) -> None:
    """Whitespace-only user text (string or text block) gives the non-whitespace 400."""
    messages: list[Any] = [{"role": "user", "content": content}]
    with pytest.raises(anthropic.BadRequestError) as info:
        create(client, "claude-haiku-4-5", messages)
    assert_bad_request(info.value, "messages: text content blocks must contain non-whitespace text")


def test_whitespace_only_earlier_assistant_text_is_rejected(client: anthropic.Anthropic) -> None:
    """Blank text in a non-final assistant turn is rejected too."""
    messages: list[Any] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": " "},
        {"role": "user", "content": "again"},
    ]
    with pytest.raises(anthropic.BadRequestError) as info:
        create(client, "claude-opus-4-6", messages)
    assert_bad_request(info.value, "messages: text content blocks must contain non-whitespace text")


def test_empty_message_list_is_rejected(client: anthropic.Anthropic) -> None:
    """An empty `messages` list gives a 400."""
    with pytest.raises(anthropic.BadRequestError) as info:
        create(client, "claude-haiku-4-5", [])
    assert_bad_request(info.value, "messages: at least one message is required")


def test_stream_true_still_reports_prefill_error_first(client: anthropic.Anthropic) -> None:
    """create(stream=True) on a rejected prefill raises the 400 before any event is read."""
    messages: list[Any] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Sure"},
    ]
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(
            model="claude-opus-4-6", max_tokens=64, messages=messages, stream=True
        )
    assert_bad_request(info.value, PREFILL_TEXT)


def test_missing_api_key_gives_401(emu: AnthropicEmulator) -> None:
    """Without x-api-key or Authorization the API answers 401 authentication_error."""
    body = json.dumps({"model": "claude-haiku-4-5", "max_tokens": 8, "messages": USER_HI})
    response = raw_post(emu, body.encode(), {"content-type": "application/json"})

    assert response.status_code == 401
    data = response.json()
    assert_error_shape(data, "authentication_error", "x-api-key header is required")
    assert response.headers["request-id"] == data["request_id"]
    assert len(emu.requests) == 1


@pytest.mark.parametrize(
    "headers",
    [{"x-api-key": "k"}, {"authorization": "Bearer k"}],
    ids=["x-api-key", "bearer"],
)
def test_either_auth_header_is_accepted(emu: AnthropicEmulator, headers: dict[str, str]) -> None:
    """x-api-key and Authorization: Bearer both authenticate."""
    body = json.dumps({"model": "claude-haiku-4-5", "max_tokens": 8, "messages": USER_HI})
    response = raw_post(emu, body.encode(), headers)
    assert response.status_code == 200
    assert response.headers["request-id"].startswith("req_")
    assert response.json()["content"][0]["text"] == DEFAULT_REPLY_TEXT


@pytest.mark.parametrize("authorization", ["Bearer", "Basic dXNlcjpwdw=="])
def test_authorization_without_bearer_token_gives_401(
    emu: AnthropicEmulator, authorization: str
) -> None:
    """An Authorization header without a non-empty bearer token does not authenticate."""
    body = json.dumps({"model": "claude-haiku-4-5", "max_tokens": 8, "messages": USER_HI})
    response = raw_post(emu, body.encode(), {"authorization": authorization})
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "Request body is not valid JSON"),
        (b"[1, 2]", "Request body must be a JSON object"),
        (b'{"max_tokens": 8, "messages": []}', "model: Field required"),
        (
            b'{"model": "", "max_tokens": 8, "messages": []}',
            "model: String should have at least 1 character",
        ),
        (b'{"model": "m", "messages": []}', "max_tokens: Field required"),
        (
            b'{"model": "m", "max_tokens": 0, "messages": []}',
            "max_tokens: Input should be greater than or equal to 1",
        ),
        (
            b'{"model": "m", "max_tokens": "8", "messages": []}',
            "max_tokens: Input should be a valid integer",
        ),
        (b'{"model": "m", "max_tokens": 8}', "messages: Field required"),
        (
            b'{"model": "m", "max_tokens": 8, "messages": {}}',
            "messages: Input should be a valid list",
        ),
        (
            b'{"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}],'
            b' "stream": "yes"}',
            "stream: Input should be a valid boolean",
        ),
    ],
)
def test_top_level_validation_errors(emu: AnthropicEmulator, body: bytes, message: str) -> None:
    """Malformed bodies and missing/invalid top-level fields give the matching 400."""
    response = raw_post(emu, body, {"x-api-key": "k", "content-type": "application/json"})
    assert response.status_code == 400
    assert_error_shape(response.json(), "invalid_request_error", message)


def test_stream_prefill_rejection_raises_when_the_stream_is_entered(
    client: anthropic.Anthropic,
) -> None:
    """Validation errors stay plain JSON 400s: messages.stream raises on entering the block."""
    messages: list[Any] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Sure"},
    ]
    manager = client.messages.stream(model="claude-opus-4-6", max_tokens=64, messages=messages)
    with pytest.raises(anthropic.BadRequestError) as info, manager:
        pytest.fail("the stream must not open")
    assert_bad_request(info.value, PREFILL_TEXT)
    assert info.value.response.headers["content-type"].startswith("application/json")


async def test_async_stream_prefill_rejection_raises_when_entered(
    emu: AnthropicEmulator,
) -> None:
    """The async stream manager raises the same BadRequestError on entry."""
    messages: list[Any] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Sure"},
    ]
    async with emu.async_client() as client:
        manager = client.messages.stream(model="claude-opus-4-6", max_tokens=64, messages=messages)
        with pytest.raises(anthropic.BadRequestError) as info:
            async with manager:
                pytest.fail("the stream must not open")
    assert_bad_request(info.value, PREFILL_TEXT)


def test_rule_message_constants_are_the_api_wording() -> None:
    """The exported texts are the API's sentences, byte for byte."""
    assert TEMPERATURE_TOP_P_MESSAGE == (
        "`temperature` and `top_p` cannot both be specified for this model. Please use only one."
    )
    assert TEMPERATURE_DEPRECATED_MESSAGE == "`temperature` is deprecated for this model."
    assert THINKING_ENABLED_MESSAGE == (
        '"thinking.type.enabled" is not supported for this model. Use "thinking.type.adaptive" '
        'and "output_config.effort" to control thinking behavior.'
    )
    assert FORCED_TOOL_CHOICE_MESSAGE == (
        'tool_choice: type "tool" and "any" are not supported for this model.'
    )
    assert orphaned_tool_use_message(3, ["toolu_a", "toolu_b"]) == (
        "messages.3: `tool_use` ids were found without `tool_result` blocks immediately after: "
        "toolu_a, toolu_b. Each `tool_use` block must have a corresponding `tool_result` block "
        "in the next message."
    )
    assert prompt_too_long_message(210, 200) == "prompt is too long: 210 tokens > 200 maximum"
    assert tuple(DEFAULT_RULES) == RULE_NAMES


@pytest.mark.parametrize(
    ("model", "temperature_top_p", "sampling_deprecated", "forced_tool_choice"),
    [
        ("claude-haiku-4-5", True, False, False),
        ("claude-sonnet-4-5-20250929", True, False, False),
        ("claude-sonnet-4", False, False, False),
        ("claude-opus-4-5", False, False, False),
        ("claude-opus-4-6", True, False, False),
        ("claude-opus-4-7", True, True, False),
        ("claude-opus-4-8", True, True, False),
        ("claude-sonnet-4-6", True, False, False),
        ("claude-opus-5-5", True, True, True),
        ("claude-sonnet-5-5", True, False, True),
        ("claude-mythos-5-1", True, False, True),
        ("claude-fable-5", True, False, True),
        ("claude-3-5-sonnet-20241022", False, False, False),
        ("gpt-5", False, False, False),
    ],
)
def test_default_rule_predicates(
    model: str, temperature_top_p: bool, sampling_deprecated: bool, forced_tool_choice: bool
) -> None:
    """Which families each default rule selects."""
    assert model_rejects_temperature_with_top_p(model) is temperature_top_p
    assert model_deprecates_sampling(model) is sampling_deprecated
    assert model_rejects_enabled_thinking(model) is sampling_deprecated
    assert model_rejects_forced_tool_choice(model) is forced_tool_choice


@given(st.text())
def test_default_rule_predicates_never_raise(model: str) -> None:
    """Any string is classified without raising."""
    for rule in DEFAULT_RULES.values():
        assert isinstance(rule(model), bool)


@pytest.mark.parametrize(
    ("model", "params", "message"),
    [
        ("claude-haiku-4-5", {"temperature": 0.5, "top_p": 0.9}, TEMPERATURE_TOP_P_MESSAGE),
        ("claude-opus-4-7", {"temperature": 0.5}, TEMPERATURE_DEPRECATED_MESSAGE),
        ("claude-opus-4-7", {"top_k": 5}, "`top_k` is deprecated for this model."),
        (
            "claude-opus-4-7",
            {"thinking": {"type": "enabled", "budget_tokens": 1024}},
            THINKING_ENABLED_MESSAGE,
        ),
        (
            "claude-opus-5-5",
            {"tools": TOOLS, "tool_choice": {"type": "tool", "name": "get_weather"}},
            FORCED_TOOL_CHOICE_MESSAGE,
        ),
        (
            "claude-sonnet-5-5",
            {"tools": TOOLS, "tool_choice": {"type": "any"}},
            FORCED_TOOL_CHOICE_MESSAGE,
        ),
        (
            "claude-opus-4-7",
            {"thinking": {"type": "adaptive", "budget_tokens": 1024}},
            "thinking.adaptive.budget_tokens: Extra inputs are not permitted",
        ),
        (
            "claude-opus-4-7",
            {"output_config": {"effort": "extreme"}},
            "output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'",
        ),
    ],
)
def test_parameter_rules_answer_with_the_api_text(
    client: anthropic.Anthropic, model: str, params: dict[str, Any], message: str
) -> None:
    """Each parameter rule's 400, through the real SDK."""
    assert rejected(client, model, list(USER_HI), **params) == message


@pytest.mark.parametrize(
    ("model", "params"),
    [
        ("claude-haiku-4-5", {"temperature": 0.5}),
        ("claude-opus-4-1", {"temperature": 0.5, "top_p": 0.9}),
        ("claude-opus-4-1", {"thinking": {"type": "enabled", "budget_tokens": 1024}}),
        ("claude-opus-4-7", {"thinking": {"type": "adaptive"}, "output_config": {"effort": "max"}}),
        ("claude-opus-4-6", {"tools": TOOLS, "tool_choice": {"type": "any"}}),
        ("claude-opus-5-5", {"tools": TOOLS, "tool_choice": {"type": "auto"}}),
    ],
)
def test_parameter_rules_accept_what_the_model_takes(
    client: anthropic.Anthropic, model: str, params: dict[str, Any]
) -> None:
    """Models outside a rule, and the repaired shapes, get a normal 200."""
    assert post(client, model, list(USER_HI), **params).model == model


def test_parameter_rules_come_before_conversation_rules(client: anthropic.Anthropic) -> None:
    """Deprecation first, then the pair, then the conversation (the documented order)."""
    prefill: list[Any] = [*USER_HI, {"role": "assistant", "content": "Sure"}]
    both = {"temperature": 0.5, "top_p": 0.9}
    assert rejected(client, "claude-opus-4-7", prefill, **both) == TEMPERATURE_DEPRECATED_MESSAGE
    assert rejected(client, "claude-sonnet-4-6", prefill, **both) == TEMPERATURE_TOP_P_MESSAGE
    assert rejected(client, "claude-sonnet-4-6", prefill, temperature=0.5) == PREFILL_MESSAGE


def test_orphaned_tool_use_names_the_message_and_the_ids(client: anthropic.Anthropic) -> None:
    """A tool_use answered by plain text: the API's 400 with the index and every missing id."""
    second = {**TOOL_USE, "id": "toolu_01B"}
    messages: list[Any] = [
        *USER_HI,
        {"role": "assistant", "content": [TOOL_USE, second]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01A"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "next"},
    ]
    message = rejected(client, "claude-haiku-4-5", messages)
    assert message == orphaned_tool_use_message(1, ["toolu_01B"])


def test_unexpected_tool_result_is_rejected(client: anthropic.Anthropic) -> None:
    """A tool_result that answers no tool_use of the previous message: the API's 400."""
    messages: list[Any] = [
        *USER_HI,
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_X"}]},
    ]
    message = rejected(client, "claude-haiku-4-5", messages)
    assert message == unexpected_tool_result_message(2, 0, ["toolu_X"])


def test_a_tool_use_id_used_twice_in_a_request_is_rejected(client: anthropic.Anthropic) -> None:
    """Two tool_use blocks with one id anywhere in the request (a conversation stored twice):
    the API's 400 at the second block, before the pairing rules."""
    answer = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01A"}]}
    turn: list[Any] = [{"role": "assistant", "content": [{"type": "text", "text": "x"}, TOOL_USE]}]
    messages: list[Any] = [*USER_HI, *turn, answer, *turn, answer]
    message = rejected(client, "claude-haiku-4-5", messages)
    assert message == duplicate_tool_use_message(3, 1)


def test_answered_and_final_tool_use_are_accepted(client: anthropic.Anthropic) -> None:
    """Results in the next message pass; a final tool_use is left to the prefill rule."""
    answered: list[Any] = [
        *USER_HI,
        {"role": "assistant", "content": [TOOL_USE]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "sunny"},
                {"type": "text", "text": "thanks"},
            ],
        },
    ]
    assert post(client, "claude-opus-4-6", answered).model == "claude-opus-4-6"
    final: list[Any] = [*USER_HI, {"role": "assistant", "content": [TOOL_USE]}]
    assert post(client, "claude-haiku-4-5", final).model == "claude-haiku-4-5"
    assert rejected(client, "claude-opus-4-6", final) == PREFILL_MESSAGE


def test_tool_blocks_need_their_ids(client: anthropic.Anthropic) -> None:
    """tool_use without id / tool_result without tool_use_id: a schema 400."""
    no_id: list[Any] = [*USER_HI, {"role": "assistant", "content": [{"type": "tool_use"}]}]
    assert rejected(client, "claude-haiku-4-5", no_id) == "messages.1.content.0.id: Field required"
    no_ref: list[Any] = [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": 7}]}]
    assert rejected(client, "claude-haiku-4-5", no_ref) == (
        "messages.0.content.0.tool_use_id: Input should be a valid string"
    )


def test_rules_are_configurable_per_model_family() -> None:
    """rules= takes names (date suffix allowed), predicates and bools; others keep defaults."""
    rules: dict[str, Any] = {
        "temperature_top_p": ["my-model"],
        "sampling_deprecated": lambda model: model.startswith("strict-"),
        "orphaned_tool_use": False,
        "blank_text": False,
    }
    with AnthropicEmulator(rules=rules) as emu, emu.client() as client:
        both = {"temperature": 0.5, "top_p": 0.9}
        assert rejected(client, "my-model-20260101", list(USER_HI), **both) == (
            TEMPERATURE_TOP_P_MESSAGE
        )
        assert post(client, "claude-haiku-4-5", list(USER_HI), **both).model
        assert rejected(client, "strict-1", list(USER_HI), top_p=1) == (
            "`top_p` is deprecated for this model."
        )
        assert post(client, "claude-opus-4-7", list(USER_HI), temperature=1).model
        orphan: list[Any] = [*USER_HI, {"role": "assistant", "content": [TOOL_USE]}, *USER_HI]
        assert post(client, "claude-haiku-4-5", orphan).model
        assert post(client, "claude-haiku-4-5", [{"role": "user", "content": " "}]).model
        assert emu.rule_applies("prefill", "claude-opus-4-6")
        emu.set_rule("prefill", True)
        assert emu.rejects_prefill("claude-haiku-4-5")
        emu.set_rule("blank_text", None)  # back to the default
        assert rejected(client, "claude-haiku-4-5", [{"role": "user", "content": " "}]) == (
            WHITESPACE_TEXT_MESSAGE
        )
        emu.set_rule("trailing_whitespace", False)
        trailing: list[Any] = [*USER_HI, {"role": "assistant", "content": "x "}]
        emu.set_rule("prefill", False)
        assert post(client, "claude-opus-4-6", trailing).model
        emu.set_rule("trailing_whitespace", None)
        assert rejected(client, "claude-opus-4-6", trailing) == TRAILING_WHITESPACE_MESSAGE


def test_rule_configuration_errors() -> None:
    """Unknown names, a bare str, and both spellings of the prefill rule are refused."""
    with pytest.raises(ValueError, match="unknown emulator rule"):
        AnthropicEmulator(rules={"prefil": True})
    with pytest.raises(TypeError, match="collection of model names"):
        AnthropicEmulator(rules={"prefill": "claude-opus-4-6"})
    with pytest.raises(TypeError, match="must be str"):
        AnthropicEmulator(rules={"prefill": [1]})  # type: ignore[list-item]
    with pytest.raises(ValueError, match="not both"):
        AnthropicEmulator(no_prefill_models=["x"], rules={"prefill": ["y"]})
    emu = AnthropicEmulator()
    with pytest.raises(ValueError, match="unknown emulator rule"):
        emu.rule_applies("nope", "claude-opus-4-6")
    with pytest.raises(ValueError, match="unknown emulator rule"):
        emu.set_rule("nope", True)
    with pytest.raises(ValueError, match="max_input_tokens"):
        AnthropicEmulator(max_input_tokens=0)
    with pytest.raises(ValueError, match="max_input_tokens"):
        emu.max_input_tokens = True


def test_prompt_too_long(emu: AnthropicEmulator, client: anthropic.Anthropic) -> None:
    """Above max_input_tokens (a word is a token): the API's "prompt is too long" 400."""
    assert emu.max_input_tokens is None
    emu.max_input_tokens = 5
    long: list[Any] = [{"role": "user", "content": "one two three four five six"}]
    assert rejected(client, "claude-opus-4-6", long) == prompt_too_long_message(6, 5)
    assert post(client, "claude-opus-4-6", [{"role": "user", "content": "one two"}]).model
    emu.max_input_tokens = None
    assert post(client, "claude-opus-4-6", long).model
    with AnthropicEmulator(max_input_tokens=3) as small, small.client() as small_client:
        assert rejected(small_client, "claude-haiku-4-5", long) == prompt_too_long_message(6, 3)


@pytest.mark.parametrize(
    ("model", "rejects"),
    [
        ("anthropic.claude-opus-4-6-v1:0", True),
        ("us.anthropic.claude-sonnet-4-6-v1:0", True),
        ("global.anthropic.claude-opus-4-7", True),
        ("claude-opus-4-6@20260101", True),
        ("anthropic.claude-haiku-4-5-20251001-v1:0", False),
        ("claude-haiku-4-5@20251001", False),
    ],
)
def test_platform_model_spellings_follow_the_same_rule(model: str, rejects: bool) -> None:
    """Bedrock and Vertex ids name the same families: the prefill rule reads them too."""
    assert model_rejects_prefill(model) is rejects
