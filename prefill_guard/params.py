"""Request parameters wherever they are: top level, or inside ``extra_body``.

The SDK's ``messages.create()`` has no ``temperature``/``top_p``/``top_k`` arguments, so Agent
users send them as ``extra_body={...}``, which the SDK merges into the JSON body (winning over a
top-level key of the same name). A middleware sees them top level in the raw body. These
helpers read and change a parameter wherever it is, and replace a nested dict with a changed
copy instead of editing it: a processor may be called with dicts it does not own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from anthropic import NotGiven, Omit

from .contract import RequestParams

__all__ = [
    "SAMPLING_PARAMETERS",
    "drop_request_params",
    "is_set",
    "request_param",
    "set_request_param",
]

SAMPLING_PARAMETERS: tuple[str, ...] = ("temperature", "top_p", "top_k")
"""The sampling parameters (the SDK's ``messages.create()`` takes them only in ``extra_body``)."""


def is_set(value: object) -> bool:
    """Whether a parameter value means something: not ``None``, ``NOT_GIVEN`` or ``omit``."""
    return value is not None and not isinstance(value, (NotGiven, Omit))


def _extra_body(params: Mapping[str, Any]) -> Mapping[str, Any] | None:
    extra = params.get("extra_body")
    return extra if isinstance(extra, Mapping) else None


def request_param(params: Mapping[str, Any], key: str) -> Any:
    """The value the API will see for ``key``: from ``extra_body`` if set there, else top level.

    ``None`` when it is not set (absent, ``None``, ``NOT_GIVEN`` or ``omit``).
    """
    extra = _extra_body(params)
    if extra is not None and is_set(extra.get(key)):
        return extra[key]
    value = params.get(key)
    return value if is_set(value) else None


def set_request_param(
    params: RequestParams, key: str, value: Any, *, near: str | None = None
) -> None:
    """Set ``key`` wherever it already is (top level and/or ``extra_body``).

    A new key goes where ``near`` is (into ``extra_body`` if ``near`` is only there), else top
    level. ``extra_body`` is replaced by a changed copy, never changed in place.
    """
    extra = _extra_body(params)
    in_extra = extra is not None and key in extra
    in_top = key in params
    if not in_extra and not in_top:
        in_extra = near is not None and extra is not None and near in extra and near not in params
        in_top = not in_extra
    if in_extra and extra is not None:
        params["extra_body"] = {**extra, key: value}
    if in_top:
        params[key] = value


def drop_request_params(params: RequestParams, *keys: str) -> bool:
    """Remove ``keys`` from the top level and from ``extra_body`` (replaced by a copy).

    Returns whether a set value was removed.
    """
    dropped = False
    for key in keys:
        if key in params:
            dropped = dropped or is_set(params[key])
            del params[key]
    extra = _extra_body(params)
    if extra is not None and any(key in extra for key in keys):
        dropped = dropped or any(is_set(extra.get(key)) for key in keys)
        params["extra_body"] = {k: v for k, v in extra.items() if k not in keys}
    return dropped
