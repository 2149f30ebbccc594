"""The emulator's validation of a Messages request, in the API's order, one error at a time.

1. authentication, the JSON body, top-level fields and each message's shape;
2. request-parameter rules: ``sampling_deprecated``, ``temperature_top_p``,
   ``thinking_enabled`` (plus the adaptive-thinking and effort shapes), ``forced_tool_choice``;
3. conversation rules, message by message: ``orphaned_tool_use``, then empty content and
   ``blank_text``, then ``prefill`` and ``trailing_whitespace`` for a final assistant message
   (``prefill`` not for a request that continues server-side state, as the API allows: see
   `prefill_guard.models.continues_server_state`);
4. the prompt length (``max_input_tokens``).

Kept apart from `rules` (the vocabulary tests import) because this is how the responder applies
it: the first failing check raises `Rejection`, which the responder answers as an API error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from .. import models as model_table
from ..params import SAMPLING_PARAMETERS
from .rules import (
    EMPTY_CONTENT_MESSAGE,
    FORCED_TOOL_CHOICE_MESSAGE,
    MISSING_API_KEY_MESSAGE,
    PREFILL_MESSAGE,
    TEMPERATURE_TOP_P_MESSAGE,
    THINKING_ENABLED_MESSAGE,
    TRAILING_WHITESPACE_MESSAGE,
    WHITESPACE_TEXT_MESSAGE,
    deprecated_parameter_message,
    duplicate_tool_use_message,
    orphaned_tool_use_message,
    prompt_too_long_message,
    unexpected_tool_result_message,
)

__all__ = ["Rejection", "check_request", "input_tokens"]

_NOT_AN_OBJECT: Final[str] = "Input should be a valid dictionary or object to extract fields from"
_EFFORTS: Final[tuple[str, ...]] = ("low", "medium", "high", "xhigh", "max")
_THINKING_TYPES: Final[tuple[str, ...]] = ("enabled", "disabled", "adaptive")


class Rejection(Exception):
    """A failed check: the responder answers it with the API's error body for `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def input_tokens(body: Mapping[str, Any]) -> int:
    """The emulator's prompt length: one token per word of the messages and the system prompt."""
    return max(1, _count_words(body.get("messages")) + _count_words(body.get("system")))


def _count_words(value: Any) -> int:
    """Roughly count the words of all text found in a request value."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_count_words(item) for item in value)
    if isinstance(value, dict):
        total = 0
        for key in ("text", "content", "system"):
            if key in value:
                total += _count_words(value[key])
        return total
    return 0


def check_request(
    headers: Mapping[str, str],
    raw: bytes,
    body: Any,
    *,
    applies: Callable[[str, str], bool],
    max_input_tokens: int | None,
) -> str:
    """Check one Messages request in the documented order and return its model.

    `applies(rule, model)` says whether a rule is on for the model; the first failing check
    raises `Rejection`.
    """
    _check_auth(headers)
    if not raw:
        raise Rejection(400, "Request body is not valid JSON")
    if isinstance(body, str):
        raise Rejection(400, "Request body is not valid JSON")
    if not isinstance(body, dict):
        raise Rejection(400, "Request body must be a JSON object")
    model = _check_params(body)
    messages: list[Any] = body["messages"]
    for index, message in enumerate(messages):
        _check_message(index, message)
    _check_model_params(model, body, applies)
    _check_unique_tool_use_ids(messages)
    if applies("orphaned_tool_use", model):
        _check_tool_pairs(messages)
    last = messages[-1]
    ends_with_assistant = last["role"] == "assistant"
    checked = messages[:-1] if ends_with_assistant else messages
    blank_text_rule = applies("blank_text", model)
    for index, message in enumerate(checked):
        if message["content"] == []:
            raise Rejection(400, f"messages.{index}: {EMPTY_CONTENT_MESSAGE}")
        if blank_text_rule and _has_blank_text(message["content"]):
            raise Rejection(400, WHITESPACE_TEXT_MESSAGE)
    if ends_with_assistant:
        if applies("prefill", model) and not model_table.continues_server_state(messages, body):
            raise Rejection(400, PREFILL_MESSAGE)
        final_text = _final_text(last["content"])
        if (
            final_text is not None
            and final_text != final_text.rstrip()
            and applies("trailing_whitespace", model)
        ):
            raise Rejection(400, TRAILING_WHITESPACE_MESSAGE)
    if max_input_tokens is not None and (tokens := input_tokens(body)) > max_input_tokens:
        raise Rejection(400, prompt_too_long_message(tokens, max_input_tokens))
    return model


def _check_auth(headers: Mapping[str, str]) -> None:
    if headers.get("x-api-key", "").strip():
        return
    scheme, _, token = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return
    raise Rejection(401, MISSING_API_KEY_MESSAGE)


def _check_params(body: dict[str, Any]) -> str:
    if "model" not in body:
        raise Rejection(400, "model: Field required")
    model = body["model"]
    if not isinstance(model, str):
        raise Rejection(400, "model: Input should be a valid string")
    if not model:
        raise Rejection(400, "model: String should have at least 1 character")
    if "max_tokens" not in body:
        raise Rejection(400, "max_tokens: Field required")
    max_tokens = body["max_tokens"]
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        raise Rejection(400, "max_tokens: Input should be a valid integer")
    if max_tokens < 1:
        raise Rejection(400, "max_tokens: Input should be greater than or equal to 1")
    if "messages" not in body:
        raise Rejection(400, "messages: Field required")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise Rejection(400, "messages: Input should be a valid list")
    if not messages:
        raise Rejection(400, "messages: at least one message is required")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise Rejection(400, "stream: Input should be a valid boolean")
    return model


def _check_message(index: int, message: Any) -> None:
    where = f"messages.{index}"
    if not isinstance(message, dict):
        raise Rejection(400, f"{where}: {_NOT_AN_OBJECT}")
    for key in message:
        if key not in ("role", "content"):
            raise Rejection(400, f"{where}.{key}: Extra inputs are not permitted")
    if "role" not in message:
        raise Rejection(400, f"{where}.role: Field required")
    if message["role"] not in ("user", "assistant"):
        raise Rejection(400, f"{where}.role: Input should be 'user' or 'assistant'")
    if "content" not in message:
        raise Rejection(400, f"{where}.content: Field required")
    content = message["content"]
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise Rejection(400, f"{where}.content: Input should be a valid string or list")
    for block_index, block in enumerate(content):
        block_where = f"{where}.content.{block_index}"
        if not isinstance(block, dict):
            raise Rejection(400, f"{block_where}: {_NOT_AN_OBJECT}")
        if "type" not in block:
            raise Rejection(400, f"{block_where}.type: Field required")
        if not isinstance(block["type"], str):
            raise Rejection(400, f"{block_where}.type: Input should be a valid string")
        if block["type"] == "text":
            if "text" not in block:
                raise Rejection(400, f"{block_where}.text: Field required")
            if not isinstance(block["text"], str):
                raise Rejection(400, f"{block_where}.text: Input should be a valid string")
        for block_type, key in (("tool_use", "id"), ("tool_result", "tool_use_id")):
            if block["type"] == block_type:
                if key not in block:
                    raise Rejection(400, f"{block_where}.{key}: Field required")
                if not isinstance(block[key], str):
                    raise Rejection(400, f"{block_where}.{key}: Input should be a valid string")


def _check_model_params(
    model: str, body: dict[str, Any], applies: Callable[[str, str], bool]
) -> None:
    """The request-parameter rules, in the documented order."""
    if applies("sampling_deprecated", model):
        for name in SAMPLING_PARAMETERS:
            if body.get(name) is not None:
                raise Rejection(400, deprecated_parameter_message(name))
    if (
        body.get("temperature") is not None
        and body.get("top_p") is not None
        and applies("temperature_top_p", model)
    ):
        raise Rejection(400, TEMPERATURE_TOP_P_MESSAGE)
    thinking = body.get("thinking")
    if isinstance(thinking, dict):
        thinking_type = thinking.get("type")
        if thinking_type not in _THINKING_TYPES:
            expected = ", ".join(f"'{name}'" for name in _THINKING_TYPES)
            raise Rejection(
                400,
                f"thinking: Input tag {thinking_type!r} found using 'type' does not match "
                f"any of the expected tags: {expected}",
            )
        if thinking_type == "enabled" and applies("thinking_enabled", model):
            raise Rejection(400, THINKING_ENABLED_MESSAGE)
        if thinking_type == "adaptive" and "budget_tokens" in thinking:
            raise Rejection(400, "thinking.adaptive.budget_tokens: Extra inputs are not permitted")
    output_config = body.get("output_config")
    effort = output_config.get("effort") if isinstance(output_config, dict) else None
    if effort is not None and effort not in _EFFORTS:
        expected = ", ".join(f"'{name}'" for name in _EFFORTS[:-1])
        raise Rejection(
            400, f"output_config.effort: Input should be {expected} or '{_EFFORTS[-1]}'"
        )
    tool_choice = body.get("tool_choice")
    if (
        isinstance(tool_choice, dict)
        and tool_choice.get("type") in ("any", "tool")
        and applies("forced_tool_choice", model)
    ):
        raise Rejection(400, FORCED_TOOL_CHOICE_MESSAGE)


def _block_ids(content: str | list[dict[str, Any]], block_type: str, key: str) -> list[str]:
    if isinstance(content, str):
        return []
    return [block[key] for block in content if block["type"] == block_type]


def _check_unique_tool_use_ids(messages: list[dict[str, Any]]) -> None:
    """No two ``tool_use`` blocks of a request share an id (the API's rule for every model)."""
    seen: set[str] = set()
    for index, message in enumerate(messages):
        content = message["content"]
        if isinstance(content, str):
            continue
        for position, block in enumerate(content):
            if block["type"] == "tool_use":
                if block["id"] in seen:
                    raise Rejection(400, duplicate_tool_use_message(index, position))
                seen.add(block["id"])


def _check_tool_pairs(messages: list[dict[str, Any]]) -> None:
    """Rule ``orphaned_tool_use``: every ``tool_use`` is answered in the very next message.

    A ``tool_use`` in the final message is left to the prefill rules (there is no next message
    yet); a ``tool_result`` must answer a ``tool_use`` of the assistant message just before it.
    """
    for index, message in enumerate(messages):
        content = message["content"]
        if message["role"] == "user":
            results = _block_ids(content, "tool_result", "tool_use_id")
            if not results:
                continue
            previous = messages[index - 1] if index > 0 else None
            expected = (
                _block_ids(previous["content"], "tool_use", "id")
                if previous is not None and previous["role"] == "assistant"
                else []
            )
            unexpected = [result for result in results if result not in expected]
            if unexpected:
                first = next(
                    position
                    for position, block in enumerate(content)
                    if block["type"] == "tool_result" and block["tool_use_id"] in unexpected
                )
                raise Rejection(400, unexpected_tool_result_message(index, first, unexpected))
            continue
        tool_use_ids = _block_ids(content, "tool_use", "id")
        if not tool_use_ids or index == len(messages) - 1:
            continue
        following = messages[index + 1]
        answered = (
            _block_ids(following["content"], "tool_result", "tool_use_id")
            if following["role"] == "user"
            else []
        )
        missing = [tool_use_id for tool_use_id in tool_use_ids if tool_use_id not in answered]
        if missing:
            raise Rejection(400, orphaned_tool_use_message(index, missing))


def _is_blank(text: str) -> bool:
    return not text.strip()


def _has_blank_text(content: str | list[dict[str, Any]]) -> bool:
    if isinstance(content, str):
        return _is_blank(content)
    return any(block["type"] == "text" and _is_blank(block["text"]) for block in content)


def _final_text(content: str | list[dict[str, Any]]) -> str | None:
    if isinstance(content, str):
        return content
    for block in reversed(content):
        if block["type"] == "text":
            text: str = block["text"]
            return text
    return None
