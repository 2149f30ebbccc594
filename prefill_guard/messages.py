"""The conversation as data: raw messages with hidden metadata, and the views derived from them.

A :class:`MessageList` keeps the *raw* conversation: every message in the Anthropic
``MessageParam`` shape (``role`` and ``content``) plus an optional ``metadata`` dict for the
library's own bookkeeping, such as the tag that marks a hidden system reminder. Everything
that goes over the wire passes through :meth:`MessageList.to_api`; everything a person sees
passes through :meth:`MessageList.to_ui`; stores keep the raw form. No other code strips or
filters messages on its own.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Iterator, Mapping, MutableSequence
from typing import Any, Literal, overload

from anthropic import BaseModel
from anthropic.types import MessageParam

__all__ = [
    "SYSTEM_REMINDER_KEY",
    "MessageList",
    "RawMessage",
    "Snapshot",
    "is_system_reminder",
    "system_reminder",
]

Role = Literal["user", "assistant"]
RawMessage = dict[str, Any]
"""One raw message: ``role``, ``content`` (str or block dicts) and optional ``metadata``."""

SYSTEM_REMINDER_KEY = "systemReminder"
"""The metadata key that marks a hidden system reminder (judged by metadata, never by text)."""

_ROLES: frozenset[str] = frozenset(("user", "assistant"))
_API_KEYS = ("role", "content")


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


def _block_to_dict(block: Any, where: str) -> dict[str, Any]:
    if isinstance(block, BaseModel):
        block = block.model_dump(mode="json", exclude_none=True)
    if not isinstance(block, Mapping):
        raise TypeError(f"{where}: expected a content block dict, got {type(block).__name__}")
    if not isinstance(block.get("type"), str):
        raise ValueError(f"{where}: content block needs a string 'type'")
    return copy.deepcopy(dict(block))


def _validate(message: Any, index: int) -> RawMessage:
    """Return a private, validated copy of one message, or raise naming the index and problem."""
    where = f"messages[{index}]"
    if isinstance(message, BaseModel) and getattr(message, "type", None) == "message":
        # An anthropic ``Message`` response: keep its content as an assistant turn.
        message = {"role": message.role, "content": list(message.content)}  # type: ignore[attr-defined]
    if not isinstance(message, Mapping):
        raise TypeError(
            f"{where}: expected a dict with 'role' and 'content', got {type(message).__name__}"
        )
    if "role" not in message:
        raise ValueError(f"{where}: missing 'role'")
    role = message["role"]
    if role not in _ROLES:
        hint = " (pass a system prompt as instructions=)" if role == "system" else ""
        raise ValueError(f"{where}: unknown role {role!r}; expected 'user' or 'assistant'{hint}")
    if "content" not in message:
        raise ValueError(f"{where}: missing 'content'")
    content = message["content"]
    if isinstance(content, str):
        pass
    elif isinstance(content, (list, tuple)):
        content = [_block_to_dict(b, f"{where}.content[{j}]") for j, b in enumerate(content)]
    else:
        raise TypeError(
            f"{where}: 'content' must be a str or a list of blocks, got {type(content).__name__}"
        )
    raw: RawMessage = {
        key: content if key == "content" else copy.deepcopy(value) for key, value in message.items()
    }
    metadata = raw.get("metadata")
    if "metadata" in raw and not isinstance(metadata, dict):
        raise TypeError(f"{where}: 'metadata' must be a dict, got {type(metadata).__name__}")
    return raw


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
        self._messages: list[RawMessage] = []
        if messages is None:
            return
        if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Iterable):
            raise TypeError(
                f"messages must be a list of message dicts, got {type(messages).__name__}"
            )
        self._messages = [_validate(m, i) for i, m in enumerate(messages)]

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
        """Undo every change since ``snapshot``: additions, removals and edits in place.

        The message dicts that existed at the snapshot are kept (same objects), so references
        held elsewhere stay valid.
        """
        for original, saved in zip(snapshot.objects, snapshot.contents, strict=True):
            original.clear()
            original.update(saved)
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
