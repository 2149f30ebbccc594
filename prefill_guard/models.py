"""The one model table: which Claude models refuse what, by a version rule, not a list of names.

Each Claude generation refused something the one before accepted: a conversation ending with an
assistant turn (4.6), ``temperature`` beside ``top_p`` (Sonnet and Haiku 4.5, every family from
4.6), any sampling parameter and ``thinking.type.enabled`` (Opus 4.7), a forced ``tool_choice``
(5.5). Each rule is written once here, on the version in the model's id, so a model released
after this code matches by its version: the adaptive guard, the emulator and the tests all read
these functions, and cannot disagree. Names in another shape (``claude-3-5-sonnet``, a
fine-tune's alias) match no rule; the adaptive guard learns those from their first rejection.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

__all__ = [
    "KNOWN_MODELS",
    "continues_server_state",
    "deprecates_sampling",
    "model_version",
    "rejects_enabled_thinking",
    "rejects_forced_tool_choice",
    "rejects_prefill",
    "rejects_temperature_with_top_p",
]

KNOWN_MODELS: Final[tuple[str, ...]] = (
    "claude-mythos-5-1",
    "claude-opus-5-5",
    "claude-sonnet-5-5",
    "claude-opus-4-8",
    "claude-opus-4-7",
    "claude-opus-4-6",
    "claude-sonnet-4-6",
    "claude-opus-4-5",
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
    "claude-opus-4-1",
    "claude-opus-4-20250514",
    "claude-sonnet-4-20250514",
    "claude-3-7-sonnet-20250219",
    "claude-3-5-haiku-20241022",
)
"""The model ids the emulator lists (``GET /v1/models``), newest first; the rules below apply
to any id of the same shape, listed or not."""

# claude-<family>-<major>[-<minor>][-YYYYMMDD]; the minor is one or two digits so that a date
# suffix right after the major ("claude-opus-4-20250514") is not read as a minor version.
_NAME: Final[re.Pattern[str]] = re.compile(
    r"claude-(?P<family>[a-z]+)-(?P<major>\d{1,2})(?:-(?P<minor>\d{1,2}))?(?:-\d{8})?"
)
# Bedrock: [region.]anthropic.<name>-v1[:0]; Vertex: <name>@YYYYMMDD.
_PLATFORM_SPELLING: Final[re.Pattern[str]] = re.compile(
    r"(?:[a-z]+\.)?anthropic\.(?P<bedrock>.+?)(?:-v\d+(?::\d+)?)?|(?P<vertex>.+)@\d{8}"
)


def model_version(model: str) -> tuple[str, int, int] | None:
    """``(family, major, minor)`` of a ``claude-<family>-<major>[-<minor>]`` id (also dated,
    and in its Bedrock and Vertex spellings), else ``None``."""
    name = model.strip().lower()
    platform = _PLATFORM_SPELLING.fullmatch(name)
    if platform is not None:
        name = platform["bedrock"] or platform["vertex"]
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    minor = int(match["minor"]) if match["minor"] is not None else 0
    return match["family"], int(match["major"]), minor


def rejects_prefill(model: str) -> bool:
    """Whether ``model`` refuses a conversation that ends with an assistant turn: 4.6 and later,
    every family."""
    version = model_version(model)
    return version is not None and version[1:] >= (4, 6)


def rejects_temperature_with_top_p(model: str) -> bool:
    """Whether ``model`` refuses ``temperature`` beside ``top_p``: Sonnet and Haiku 4.5 and
    later, every family from 4.6."""
    version = model_version(model)
    if version is None:
        return False
    family, major, minor = version
    return (major, minor) >= ((4, 5) if family in ("sonnet", "haiku") else (4, 6))


def deprecates_sampling(model: str) -> bool:
    """Whether ``model`` refuses ``temperature``, ``top_p`` and ``top_k``: Opus 4.7 and later."""
    version = model_version(model)
    return version is not None and version[0] == "opus" and version[1:] >= (4, 7)


def rejects_enabled_thinking(model: str) -> bool:
    """Whether ``model`` refuses ``thinking.type.enabled`` (it wants adaptive thinking): the
    models that deprecate sampling."""
    return deprecates_sampling(model)


def rejects_forced_tool_choice(model: str) -> bool:
    """Whether ``model`` refuses a forced ``tool_choice`` (``any`` or ``tool``): 5.5 and later,
    and the Fable and Mythos families."""
    version = model_version(model)
    if version is None:
        return False
    family, major, minor = version
    return family in ("fable", "mythos") or (major, minor) >= (5, 5)


_SERVER_STATE_FIELDS: Final[tuple[str, ...]] = ("fallback_credit_token", "thread")
"""Request fields with which the API itself authorises a conversation ending with an assistant
turn: the credit token of a refusal fallback (the refused partial goes out as the last turn)
and a server-side thread (a fork, or the resume of a paused or partial reply)."""


def continues_server_state(
    messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any]
) -> bool:
    """Whether a request continues state the API holds, so any model takes a final assistant turn.

    True with a ``fallback_credit_token`` or a ``thread`` (top level, or in ``extra_body`` as the
    Agent sends fields the SDK does not know), or when the last message ends with a
    ``compaction`` block (a compaction request). The prefill rule is not applied to these.
    """
    extra = params.get("extra_body")
    places = (params, extra) if isinstance(extra, Mapping) else (params,)
    if any(place.get(name) is not None for place in places for name in _SERVER_STATE_FIELDS):
        return True
    content = messages[-1].get("content") if messages else None
    return (
        isinstance(content, list)
        and bool(content)
        and isinstance(content[-1], Mapping)
        and content[-1].get("type") == "compaction"
    )
