"""MessageList: validation, copies, the API and UI views, and the JSON round trip."""

from __future__ import annotations

from typing import Any

import pytest
from anthropic.types import Message
from hypothesis import given
from hypothesis import strategies as st

from prefill_guard import MessageList
from prefill_guard.messages import (
    MAX_NESTING,
    check_input,
    is_system_reminder,
    system_reminder,
)

REMINDER = system_reminder("continue", "anthropic-prefill-processor-retry")


def _reply(text: str = "Hi there.") -> Message:
    return Message.model_validate(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-opus-4-6",
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 2},
        }
    )


def test_raw_view_keeps_hidden_messages_and_metadata() -> None:
    """Iteration, len and indexing give the raw messages, reminders and metadata included."""
    messages = MessageList([{"role": "user", "content": "hi"}, REMINDER])
    assert len(messages) == 2
    assert messages[1] == REMINDER
    assert list(messages)[1]["metadata"] == {
        "systemReminder": {"type": "anthropic-prefill-processor-retry"}
    }


def test_caller_list_and_dicts_are_never_mutated() -> None:
    """MessageList copies its input, so changing it leaves the caller's objects alone."""
    blocks = [{"type": "text", "text": "hello"}]
    original = [{"role": "user", "content": blocks}]
    messages = MessageList(original)
    messages.add("assistant", "hey")
    messages[0]["content"][0]["text"] = "changed"
    assert original == [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]


def test_to_api_drops_every_non_api_key_but_keeps_reminders() -> None:
    """to_api() sends role and content only; reminders stay (they are the repair)."""
    messages = MessageList(
        [{"role": "user", "content": "hi", "id": "m1", "metadata": {"x": 1}}, REMINDER]
    )
    assert messages.to_api() == [
        {"role": "user", "content": "hi"},
        {"role": "user", "content": "<system-reminder>continue</system-reminder>"},
    ]


def test_to_ui_hides_reminders_by_metadata_not_text() -> None:
    """A user who types <system-reminder> stays visible; the tagged reminder does not."""
    typed = {"role": "user", "content": "<system-reminder>continue</system-reminder>"}
    messages = MessageList([typed, REMINDER])
    assert messages.to_ui() == [typed]
    assert not is_system_reminder(typed)
    assert is_system_reminder(REMINDER)


def test_add_returns_the_stored_message_with_metadata() -> None:
    """add() appends one message, metadata kept on the raw form."""
    messages = MessageList()
    stored = messages.add("user", "hi", metadata={"source": "cli"})
    assert stored == {"role": "user", "content": "hi", "metadata": {"source": "cli"}}
    assert messages.last is stored


def test_anthropic_message_becomes_an_assistant_turn() -> None:
    """A Message response object is accepted and stored as plain assistant block dicts."""
    messages = MessageList([{"role": "user", "content": "hi"}, _reply()])
    assert messages[1] == {"role": "assistant", "content": [{"type": "text", "text": "Hi there."}]}
    messages.append(_reply("again"))
    assert messages.to_api()[-1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "again"}],
    }


def test_json_round_trip_keeps_metadata_exactly() -> None:
    """to_json()/from_json() is the identity on the raw messages."""
    messages = MessageList(
        [{"role": "user", "content": "héllo", "metadata": {"a": [1, {"b": None}]}}, REMINDER]
    )
    assert MessageList.from_json(messages.to_json()) == messages


def test_slicing_gives_a_message_list() -> None:
    """A slice is a MessageList of the same raw messages."""
    messages = MessageList(
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    )
    assert isinstance(messages[1:], MessageList)
    assert messages[1:].to_api() == [{"role": "assistant", "content": "b"}]


@pytest.mark.parametrize(
    ("bad", "error", "text"),
    [
        ("hello", TypeError, "messages must be a list of message dicts, got str"),
        ({"role": "user"}, TypeError, "got dict"),
        (42, TypeError, "got int"),
        ([{"role": "user", "content": "a"}, 7], TypeError, "messages[1]: expected a dict"),
        ([{"content": "a"}], ValueError, "messages[0]: missing 'role'"),
        ([{"role": "system", "content": "a"}], ValueError, "messages[0]: unknown role 'system'"),
        ([{"role": ["user"], "content": "a"}], ValueError, "messages[0]: unknown role ['user']"),
        ([{"role": "user"}], ValueError, "messages[0]: missing 'content'"),
        ([{"role": "user", "content": 3}], TypeError, "messages[0]: 'content' must be a str"),
        ([{"role": "user", "content": ["x"]}], TypeError, "messages[0].content[0]: expected"),
        ([{"role": "user", "content": [{"text": "x"}]}], ValueError, "messages[0].content[0]"),
        ([{"role": "user", "content": "a", "metadata": []}], TypeError, "'metadata' must be"),
    ],
)
def test_bad_input_names_the_index_and_problem(bad: Any, error: type[Exception], text: str) -> None:
    """Bad input raises TypeError/ValueError naming where and what; nothing is dropped."""
    with pytest.raises(error) as info:
        MessageList(bad)
    assert text in str(info.value)


def test_insert_and_setitem_validate() -> None:
    """Messages added after construction are validated the same way."""
    messages = MessageList([{"role": "user", "content": "a"}])
    with pytest.raises(ValueError, match=r"messages\[0\]: unknown role 'tool'"):
        messages.insert(0, {"role": "tool", "content": "x"})
    with pytest.raises(ValueError, match="missing 'content'"):
        messages[0] = {"role": "user"}
    assert messages.to_api() == [{"role": "user", "content": "a"}]


def test_to_json_names_the_message_that_cannot_be_serialised() -> None:
    """Metadata that JSON cannot hold gives a TypeError naming the index."""
    messages = MessageList([{"role": "user", "content": "a"}])
    messages.add("user", "b", metadata={"when": object()})
    with pytest.raises(TypeError, match=r"messages\[1\] is not JSON-serialisable"):
        messages.to_json()


def test_from_json_rejects_non_json_and_non_lists() -> None:
    """from_json() explains what it was given instead of a message list."""
    with pytest.raises(ValueError, match="not a JSON message list"):
        MessageList.from_json("{oops")
    with pytest.raises(TypeError, match="expected a JSON array"):
        MessageList.from_json('{"role": "user"}')


# -- properties --------------------------------------------------------------------------
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
_blocks = st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": st.text()}), max_size=3)
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant"]), "content": st.text() | _blocks},
    optional={
        "metadata": st.dictionaries(st.text(), _json_values, max_size=3),
        "id": st.text(),
        "created_at": st.integers(),
    },
)


@given(st.lists(_message, max_size=6))
def test_to_api_never_carries_a_non_api_key(raw: list[dict[str, Any]]) -> None:
    """Property: whatever the raw messages hold, to_api() has only role and content."""
    assert all(set(m) == {"role", "content"} for m in MessageList(raw).to_api())


@given(st.lists(_message, max_size=6))
def test_json_round_trip_is_the_identity(raw: list[dict[str, Any]]) -> None:
    """Property: from_json(to_json(x)) == x, metadata included."""
    messages = MessageList(raw)
    assert MessageList.from_json(messages.to_json()) == messages
    assert list(MessageList.from_json(messages.to_json())) == raw


_citation = st.fixed_dictionaries(
    {
        "type": st.just("char_location"),
        "cited_text": st.text(max_size=5),
        "document_index": st.integers(0, 3),
        "document_title": st.none() | st.text(max_size=5),
        "start_char_index": st.integers(0, 9),
        "end_char_index": st.integers(0, 9),
    }
)
_text_block = st.fixed_dictionaries(
    {"type": st.just("text"), "text": st.text()},
    optional={"citations": st.none() | st.lists(_citation, max_size=2), "extra": st.text()},
)


@given(st.lists(_text_block, min_size=1, max_size=3), st.booleans())
def test_a_reply_is_stored_as_its_json_dump(blocks: list[dict[str, Any]], validated: bool) -> None:
    """Property: a reply's blocks are stored as model_dump(mode="json", exclude_none=True),
    for validated and constructed replies alike (the SDK constructs them unvalidated), and
    whether the reply or a message dict holding its blocks is stored."""
    body = {**_reply().model_dump(), "content": blocks}
    reply = Message.model_validate(body) if validated else Message.construct(**body)
    expected = [b.model_dump(mode="json", exclude_none=True) for b in reply.content]
    stored = MessageList([reply])[0]
    assert stored == {"role": "assistant", "content": expected}
    assert [list(b) for b in stored["content"]] == [list(b) for b in expected]  # key order too
    appended = MessageList()
    appended.append(reply)  # the run's path for its reply
    assert appended[0] == stored
    assert [list(b) for b in appended[0]["content"]] == [list(b) for b in expected]
    as_dict = MessageList([{"role": "assistant", "content": list(reply.content)}])[0]
    assert as_dict == stored  # the reply's block models inside a message dict
    assert [list(b) for b in as_dict["content"]] == [list(b) for b in expected]


@pytest.mark.parametrize("role", ["system", None, ["assistant"]])
def test_a_constructed_reply_with_a_bad_role_is_refused_by_name(role: Any) -> None:
    """The SDK builds replies without validation; a bad role gets the usual clear error."""
    reply = Message.construct(**{**_reply().model_dump(), "role": role})
    with pytest.raises(ValueError, match=r"messages\[1\]: unknown role"):
        MessageList([{"role": "user", "content": "hi"}, reply])
    conversation = MessageList([{"role": "user", "content": "hi"}])
    with pytest.raises(ValueError, match=r"messages\[1\]: unknown role"):
        conversation.append(reply)
    assert len(conversation) == 1


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"a": value}
    return value


def _tool_use(value: Any) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "t", "name": "f", "input": value}],
    }


def test_deep_input_is_a_value_error_naming_the_message() -> None:
    """Nesting past MAX_NESTING (here 2,000 deep, once a raw RecursionError from the copy) is
    refused by name; MAX_NESTING itself is fine."""
    ok = MessageList([_tool_use(_nested(MAX_NESTING - 2))])
    assert ok[0]["content"][0]["input"] == _nested(MAX_NESTING - 2)
    with pytest.raises(ValueError, match=r"messages\[1\]\.content\[0\]: nested more than 200"):
        MessageList([{"role": "user", "content": "hi"}, _tool_use(_nested(2_000))])
    with pytest.raises(ValueError, match=r"messages\[0\]\.metadata: nested more than"):
        MessageList([{"role": "user", "content": "hi", "metadata": _nested(2_000)}])


def test_cyclic_input_is_a_value_error_naming_the_message() -> None:
    """A reference cycle cannot be sent: refused when it is added, by name; a value shared by
    two places is not a cycle."""
    cyclic: dict[str, Any] = {"a": []}
    cyclic["a"].append(cyclic)
    with pytest.raises(ValueError, match=r"messages\[0\]\.content\[0\]: holds a reference cycle"):
        MessageList([_tool_use(cyclic)])
    shared = {"x": 1}
    assert MessageList([_tool_use({"one": shared, "two": shared})])[0]["content"][0]["input"] == {
        "one": {"x": 1},
        "two": {"x": 1},
    }


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("caf\udce9", r"messages\[1\]: text 'caf\\udce9' holds a lone surrogate"),
        ([{"type": "text", "text": "\ud800"}], "lone surrogate"),
        (
            [{"type": "tool_result", "tool_use_id": "t", "content": float("inf")}],
            "inf is not valid JSON",
        ),
    ],
)
def test_check_input_refuses_what_no_request_can_carry(content: Any, problem: str) -> None:
    """Text UTF-8 cannot encode and numbers JSON has no form for, by index."""
    messages = MessageList(
        [{"role": "user", "content": "fine"}, {"role": "user", "content": content}]
    )
    with pytest.raises(ValueError, match=problem):
        check_input(messages)


def test_check_input_for_saving_also_refuses_blank_and_empty_content() -> None:
    """Blank or empty content is accepted in a request (the API answers, or a processor
    repairs), but refused as input to be saved in a thread."""
    for content in ("", " \n", [], [{"type": "text", "text": "  "}]):
        messages = MessageList([{"role": "user", "content": content}])
        check_input(messages)
        with pytest.raises(ValueError, match=r"messages\[0\]"):
            check_input(messages, saved=True)
    check_input(MessageList([{"role": "user", "content": "ok"}]), saved=True)
