"""The tools an Agent offers and runs: the SDK's function tools, and definitions it only offers.

A tool is a function decorated with the SDK's ``anthropic.beta_tool`` / ``beta_async_tool`` (the
SDK makes its schema from the signature and docstring, and validates each call's input), a plain
function or coroutine function (decorated here, the same way), or a tool definition dict: a
server tool the API runs itself, or a client tool with no function here, whose call ends the
run and goes to the caller. A tool that raises gives an ``is_error`` result and the run goes
on (``anthropic.lib.tools.ToolError`` chooses the result's content); :class:`~prefill_guard.Abort`,
``KeyboardInterrupt`` and cancellation are not caught.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import anthropic
from anthropic.lib.tools import BetaAsyncFunctionTool, BetaFunctionTool, ToolError
from anthropic.types import Message, ToolUseBlock

from .contract import Abort

__all__ = ["ToolCall", "Toolbox"]

logger = logging.getLogger("prefill_guard")

FunctionTool = BetaFunctionTool[Any] | BetaAsyncFunctionTool[Any]


@dataclass(frozen=True)
class ToolCall:
    """One ``tool_use`` block of a reply, and the ``tool_result`` block that answered it."""

    id: str
    name: str
    input: Any
    result: dict[str, Any]

    @property
    def is_error(self) -> bool:
        """Whether the tool failed (raised, refused its input, or is not known)."""
        return bool(self.result.get("is_error"))


def _as_function_tool(tool: object, where: str) -> FunctionTool | None:
    """The tool as one of the SDK's function tools, or ``None`` for a definition dict."""
    if isinstance(tool, (BetaFunctionTool, BetaAsyncFunctionTool)):
        return tool
    if isinstance(tool, Mapping):
        return None
    if callable(tool) and not isinstance(tool, type):
        try:
            if inspect.iscoroutinefunction(tool):
                return anthropic.beta_async_tool(tool)
            return anthropic.beta_tool(tool)
        except Exception as error:
            raise TypeError(
                f"{where}: the SDK cannot make a tool of {tool!r} ({type(error).__name__}: "
                f"{error}); pass a plain function, or one decorated with anthropic.beta_tool"
            ) from error
    raise TypeError(
        f"{where}: expected a function, a tool made with anthropic.beta_tool / "
        f"beta_async_tool, or a tool definition dict, got {type(tool).__name__}"
    )


_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,128}")


def _check_custom(definition: Mapping[str, Any], name: str, where: str) -> None:
    """Refuse a client tool the API would refuse at the first request: a name outside
    ``^[a-zA-Z0-9_-]{1,128}$`` (a lambda's ``<lambda>``), or no ``input_schema`` object."""
    if not _TOOL_NAME.fullmatch(name):
        raise ValueError(
            f"{where}: tool name {name!r} is not one the API takes (letters, digits, '_' and "
            "'-', at most 128); give the function another name or pass beta_tool(name=...)"
        )
    if not isinstance(definition.get("input_schema"), Mapping):
        raise ValueError(f"{where}: tool {name!r} needs an 'input_schema' (a JSON Schema object)")


def _well_formed(text: str) -> str:
    """``text`` with any lone surrogate (which no request can carry) made U+FFFD."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _content(value: object) -> Any:
    """A tool's return value as ``tool_result`` content: text, or content blocks."""
    if isinstance(value, str):
        return _well_formed(value)
    if isinstance(value, (list, tuple)) and all(
        isinstance(block, Mapping) and isinstance(block.get("type"), str) for block in value
    ):
        return [
            {**block, "text": _well_formed(block["text"])}
            if block.get("type") == "text" and isinstance(block.get("text"), str)
            else dict(block)
            for block in value
        ]
    try:
        return _well_formed(json.dumps(value))
    except (TypeError, ValueError):
        return _well_formed(str(value))


def _result(tool_use_id: str, content: object, *, is_error: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_use_id}
    if content is not None:
        result["content"] = _content(content)
    if is_error:
        result["is_error"] = True
    return result


def _failure(tool_use_id: str, name: str, error: Exception) -> dict[str, Any]:
    """The ``is_error`` result of a tool that raised: a ``ToolError``'s content, else what was
    wrong (the input validation's details too, which the model can act on)."""
    if isinstance(error, ToolError):
        return _result(tool_use_id, error.content, is_error=True)
    logger.warning("tool %r raised %s; answered with an error result", name, type(error).__name__)
    text = f"{type(error).__name__}: {error}"
    if error.__cause__ is not None:
        text += f" ({error.__cause__})"
    return _result(tool_use_id, text, is_error=True)


class Toolbox:
    """An Agent's tools, checked once: the definitions a request offers, the functions to run.

    Immutable after construction and safe to share between runs.
    """

    def __init__(self, tools: Iterable[object] = ()) -> None:
        if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Iterable):
            raise TypeError(f"tools must be a list of tools, got {type(tools).__name__}")
        self._functions: dict[str, FunctionTool] = {}
        self._definitions: list[dict[str, Any]] = []
        for index, tool in enumerate(tools):
            where = f"tools[{index}]"
            function = _as_function_tool(tool, where)
            definition = dict(function.to_dict()) if function is not None else dict(tool)  # type: ignore[call-overload]
            name = definition.get("name")
            custom = definition.get("type", "custom") in ("custom", None)
            if name is None and not custom:  # a server toolset (mcp_toolset, ...): no name
                self._definitions.append(definition)
                continue
            if not isinstance(name, str) or not name:
                raise ValueError(f"{where}: a tool needs a non-empty str 'name'")
            if custom:
                _check_custom(definition, name, where)
            if any(d.get("name") == name for d in self._definitions):
                raise ValueError(f"{where}: a second tool named {name!r}")
            if function is not None:
                self._functions[name] = function
            self._definitions.append(definition)

    def __bool__(self) -> bool:
        return bool(self._definitions)

    @property
    def definitions(self) -> list[dict[str, Any]]:
        """The tool definitions for a request's ``tools``, in the order given."""
        return [dict(definition) for definition in self._definitions]

    @property
    def async_names(self) -> tuple[str, ...]:
        """The tools that only an async run can call."""
        return tuple(n for n, t in self._functions.items() if isinstance(t, BetaAsyncFunctionTool))

    def calls(self, message: Message) -> list[ToolUseBlock] | None:
        """The reply's ``tool_use`` blocks if this toolbox answers them; ``None`` when the run
        ends with this reply: it calls no tool, or one that has no function here (a client
        tool), which is the caller's to answer."""
        uses = [block for block in message.content if isinstance(block, ToolUseBlock)]
        if not uses:
            return None
        defined = {d.get("name") for d in self._definitions}
        if any(use.name in defined and use.name not in self._functions for use in uses):
            return None
        return uses

    def call(self, use: ToolUseBlock) -> ToolCall:
        """Run one tool synchronously and answer its ``tool_use`` block."""
        tool = self._functions.get(use.name)
        if tool is None:
            return self._unknown(use)
        if isinstance(tool, BetaAsyncFunctionTool):
            raise TypeError(
                f"tool {use.name!r} is async; a synchronous run cannot await it: use the async "
                "twin (agenerate/astream) or a synchronous tool"
            )
        try:
            result = _result(use.id, tool.call(use.input))
        except Abort:
            raise
        except Exception as error:  # KeyboardInterrupt and cancellation are not Exceptions
            result = _failure(use.id, use.name, error)
        return ToolCall(use.id, use.name, use.input, result)

    async def acall(self, use: ToolUseBlock) -> ToolCall:
        """The async twin of :meth:`call`: an async tool is awaited, a sync one runs in a
        worker thread, so the calls of one reply can run at the same time."""
        tool = self._functions.get(use.name)
        if tool is None:
            return self._unknown(use)
        try:
            if isinstance(tool, BetaAsyncFunctionTool):
                output = await tool.call(use.input)
            else:
                output = await asyncio.to_thread(tool.call, use.input)
            result = _result(use.id, output)
        except Abort:
            raise
        except Exception as error:
            result = _failure(use.id, use.name, error)
        return ToolCall(use.id, use.name, use.input, result)

    def _unknown(self, use: ToolUseBlock) -> ToolCall:
        logger.warning("the model called %r, which is not one of the tools", use.name)
        result = _result(use.id, f"there is no tool named {use.name!r}", is_error=True)
        return ToolCall(use.id, use.name, use.input, result)
