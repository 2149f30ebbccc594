"""The model table: one rule per refusal, read alike by the adaptive guard and the emulator."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from prefill_guard import models
from prefill_guard.knowledge import PrefillKnowledge
from prefill_guard.testing import DEFAULT_RULES, AnthropicEmulator

ENDS_WITH_ASSISTANT: list[Any] = [
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "Hello"},
]
SHAPES = [
    # Ids the catalog does not list, in the shapes the rules read: new versions, other families.
    "claude-sonnet-4-7",
    "claude-haiku-4-6",
    "claude-opus-6-1",
    "claude-haiku-5-5",
    "claude-fable-5",
]


def _spellings(model: str) -> list[str]:
    """The id, dated, and in its Bedrock and Vertex spellings."""
    return [
        model,
        f"{model}-20260101",
        f"anthropic.{model}-v1:0",
        f"us.anthropic.{model}-v1:0",
        f"{model}@20260101",
    ]


@pytest.fixture(scope="module")
def emulator() -> Any:
    with AnthropicEmulator() as running:
        yield running


@pytest.mark.parametrize("model", [*models.KNOWN_MODELS, *SHAPES])
def test_the_guard_and_the_emulator_agree_on_every_model(
    emulator: AnthropicEmulator, model: str
) -> None:
    """For every model id the emulator lists (and ids of the same shape it does not), in every
    spelling: the adaptive guard knows it rejects prefill exactly when the emulator, over real
    HTTP, answers a conversation ending with an assistant turn with the prefill 400."""
    knowledge = PrefillKnowledge()
    with emulator.client(max_retries=0) as client:
        for name in _spellings(model):
            rejection = _prefill_rejection(client, name)
            assert knowledge.rejects_prefill(name) is (rejection is not None), name
            assert emulator.rejects_prefill(name) is models.rejects_prefill(name), name


def _prefill_rejection(client: anthropic.Anthropic, model: str) -> str | None:
    """The 400's message if the emulator refuses a final assistant turn for ``model``."""
    try:
        client.messages.create(model=model, max_tokens=8, messages=ENDS_WITH_ASSISTANT)
    except anthropic.BadRequestError as error:
        message = str(error)
        if "assistant message prefill" not in message:
            raise
        return message
    return None


@pytest.mark.parametrize("model", [*models.KNOWN_MODELS, *SHAPES])
def test_the_emulators_default_rules_are_the_tables(model: str) -> None:
    """Every parameter rule of the emulator is the table's function, by default."""
    table = {
        "prefill": models.rejects_prefill,
        "temperature_top_p": models.rejects_temperature_with_top_p,
        "sampling_deprecated": models.deprecates_sampling,
        "thinking_enabled": models.rejects_enabled_thinking,
        "forced_tool_choice": models.rejects_forced_tool_choice,
    }
    for name, rule in table.items():
        assert DEFAULT_RULES[name](model) is rule(model)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("claude-opus-4-6", True),
        ("claude-sonnet-4-6", True),
        ("claude-opus-4-8", True),
        ("claude-mythos-5-1", True),
        ("claude-haiku-4-5", False),
        ("claude-sonnet-4-5", False),
        ("claude-opus-4-20250514", False),
        ("claude-3-5-sonnet-20241022", False),
        ("acme-opus", False),
    ],
)
def test_the_prefill_rule_is_by_version(model: str, expected: bool) -> None:
    """4.6 and later, any family; older versions and names of other shapes are not matched."""
    assert models.rejects_prefill(model) is expected


@pytest.mark.parametrize(
    ("messages", "params"),
    [
        (ENDS_WITH_ASSISTANT, {"fallback_credit_token": "tok_1"}),
        (ENDS_WITH_ASSISTANT, {"fallback_credit_token": {"token": "tok_1", "mode": "strict"}}),
        (ENDS_WITH_ASSISTANT, {"thread": {"type": "continue", "previous_message_id": "msg_1"}}),
        (ENDS_WITH_ASSISTANT, {"extra_body": {"thread": {"type": "create"}}}),
        (
            [{"role": "assistant", "content": [{"type": "compaction", "content": "summary"}]}],
            {},
        ),
    ],
)
def test_server_state_continuations_are_recognised(
    messages: list[Any], params: dict[str, Any]
) -> None:
    """A credit token, a thread (top level or in extra_body), a trailing compaction block."""
    assert models.continues_server_state(messages, {"model": "claude-opus-4-8", **params})


def test_a_plain_request_is_no_continuation() -> None:
    """Unset fields (None) and a compaction block before other content are not continuations."""
    compaction_first = [
        {
            "role": "assistant",
            "content": [{"type": "compaction", "content": "s"}, {"type": "text", "text": "x"}],
        }
    ]
    assert not models.continues_server_state(ENDS_WITH_ASSISTANT, {"thread": None})
    assert not models.continues_server_state(compaction_first, {})
    assert not models.continues_server_state([], {})
