"""The ``prefill-guard`` command line (also ``python -m prefill_guard``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import anthropic

from .agent import Agent
from .errors import api_message
from .messages import is_system_reminder
from .pipeline import RunResult
from .processors import PrefillErrorHandler

__all__ = ["main"]

DEMO_CONVERSATION: list[dict[str, Any]] = [
    {"role": "user", "content": "Suggest a name for a grey cat."},
    {"role": "assistant", "content": "How about Ash?"},
    {"role": "user", "content": "Nice. One more, please."},
    {"role": "assistant", "content": "Sure! Another idea:"},
]
DEFAULT_DEMO_MODEL = "claude-opus-4-6"


class UsageError(Exception):
    """A mistake in how the command was called: reported in one line, exit code 2."""


def _format_message(message: dict[str, Any]) -> str:
    content = message["content"]
    if not isinstance(content, str):
        content = " ".join(b.get("text", f"[{b.get('type')}]") for b in content)
    hidden = "  (hidden)" if is_system_reminder(message) else ""
    return f"  {message['role']:>9}: {content}{hidden}"


def _print_demo(result: RunResult, conversation: Sequence[dict[str, Any]], out: TextIO) -> None:
    print(f"The conversation ends with an assistant turn ({len(conversation)} messages):", file=out)
    for message in conversation:
        print(_format_message(message), file=out)
    print(file=out)
    for attempt in result.attempts:
        if attempt.error is None:
            print(f"Attempt {attempt.number}: 200 OK  ->  {result.text!r}", file=out)
            continue
        error = attempt.error
        status = getattr(error, "status_code", "error")
        text = api_message(error) or str(error)
        print(f"Attempt {attempt.number}: {status} {type(error).__name__}: {text}", file=out)
        print(f"           request id: {attempt.request_id}", file=out)
        if attempt.retried_by:
            print(
                f"  repair:  processor {attempt.retried_by!r} appended a hidden "
                "<system-reminder>continue</system-reminder> user message and asked to retry",
                file=out,
            )
    print(file=out)
    print("UI view (what a person sees):", file=out)
    for message in result.messages.to_ui():
        print(_format_message(message), file=out)
    print(file=out)
    print("Raw view (what is stored; metadata stays out of every request):", file=out)
    for message in result.messages:
        print(_format_message(message), file=out)
        if "metadata" in message:
            print(f"             metadata: {json.dumps(message['metadata'])}", file=out)


def _run_demo(args: argparse.Namespace, out: TextIO) -> int:
    agent_kwargs: dict[str, Any] = {"error_processors": [PrefillErrorHandler()], "max_tokens": 256}
    if args.live:
        if not os.environ.get("ANTHROPIC_API_KEY"):
            raise UsageError("--live needs the ANTHROPIC_API_KEY environment variable to be set")
        print(f"Talking to the real Anthropic API with model {args.model}.", file=out)
        with anthropic.Anthropic() as client:
            result = Agent(args.model, client=client, **agent_kwargs).generate(DEMO_CONVERSATION)
        _print_demo(result, DEMO_CONVERSATION, out)
        return 0

    from .testing import AnthropicEmulator  # only the offline demo needs the emulator

    with AnthropicEmulator(reply="Maybe Pebble, for a calm grey cat.") as emulator:
        print(
            f"Using the embedded emulator at {emulator.base_url} (model {args.model}, which "
            "rejects assistant prefill like Claude 4.6 and later).",
            file=out,
        )
        print(file=out)
        with emulator.client() as client:
            result = Agent(args.model, client=client, **agent_kwargs).generate(DEMO_CONVERSATION)
        _print_demo(result, DEMO_CONVERSATION, out)
        print(file=out)
        print("Requests on the wire (last message of each):", file=out)
        for number, request in enumerate(emulator.message_requests, start=1):
            last = request.body["messages"][-1]
            print(f"  request {number}: ...{json.dumps(last)}", file=out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every command."""
    parser = argparse.ArgumentParser(
        prog="prefill-guard",
        description="Keep Anthropic API agents alive when the API rejects a request.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="replay a conversation that ends with an assistant turn and show the repair",
        description=(
            "Replay a conversation that ends with an assistant turn against the embedded "
            "emulator (or, with --live, the real API) and show the 400, the processor's "
            "repair, the retry, and the UI view beside the raw view."
        ),
    )
    demo.add_argument(
        "--live",
        action="store_true",
        help="talk to the real Anthropic API (needs ANTHROPIC_API_KEY)",
    )
    demo.add_argument("--model", default=DEFAULT_DEMO_MODEL, help="model name (%(default)s)")
    return parser


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 failed, 2 usage)."""
    out = out or sys.stdout
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(out)
        return 2
    try:
        return _run_demo(args, out)
    except UsageError as exc:
        print(f"prefill-guard: error: {exc}", file=sys.stderr)
        return 2
    except anthropic.APIConnectionError as exc:
        print(f"prefill-guard: error: could not reach the API ({exc})", file=sys.stderr)
        return 1
    except anthropic.APIStatusError as exc:
        text = api_message(exc) or str(exc)
        print(f"prefill-guard: error: the API answered {exc.status_code}: {text}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
