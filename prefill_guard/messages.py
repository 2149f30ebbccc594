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
import math
from collections.abc import Iterable, Iterator, Mapping, MutableSequence
from typing import Any, Literal, TypeVar, cast, overload

from anthropic import BaseModel
from anthropic.types import Message, MessageParam, TextBlock

__all__ = [
    "MAX_NESTING",
    "SYSTEM_REMINDER_KEY",
    "MessageList",
    "RawMessage",
    "Snapshot",
    "check_input",
    "is_system_reminder",
    "system_reminder",
]

T = TypeVar("T")
Role = Literal["user", "assistant"]
RawMessage = dict[str, Any]
"""One raw message: ``role``, ``content`` (str or block dicts) and optional ``metadata``."""

SYSTEM_REMINDER_KEY = "systemReminder"
"""The metadata key that marks a hidden system reminder (judged by metadata, never by text)."""

_ROLES: frozenset[str] = frozenset(("user", "assistant"))
_API_KEYS = ("role", "content")

MAX_NESTING = 500
"""How deeply a message's values may nest (dicts and lists). Python's JSON encoding, and so the
SDK, fails somewhere below the recursion limit; deeper input is refused when it is added."""


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


_ATOMIC: frozenset[type] = frozenset(
    (str, int, float, bool, type(None), bytes, complex, range, type(Ellipsis))
)
"""Types that ``copy.deepcopy`` returns as they are (immutable atoms)."""
_MISSING = object()


def deep_copy(value: T) -> T:
    """``copy.deepcopy(value)``, three to four times faster for JSON-shaped data.

    Plain ``dict`` and ``list`` objects are copied here and immutable atoms are returned as they
    are, exactly as ``copy.deepcopy`` does it (shared and cyclic references included, through
    the same memo); every other object is handed to ``copy.deepcopy`` with that memo. Messages
    and request parameters are copied on every request, so this is on the hot path.
    """
    cls = type(value)
    if cls in _ATOMIC:
        return value
    if cls is dict:  # request parameters: a flat dict needs no memo
        flat: dict[Any, Any] = {}
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str or type(item) not in _ATOMIC:
                return cast(T, _copy(value, {}))
            flat[key] = item
        return cast(T, flat)
    return cast(T, _copy(value, {}))


def _copy(value: Any, memo: dict[int, Any]) -> Any:
    cls = type(value)
    if cls in _ATOMIC:
        return value
    found = memo.get(id(value), _MISSING)
    if found is not _MISSING:
        return found
    if cls is dict:
        copied: Any = {}
        memo[id(value)] = copied
        for key, item in value.items():
            copied[key if type(key) is str else _copy(key, memo)] = (
                item if type(item) in _ATOMIC else _copy(item, memo)
            )
        return copied
    if cls is list:
        copied = []
        memo[id(value)] = copied
        for item in value:
            copied.append(item if type(item) in _ATOMIC else _copy(item, memo))
        return copied
    return copy.deepcopy(value, memo)


def _where(index: int, block: int | None = None) -> str:
    """Where a problem is, for error messages (formatted only when there is one)."""
    where = f"messages[{index}]"
    return where if block is None else f"{where}.content[{block}]"


def _containers(value: Any) -> Iterable[Any] | None:
    """The values inside a dict, list or tuple; ``None`` for anything else."""
    if isinstance(value, Mapping):
        return list(value.keys()) + list(value.values())
    if isinstance(value, (list, tuple)):
        return value
    return None


def _check_nesting(value: Any, where: str) -> None:
    """Refuse a value that holds a reference cycle or nests deeper than :data:`MAX_NESTING`.

    Neither can be sent (JSON encoding recurses, and a cycle never ends), and copying either
    would raise a bare ``RecursionError``. Walked without recursion; shared values are fine.
    """
    ancestors: set[int] = set()
    pending: list[tuple[Any, int] | int] = [(value, 1)]
    while pending:
        item = pending.pop()
        if isinstance(item, int):  # every value below this container has been walked
            ancestors.discard(item)
            continue
        node, depth = item
        children = _containers(node)
        if children is None:
            continue
        if id(node) in ancestors:
            raise ValueError(f"{where}: holds a reference cycle, which no request can carry")
        if depth > MAX_NESTING:
            raise ValueError(f"{where}: nested more than {MAX_NESTING} levels deep")
        ancestors.add(id(node))
        pending.append(id(node))
        pending.extend((child, depth + 1) for child in children)


def _block_to_dict(block: Any, index: int, position: int) -> dict[str, Any]:
    # A plain dict, the common case, skips the abstract-class checks.
    fresh = type(block) is not dict and isinstance(block, BaseModel)
    if fresh:  # model_dump(mode="json") builds new objects: nothing is shared with the reply's
        block = block.model_dump(mode="json", exclude_none=True)
    if type(block) is not dict and not isinstance(block, Mapping):
        raise TypeError(
            f"{_where(index, position)}: expected a content block dict, got {type(block).__name__}"
        )
    if not isinstance(block.get("type"), str):
        raise ValueError(f"{_where(index, position)}: content block needs a string 'type'")
    if not fresh:
        _check_nesting(block, _where(index, position))
    if fresh and type(block) is dict:
        return block
    return deep_copy(dict(block))


def _reply_to_raw(message: Message, index: int) -> RawMessage:
    """A reply ``Message`` as an assistant turn of block dicts (one per request: kept lean)."""
    role = message.role
    if type(role) is not str or role not in _ROLES:  # a constructed reply: say what is wrong
        return _validate({"role": role, "content": list(message.content)}, index)
    content: list[dict[str, Any]] = []
    for position, block in enumerate(message.content):
        if (
            type(block) is TextBlock
            and block.citations is None
            and not block.__pydantic_extra__
            and type(block.text) is str
        ):  # a plain text block, inline: exactly its model_dump(mode="json", exclude_none=True)
            content.append({"text": block.text, "type": "text"})
        else:
            content.append(_block_to_dict(block, index, position))
    return {"role": role, "content": content}


def _validate(message: Any, index: int) -> RawMessage:
    """Return a private, validated copy of one message, or raise naming the index and problem."""
    if type(message) is not dict:  # a plain dict, the common case, needs neither check
        if (type(message) is Message or isinstance(message, BaseModel)) and getattr(
            message, "type", None
        ) == "message":
            # An anthropic ``Message`` response: keep its content as an assistant turn.
            return _reply_to_raw(message, index)  # type: ignore[arg-type]
        if not isinstance(message, Mapping):
            raise TypeError(
                f"{_where(index)}: expected a dict with 'role' and 'content', "
                f"got {type(message).__name__}"
            )
    if "role" not in message:
        raise ValueError(f"{_where(index)}: missing 'role'")
    role = message["role"]
    if not isinstance(role, str) or role not in _ROLES:  # an unhashable role, too
        hint = " (pass a system prompt as instructions=)" if role == "system" else ""
        raise ValueError(
            f"{_where(index)}: unknown role {role!r}; expected 'user' or 'assistant'{hint}"
        )
    if "content" not in message:
        raise ValueError(f"{_where(index)}: missing 'content'")
    content = message["content"]
    if isinstance(content, str):
        pass
    elif isinstance(content, (list, tuple)):
        content = [_block_to_dict(b, index, j) for j, b in enumerate(content)]
    else:
        raise TypeError(
            f"{_where(index)}: 'content' must be a str or a list of blocks, "
            f"got {type(content).__name__}"
        )
    for key, value in message.items():
        if key != "content":
            _check_nesting(value, f"{_where(index)}.{key}")
    raw: RawMessage = {
        key: content if key == "content" else deep_copy(value) for key, value in message.items()
    }
    if "metadata" in raw and not isinstance(raw["metadata"], dict):
        raise TypeError(
            f"{_where(index)}: 'metadata' must be a dict, got {type(raw['metadata']).__name__}"
        )
    return raw


class Snapshot:
    """What :meth:`MessageList.snapshot` remembers: the message objects and their contents."""

    __slots__ = ("contents", "objects")

    def __init__(self, objects: list[RawMessage], contents: list[RawMessage]) -> None:
        self.objects = objects
        self.contents = contents


def _api_shaped(messages: list[Any]) -> bool:
    """Whether ``messages`` are valid and exactly what the API takes, as given: then
    ``MessageList(messages)`` would hold equal copies, and a request over them goes out as is.

    Each message a dict of a ``role`` and a ``content`` only, the content a string or a list
    of block dicts with a string ``type``. Anything else needs the copying path, which
    converts what it can and says what is wrong with the rest.
    """
    for message in messages:
        if type(message) is not dict or len(message) != 2:
            return False
        role = message.get("role")
        if type(role) is not str or role not in _ROLES:
            return False
        content = message.get("content")
        if type(content) is str:
            continue
        if type(content) is not list:
            return False
        for block in content:
            if type(block) is not dict or type(block.get("type")) is not str:
                return False
    return True


def _sendable_problem(value: Any) -> str | None:
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
            pending.extend(_containers(node) or ())
    return None


def _blank_text_problem(content: Any) -> tuple[int | None, str] | None:
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
        problem = _sendable_problem(message.get("content"))
        if problem is not None:
            raise ValueError(f"{_where(index)}: {problem}")
        if saved:
            blank = _blank_text_problem(message.get("content"))
            if blank is not None:
                position, text = blank
                raise ValueError(
                    f"{_where(index, position)}: {text}; the API refuses it once another "
                    "message follows, so it is not saved"
                )


class MessageList(MutableSequence[RawMessage]):
    """The conversation, in order: raw messages (hidden ones included) with their metadata.

    Iteration, ``len`` and indexing give the raw messages. Messages added are validated and
    copied, so the caller's own dicts and lists are never changed by the library.
    """

    __slots__ = ("_messages",)

    def __init__(self, messages: Iterable[Any] | None = None) -> None:
        if messages is None:
            self._messages: list[RawMessage] = []
            return
        if type(messages) is not list and (
            isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Iterable)
        ):
            raise TypeError(
                f"messages must be a list of message dicts, got {type(messages).__name__}"
            )
        self._messages = [
            dict(m)  # the commonest message, inline: exactly what _validate would return
            if type(m) is dict
            and len(m) == 2
            and type(m.get("content")) is str
            and type(role := m.get("role")) is str
            and role in _ROLES
            else _validate(m, i)
            for i, m in enumerate(messages)
        ]

    @classmethod
    def _borrow(cls, messages: list[Any]) -> MessageList:
        """A list over the very dicts of ``messages``, which :func:`_api_shaped` accepted.

        Nothing is copied, so the result must not be changed in place; the middleware uses it
        for a request body that it copies only once something may change it (see
        :meth:`Pipeline.begin`).
        """
        borrowed = cls.__new__(cls)  # __init__ would validate and copy
        borrowed._messages = list(messages)
        return borrowed

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

    def append(self, value: RawMessage) -> None:
        """Append a validated copy of ``value``."""
        self._messages.append(_validate(value, len(self._messages)))

    def _append_reply(self, reply: Message) -> None:
        """Append a reply ``Message`` as an assistant turn: :meth:`append` without the checks
        for every other kind of input, since each generation stores one."""
        self._messages.append(_reply_to_raw(reply, len(self._messages)))

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
        twin._messages = deep_copy(self._messages)
        return twin

    def snapshot(self) -> Snapshot:
        """Remember the whole conversation, so that :meth:`restore` can undo any change."""
        return Snapshot(list(self._messages), deep_copy(self._messages))

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
