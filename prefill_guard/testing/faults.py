"""Scripted faults and recorded requests: what a test tells the emulator, and what it reads back."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

from .api_errors import ERROR_TYPE_STATUS

__all__ = ["Fault", "FaultKind", "RecordedRequest", "RequestPredicate"]

FaultKind = Literal["status", "sse_error", "disconnect", "stall"]
"""What a `Fault` does: answer an HTTP error, break an SSE stream, drop the connection, or wait."""

_FAULT_KINDS: Final[tuple[str, ...]] = get_args(FaultKind)


@dataclass(frozen=True)
class Fault:
    """One scripted answer that replaces the emulator's normal handling of one request.

    Each request (any path) consumes the next queued fault, in order. ``kind`` says what it does:

    ``"status"`` (the default; ``Fault(status, body=None, headers={})``)
        Answer ``status`` at once, before auth and validation. ``body`` may be a dict (sent as
        JSON), a str (sent as-is, e.g. an HTML 502 page), bytes (sent as-is, typed
        ``application/octet-stream`` unless ``headers`` say otherwise: for bodies no encoder
        makes, such as invalid UTF-8 or a gzip header over plain text) or None (the API's
        standard error body for ``status``); ``headers`` are added to, and override, the
        defaults.
    ``"sse_error"`` (make it with `Fault.sse_error`)
        A streaming request gets 200 and a normal stream up to ``after_deltas`` text deltas, then
        an ``error`` event of type ``error_type``; a non-streaming request gets the equivalent
        HTTP error (``status``, e.g. 529 for ``overloaded_error``).
    ``"disconnect"`` (make it with `Fault.disconnect`)
        Drop the connection mid-body: half of a normal JSON answer, or a stream cut after
        ``after_deltas`` text deltas without the end of the chunked body. With ``clean=True`` a
        stream instead ends properly (terminating chunk) but early, before ``message_stop``,
        as a proxy or a ``Connection: close`` body can make it look.
    ``"stall"`` (make it with `Fault.stall`)
        Wait ``seconds`` (less if the emulator stops or the client goes away), then handle the
        request normally.

    ``sse_error`` and ``disconnect`` faults, like status faults, skip auth and validation: they
    build their (broken) answer from whatever the request holds. ``after_deltas`` beyond the
    number of reply chunks sends them all.
    """

    status: int
    body: dict[str, Any] | str | bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    kind: FaultKind = field(default="status", kw_only=True)
    after_deltas: int = field(default=0, kw_only=True)
    error_type: str | None = field(default=None, kw_only=True)
    message: str | None = field(default=None, kw_only=True)
    seconds: float = field(default=0.0, kw_only=True)
    clean: bool = field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        """Reject field values that make no sense for the fault's kind."""
        kind = self.kind
        if kind not in _FAULT_KINDS:
            raise ValueError(f"Fault kind must be one of {_FAULT_KINDS}, not {kind!r}")
        if not _is_int(self.status) or not 100 <= self.status <= 599:
            raise ValueError(f"Fault status must be an int in 100..599, not {self.status!r}")
        if not _is_int(self.after_deltas) or self.after_deltas < 0:
            raise ValueError(f"after_deltas must be an int >= 0, not {self.after_deltas!r}")
        seconds = self.seconds
        if not _is_number(seconds) or not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"seconds must be a finite number >= 0, not {seconds!r}")
        if kind == "sse_error":
            if not isinstance(self.error_type, str) or not self.error_type:
                raise ValueError(f"error_type must be a non-empty str, not {self.error_type!r}")
            if self.message is not None and not isinstance(self.message, str):
                raise ValueError(f"message must be a str or None, not {self.message!r}")
        unused = {
            "body": self.body is not None and kind != "status",
            "headers": bool(self.headers) and kind != "status",
            "after_deltas": self.after_deltas != 0 and kind not in ("sse_error", "disconnect"),
            "error_type": self.error_type is not None and kind != "sse_error",
            "message": self.message is not None and kind != "sse_error",
            "seconds": seconds != 0 and kind != "stall",
            "clean": self.clean is not False and kind != "disconnect",
        }
        for name, is_set in unused.items():
            if is_set:
                raise ValueError(f"{name} does not apply to a {kind!r} fault")
        expected = _fault_status(kind, self.error_type)
        if expected is not None and self.status != expected:
            raise ValueError(
                f"a {kind!r} fault has status {expected}, not {self.status}; "
                f"make it with Fault.{kind}(...)"
            )

    @classmethod
    def sse_error(
        cls,
        *,
        after_deltas: int = 0,
        error_type: str = "overloaded_error",
        message: str | None = None,
    ) -> Fault:
        """An ``error`` event mid-stream, after `after_deltas` text deltas (200 already sent).

        The SDK raises a plain `anthropic.APIStatusError` with ``status_code == 200`` while the
        stream is iterated. A non-streaming request gets the equivalent HTTP error instead (529
        for ``overloaded_error``, 500 for ``api_error``, 429, 400, 401, 403, 404, 413, 402, 504
        for the other API error types, 500 for unknown ones). ``message`` defaults to the API's
        standard message for the error type.
        """
        return cls(
            _fault_status("sse_error", error_type) or 500,
            kind="sse_error",
            after_deltas=after_deltas,
            error_type=error_type,
            message=message,
        )

    @classmethod
    def disconnect(cls, *, after_deltas: int = 0, clean: bool = False) -> Fault:
        """Close the connection mid-body.

        Non-streaming: the status line and headers of a normal 200 (with the full body's
        Content-Length), then half the body. Streaming: the events up to and including
        `after_deltas` text deltas, without the chunked body's terminating chunk; with `clean`,
        with it (the stream just ends, before ``message_stop``). `clean` applies to streams.
        """
        if not isinstance(clean, bool):
            raise ValueError(f"clean must be a bool, not {clean!r}")
        return cls(200, kind="disconnect", after_deltas=after_deltas, clean=clean)

    @classmethod
    def stall(cls, seconds: float) -> Fault:
        """Wait `seconds` before handling the request normally (a slow or hung server).

        Over HTTP the wait ends early, closing the connection without an answer, when the
        emulator stops or the client goes away (e.g. after its own timeout). The in-memory
        transport has neither: it sleeps the whole `seconds` (see
        `AnthropicEmulator.transport`).
        """
        return cls(200, kind="stall", seconds=seconds)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fault_status(kind: str, error_type: object) -> int | None:
    """The status a fault of `kind` must have, or None when the caller chooses it."""
    if kind == "sse_error":
        return ERROR_TYPE_STATUS.get(error_type, 500) if isinstance(error_type, str) else None
    if kind in ("disconnect", "stall"):
        return 200
    return None


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request the emulator received, kept so tests can assert on what was sent.

    ``headers`` has lower-cased names; ``body`` is the parsed JSON, the raw text when it was not
    JSON, or None when the request had no body.
    """

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any


RequestPredicate = Callable[[RecordedRequest], bool]
"""Chooses the requests a scripted fault is for (see `AnthropicEmulator.script`)."""
