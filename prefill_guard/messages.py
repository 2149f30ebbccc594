"""The conversation as data: raw messages with hidden metadata, and the views derived from them.

A :class:`MessageList` keeps the *raw* conversation: every message in the Anthropic
``MessageParam`` shape (``role`` and ``content``) plus an optional ``metadata`` dict for the
library's own bookkeeping, such as the tag that marks a hidden system reminder. Everything
that goes over the wire passes through :meth:`MessageList.to_api`; everything a person sees
passes through :meth:`MessageList.to_ui`; stores keep the raw form. No other code strips or
filters messages on its own. Also here: the hidden reminders, the bookkeeping of ``tool_use``
and ``tool_result`` blocks that repairs need, and the check that new input can be sent.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterable, Iterator, Mapping, MutableSequence
from typing import Any, Literal, overload

from anthropic import BaseModel
from anthropic.types import Message, MessageParam

from .contract import RawMessage

__all__ = [
    "INTERRUPTED_TOOL_RESULT",
    "MAX_NESTING",
    "SYSTEM_REMINDER_KEY",
    "MessageList",
    "Snapshot",
    "append_system_reminder",
    "check_input",
    "interrupted_tool_results",
    "is_system_reminder",
    "system_reminder",
    "tool_result_ids",
    "tool_use_ids",
    "with_tool_results",
]

Role = Literal["user", "assistant"]

SYSTEM_REMINDER_KEY = "systemReminder"
"""The metadata key that marks a hidden system reminder (judged by metadata, never by text)."""

INTERRUPTED_TOOL_RESULT = "interrupted"
"""The content of the ``is_error`` ``tool_result`` blocks made for unanswered ``tool_use``."""

MAX_NESTING = 200
"""How deeply a message's values may nest (dicts and lists). Copying a value (``copy.deepcopy``)
and encoding it as JSON recurse, two frames or so per level, and fail with a bare
``RecursionError`` somewhere below Python's recursion limit (1,000 frames, counted from
wherever the caller is); deeper input is refused by name when it is added."""

_ROLES: frozenset[str] = frozenset(("user", "assistant"))


# -- hidden reminders ----------------------------------------------------------------------------


def system_reminder(text: str, reminder_type: str) -> RawMessage:
    """Build a hidden user message ``<system-reminder>{text}</system-reminder>`` tagged by type.

    The tag lives in ``metadata`` only, so the API never sees it and UIs can hide the message.
    """
    return {
        "role": "user",
        "content": f"<system-reminder>{text}</system-reminder>",
        "metadata": {SYSTEM_REMINDER_KEY: {"type": reminder_type}},
    }


def is_system_reminder(message: Mapping[str, Any]) -> bool:
    """Whether ``message`` is a hidden system reminder, judged by its metadata alone."""
    metadata = message.get("metadata")
    return isinstance(metadata, Mapping) and SYSTEM_REMINDER_KEY in metadata


# -- validation ----------------------------------------------------------------------------------


def _where(index: int, block: int | None = None) -> str:
    """Where a problem is, for error messages."""
    where = f"messages[{index}]"
    return where if block is None else f"{where}.content[{block}]"


_SCALARS = (str, int, float, type(None))


def _children(value: Any) -> Iterable[Any] | None:
    """The values inside a mapping (its keys too), list or tuple; ``None`` for anything else."""
    if isinstance(value, (list, tuple)):
        return value
    if isinstance(value, dict) or (not isinstance(value, _SCALARS) and isinstance(value, Mapping)):
        return [*value.keys(), *value.values()]
    return None


def _check_nesting(
    value: Any, where: str, depth: int = 1, ancestors: set[int] | None = None
) -> None:
    """Refuse a value that holds a reference cycle or nests deeper than :data:`MAX_NESTING`.

    Neither can be sent (JSON encoding recurses, and a cycle never ends), and copying either
    would raise a bare ``RecursionError``. The walk stops at the bound, so it recurses at most
    :data:`MAX_NESTING` levels; values shared between branches are fine.
    """
    children = _children(value)
    if children is None:
        return
    if ancestors is None:
        ancestors = set()
    if id(value) in ancestors:
        raise ValueError(f"{where}: holds a reference cycle, which no request can carry")
    if depth > MAX_NESTING:
        raise ValueError(f"{where}: nested more than {MAX_NESTING} levels deep")
    ancestors.add(id(value))
    for child in children:
        if not isinstance(child, _SCALARS):
            _check_nesting(child, where, depth + 1, ancestors)
    ancestors.discard(id(value))


def _block_to_dict(block: Any, where: str) -> dict[str, Any]:
    """A private copy of one content block as a dict (an SDK block model is dumped)."""
    if not isinstance(block, dict):
        if isinstance(block, BaseModel):
            return block.model_dump(mode="json", exclude_none=True)
        if not isinstance(block, Mapping):
            raise TypeError(f"{where}: expected a content block dict, got {type(block).__name__}")
    if not isinstance(block.get("type"), str):
        raise ValueError(f"{where}: content block needs a string 'type'")
    _check_nesting(block, where)
    return copy.deepcopy(dict(block))


def _validate(message: Any, index: int) -> RawMessage:
    """Return a private, validated copy of one message, or raise naming the index and problem.

    An anthropic ``Message`` (a reply) becomes an assistant turn of block dicts. The role and a
    str content are immutable and taken as they are; everything else is copied deeply.
    """
    if not isinstance(message, dict):
        if isinstance(message, BaseModel) and getattr(message, "type", None) == "message":
            reply: Any = message
            message = {"role": reply.role, "content": list(reply.content or [])}
        elif not isinstance(message, Mapping):
            raise TypeError(
                f"{_where(index)}: expected a dict with 'role' and 'content', "
                f"got {type(message).__name__}"
            )
    if "role" not in message:
        raise ValueError(f"{_where(index)}: missing 'role'")
    role = message["role"]
    if not isinstance(role, str) or role not in _ROLES:
        hint = " (pass a system prompt as instructions=)" if role == "system" else ""
        raise ValueError(
            f"{_where(index)}: unknown role {role!r}; expected 'user' or 'assistant'{hint}"
        )
    if "content" not in message:
        raise ValueError(f"{_where(index)}: missing 'content'")
    content = message["content"]
    if isinstance(content, (list, tuple)):
        content = [_block_to_dict(block, _where(index, j)) for j, block in enumerate(content)]
    elif not isinstance(content, str):
        raise TypeError(
            f"{_where(index)}: 'content' must be a str or a list of blocks, "
            f"got {type(content).__name__}"
        )
    raw: RawMessage = {}
    for key, value in message.items():
        if key in ("role", "content"):
            raw[key] = role if key == "role" else content
            continue
        _check_nesting(value, f"{_where(index)}.{key}")
        raw[key] = copy.deepcopy(value)
    if "metadata" in raw and not isinstance(raw["metadata"], dict):
        raise TypeError(
            f"{_where(index)}: 'metadata' must be a dict, got {type(raw['metadata']).__name__}"
        )
    return raw


def _unsendable(value: Any) -> str | None:
    """What in ``value`` JSON over UTF-8 cannot carry: a lone surrogate, NaN or infinity."""
    pending = [value]
    while pending:
        node = pending.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return f"text {node[:40]!r} holds a lone surrogate, which UTF-8 cannot encode"
        elif isinstance(node, float) and not math.isfinite(node):
            return f"the number {node!r} is not valid JSON"
        else:
            pending.extend(_children(node) or ())
    return None


def _blank(content: Any) -> tuple[int | None, str] | None:
    """Where ``content`` is empty or only whitespace, which the API refuses once a message
    follows it: ``(block index or None, problem)``, or ``None``."""
    if isinstance(content, str):
        return None if content.strip() else (None, "the content is empty or only whitespace")
    if not content:
        return None, "the content is an empty list of blocks"
    for position, block in enumerate(content):
        text = block.get("text")
        if block.get("type") == "text" and isinstance(text, str) and not text.strip():
            return position, "the text is empty or only whitespace"
    return None


def check_input(messages: Iterable[RawMessage], *, saved: bool = False) -> None:
    """Refuse new input that no request can carry, with a ``ValueError`` naming ``messages[i]``.

    Always refused: text that UTF-8 cannot encode (a lone surrogate) and numbers JSON has no
    form for (NaN, infinity); the structure itself was checked when the messages were made.
    With ``saved`` (input kept in a thread, where a reply will follow it), also refused: empty
    content and text that is only whitespace, which the API rejects in every message but the
    last; stored, they would make every later turn of the thread fail.
    """
    for index, message in enumerate(messages):
        problem = _unsendable(message.get("content"))
        if problem is not None:
            raise ValueError(f"{_where(index)}: {problem}")
        blank = _blank(message.get("content")) if saved else None
        if blank is not None:
            position, text = blank
            raise ValueError(
                f"{_where(index, position)}: {text}; the API refuses it once another "
                "message follows, so it is not saved"
            )


# -- the conversation ----------------------------------------------------------------------------


class Snapshot:
    """What :meth:`MessageList.snapshot` remembers: the message objects and their contents."""

    __slots__ = ("contents", "objects")

    def __init__(self, objects: list[RawMessage], contents: list[RawMessage]) -> None:
        self.objects = objects
        self.contents = contents


class MessageList(MutableSequence[RawMessage]):
    """The conversation, in order: raw messages (hidden ones included) with their metadata.

    Iteration, ``len`` and indexing give the raw messages. Messages added are validated and
    copied, so the caller's own dicts and lists are never changed by the library.
    """

    __slots__ = ("_messages",)

    def __init__(self, messages: Iterable[Any] | None = None) -> None:
        if messages is None:
            messages = ()
        elif not isinstance(messages, (list, tuple)) and (
            isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Iterable)
        ):
            raise TypeError(
                f"messages must be a list of message dicts, got {type(messages).__name__}"
            )
        self._messages: list[RawMessage] = [_validate(m, i) for i, m in enumerate(messages)]

    # -- MutableSequence -------------------------------------------------------------
    @overload
    def __getitem__(self, index: int) -> RawMessage: ...
    @overload
    def __getitem__(self, index: slice) -> MessageList: ...
    def __getitem__(self, index: int | slice) -> RawMessage | MessageList:
        if isinstance(index, slice):
            sliced = MessageList()
            sliced._messages = self._messages[index]
            return sliced
        return self._messages[index]

    @overload
    def __setitem__(self, index: int, value: RawMessage) -> None: ...
    @overload
    def __setitem__(self, index: slice, value: Iterable[RawMessage]) -> None: ...
    def __setitem__(self, index: int | slice, value: Any) -> None:
        if isinstance(index, slice):
            start = index.indices(len(self._messages))[0]
            self._messages[index] = [_validate(m, start + i) for i, m in enumerate(value)]
        else:
            self._messages[index] = _validate(value, index)

    def __delitem__(self, index: int | slice) -> None:
        del self._messages[index]

    def __len__(self) -> int:
        return len(self._messages)

    def __iter__(self) -> Iterator[RawMessage]:
        return iter(self._messages)

    def insert(self, index: int, value: RawMessage) -> None:
        """Insert a validated copy of ``value`` before ``index``."""
        self._messages.insert(index, _validate(value, index))

    def append(self, value: RawMessage | Message) -> None:
        """Append a validated copy of ``value`` (a reply ``Message`` becomes an assistant turn)."""
        self._messages.append(_validate(value, len(self._messages)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MessageList):
            return self._messages == other._messages
        if isinstance(other, list):
            return self._messages == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"MessageList({self._messages!r})"

    # -- building --------------------------------------------------------------------
    def add(
        self, role: Role, content: str | list[Any], *, metadata: dict[str, Any] | None = None
    ) -> RawMessage:
        """Append one message and return the stored raw message."""
        message: RawMessage = {"role": role, "content": content}
        if metadata is not None:
            message["metadata"] = metadata
        self.append(message)
        return self._messages[-1]

    def copy(self) -> MessageList:
        """A deep copy: changing it never changes this list."""
        twin = MessageList()
        twin._messages = copy.deepcopy(self._messages)
        return twin

    def snapshot(self) -> Snapshot:
        """Remember the whole conversation, so that :meth:`restore` can undo any change."""
        return Snapshot(list(self._messages), copy.deepcopy(self._messages))

    def restore(self, snapshot: Snapshot) -> None:
        """Undo every change since ``snapshot``: additions, removals, replacements and edits in
        place. A message that was not changed is left alone; the message dicts that existed at
        the snapshot are kept (same objects), so references held elsewhere stay valid; and the
        snapshot stays good for another restore."""
        for original, saved in zip(snapshot.objects, snapshot.contents, strict=True):
            if original != saved:
                original.clear()
                original.update(copy.deepcopy(saved))
        self._messages = list(snapshot.objects)

    # -- views -----------------------------------------------------------------------
    def to_api(self) -> list[MessageParam]:
        """The messages as the API accepts them: only ``role`` and ``content``, reminders kept.

        The API rejects unknown keys such as ``metadata`` with a 400, so every other key is
        dropped here, and only here.
        """
        return [{"role": m["role"], "content": m["content"]} for m in self._messages]

    def to_ui(self) -> list[RawMessage]:
        """What a chat UI shows: the raw messages minus hidden system reminders."""
        return [m for m in self._messages if not is_system_reminder(m)]

    @property
    def last(self) -> RawMessage | None:
        """The final message, or ``None`` for an empty conversation."""
        return self._messages[-1] if self._messages else None

    # -- persistence -----------------------------------------------------------------
    def to_json(self) -> str:
        """Serialise the raw messages, metadata included, to a JSON string."""
        for index, message in enumerate(self._messages):
            try:
                json.dumps(message)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"messages[{index}] is not JSON-serialisable: {exc}") from None
        return json.dumps(self._messages, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> MessageList:
        """Rebuild a list written by :meth:`to_json`; metadata comes back exactly."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON message list: {exc}") from None
        if not isinstance(data, list):
            raise TypeError(f"expected a JSON array of messages, got {type(data).__name__}")
        return cls(data)


# -- tool_use / tool_result bookkeeping ------------------------------------------------------


def _blocks(message: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    content = None if message is None else message.get("content")
    if not isinstance(content, list):
        return []
    return [block for block in content if isinstance(block, Mapping)]


def tool_use_ids(message: Mapping[str, Any] | None) -> list[str]:
    """The ids of an assistant message's ``tool_use`` blocks, in order."""
    if message is None or message.get("role") != "assistant":
        return []
    return [
        block["id"]
        for block in _blocks(message)
        if block.get("type") == "tool_use" and isinstance(block.get("id"), str)
    ]


def tool_result_ids(message: Mapping[str, Any] | None) -> set[str]:
    """The ``tool_use_id``s a user message's ``tool_result`` blocks answer."""
    if message is None or message.get("role") != "user":
        return set()
    return {
        block["tool_use_id"]
        for block in _blocks(message)
        if block.get("type") == "tool_result" and isinstance(block.get("tool_use_id"), str)
    }


def interrupted_tool_results(
    ids: Iterable[str], text: str = INTERRUPTED_TOOL_RESULT
) -> list[dict[str, Any]]:
    """``tool_result`` blocks marked ``is_error`` that answer the ``tool_use`` ``ids`` with
    ``text``."""
    return [
        {"type": "tool_result", "tool_use_id": tool_use_id, "content": text, "is_error": True}
        for tool_use_id in ids
    ]


def with_tool_results(content: Any, results: list[dict[str, Any]]) -> list[Any]:
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

    Tagged in ``metadata`` with ``reminder_type`` as :func:`system_reminder` makes it. When the
    conversation ends with an assistant turn holding ``tool_use`` blocks, a plain text message
    after it would be rejected (``tool_use ids were found without tool_result blocks
    immediately after``), so the reminder then carries an ``is_error`` ``tool_result``
    ("interrupted") for each of those calls first, followed by the reminder text block: still
    one hidden message.
    """
    reminder = system_reminder(text, reminder_type)
    pending = tool_use_ids(messages.last)
    if pending:
        text_block = {"type": "text", "text": reminder["content"]}
        reminder["content"] = [*interrupted_tool_results(pending), text_block]
    messages.append(reminder)
    return messages[-1]
