"""The API's error texts and the emulator's model rules: which models reject what, in what words.

The texts are the real API's sentences, so processors can be tested against them. Each rule is
a model-specific rejection applied to the models its predicate selects; the defaults are the
model table's (`prefill_guard.models`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Final

from .. import models as model_table

__all__ = [
    "DEFAULT_RULES",
    "EMPTY_CONTENT_MESSAGE",
    "FORCED_TOOL_CHOICE_MESSAGE",
    "MISSING_API_KEY_MESSAGE",
    "PREFILL_MESSAGE",
    "RULE_NAMES",
    "TEMPERATURE_DEPRECATED_MESSAGE",
    "TEMPERATURE_TOP_P_MESSAGE",
    "THINKING_ENABLED_MESSAGE",
    "TRAILING_WHITESPACE_MESSAGE",
    "WHITESPACE_TEXT_MESSAGE",
    "ModelRule",
    "compile_rule",
    "deprecated_parameter_message",
    "duplicate_tool_use_message",
    "model_deprecates_sampling",
    "model_rejects_enabled_thinking",
    "model_rejects_forced_tool_choice",
    "model_rejects_prefill",
    "model_rejects_temperature_with_top_p",
    "names_rule",
    "orphaned_tool_use_message",
    "prompt_too_long_message",
    "unexpected_tool_result_message",
]

PREFILL_MESSAGE: Final[str] = (
    "This model does not support assistant message prefill. "
    "The conversation must end with a user message."
)
"""The exact error message the API gives when a model that rejects prefill gets one."""

TRAILING_WHITESPACE_MESSAGE: Final[str] = (
    "final assistant content cannot end with trailing whitespace"
)
WHITESPACE_TEXT_MESSAGE: Final[str] = (
    "messages: text content blocks must contain non-whitespace text"
)
MISSING_API_KEY_MESSAGE: Final[str] = "x-api-key header is required"
EMPTY_CONTENT_MESSAGE: Final[str] = (
    "all messages must have non-empty content except for the optional final assistant message"
)
TEMPERATURE_TOP_P_MESSAGE: Final[str] = (
    "`temperature` and `top_p` cannot both be specified for this model. Please use only one."
)
"""The API's 400 when a model (Sonnet/Haiku 4.5 and later) gets both sampling parameters."""
THINKING_ENABLED_MESSAGE: Final[str] = (
    '"thinking.type.enabled" is not supported for this model. Use "thinking.type.adaptive" and '
    '"output_config.effort" to control thinking behavior.'
)
"""The API's 400 when a model (Opus 4.7 and later) gets ``thinking={"type": "enabled"}``."""
FORCED_TOOL_CHOICE_MESSAGE: Final[str] = (
    'tool_choice: type "tool" and "any" are not supported for this model.'
)
"""The API's 400 when a model of the 5-5 generation gets a forced ``tool_choice``."""


def deprecated_parameter_message(name: str) -> str:
    """The API's 400 for a sampling parameter a model (Opus 4.7 and later) no longer accepts.

    Only the ``temperature`` wording is confirmed; ``top_p`` and ``top_k`` get the same shape.
    """
    return f"`{name}` is deprecated for this model."


TEMPERATURE_DEPRECATED_MESSAGE: Final[str] = deprecated_parameter_message("temperature")
"""The API's 400 when a model (Opus 4.7 and later) gets ``temperature``."""


def orphaned_tool_use_message(index: int, tool_use_ids: Iterable[str]) -> str:
    """The API's 400 for ``tool_use`` blocks whose results are missing from the next message.

    ``index`` is the position of the assistant message holding the ``tool_use`` blocks.
    """
    return (
        f"messages.{index}: `tool_use` ids were found without `tool_result` blocks immediately "
        f"after: {', '.join(tool_use_ids)}. Each `tool_use` block must have a corresponding "
        "`tool_result` block in the next message."
    )


def duplicate_tool_use_message(index: int, block: int) -> str:
    """The API's 400 for a ``tool_use`` block whose id an earlier block of the request has."""
    return f"messages.{index}.content.{block}: `tool_use` ids must be unique"


def unexpected_tool_result_message(index: int, block: int, tool_use_ids: Iterable[str]) -> str:
    """The API's 400 for ``tool_result`` blocks answering no ``tool_use`` of the message before."""
    return (
        f"messages.{index}.content.{block}: unexpected `tool_use_id` found in `tool_result` "
        f"blocks: {', '.join(tool_use_ids)}. Each `tool_result` block must have a corresponding "
        "`tool_use` block in the previous message."
    )


def prompt_too_long_message(tokens: int, maximum: int) -> str:
    """The API's 400 for a prompt over the model's context window."""
    return f"prompt is too long: {tokens} tokens > {maximum} maximum"


# The emulator's default rules are the model table's, under the names this module has always
# given them.
model_rejects_prefill = model_table.rejects_prefill
model_rejects_temperature_with_top_p = model_table.rejects_temperature_with_top_p
model_deprecates_sampling = model_table.deprecates_sampling
model_rejects_enabled_thinking = model_table.rejects_enabled_thinking
model_rejects_forced_tool_choice = model_table.rejects_forced_tool_choice


def _every_model(model: str) -> bool:
    return True


def _no_model(model: str) -> bool:
    return False


ModelRule = Callable[[str], bool] | Iterable[str] | bool
"""Which models a rule applies to: a predicate on the model name, a collection of names (each
also matching with a ``-YYYYMMDD`` suffix), or a bool for every model / no model."""

DEFAULT_RULES: Final[Mapping[str, Callable[[str], bool]]] = MappingProxyType(
    {
        "prefill": model_rejects_prefill,
        "temperature_top_p": model_rejects_temperature_with_top_p,
        "sampling_deprecated": model_deprecates_sampling,
        "thinking_enabled": model_rejects_enabled_thinking,
        "forced_tool_choice": model_rejects_forced_tool_choice,
        "orphaned_tool_use": _every_model,
        "blank_text": _every_model,
        "trailing_whitespace": _every_model,
    }
)
"""The emulator's rules and the models each applies to by default.

``prefill``: a final assistant message (`PREFILL_MESSAGE`); ``temperature_top_p``: both sampling
parameters (`TEMPERATURE_TOP_P_MESSAGE`); ``sampling_deprecated``: any of ``temperature``,
``top_p``, ``top_k`` (`deprecated_parameter_message`); ``thinking_enabled``:
``thinking.type == "enabled"`` (`THINKING_ENABLED_MESSAGE`); ``forced_tool_choice``: a
``tool_choice`` of type ``any`` or ``tool`` (`FORCED_TOOL_CHOICE_MESSAGE`);
``orphaned_tool_use``: ``tool_use`` blocks without ``tool_result`` blocks in the next message,
and ``tool_result`` blocks without a ``tool_use`` before them; ``blank_text``: whitespace-only
text blocks; ``trailing_whitespace``: a final assistant text ending in whitespace.
"""

RULE_NAMES: Final[tuple[str, ...]] = tuple(DEFAULT_RULES)
"""The names accepted by ``AnthropicEmulator(rules=...)`` and `AnthropicEmulator.set_rule`."""

_DATED_NAME_RE: Final[re.Pattern[str]] = re.compile(r"(?P<base>.+)-\d{8}")


def names_rule(names: frozenset[str]) -> Callable[[str], bool]:
    """A rule for exactly `names`, each also with a ``-YYYYMMDD`` suffix."""

    def applies(model: str) -> bool:
        if model in names:
            return True
        dated = _DATED_NAME_RE.fullmatch(model)
        return dated is not None and dated["base"] in names

    return applies


def compile_rule(name: str, models: ModelRule) -> Callable[[str], bool]:
    """The predicate for rule `name` from a `ModelRule`; refuses unknown names and bad shapes."""
    if name not in DEFAULT_RULES:
        raise ValueError(f"unknown emulator rule {name!r}; expected one of {RULE_NAMES}")
    if isinstance(models, bool):
        return _every_model if models else _no_model
    if callable(models):
        return models
    if isinstance(models, (str, bytes)) or not isinstance(models, Iterable):
        raise TypeError(
            f"rule {name!r}: expected a predicate, a collection of model names or a bool, "
            f"got {models!r}"
        )
    names = frozenset(models)
    if not all(isinstance(model, str) for model in names):
        raise TypeError(f"rule {name!r}: model names must be str")
    return names_rule(names)
