"""The ``prefill-guard`` command line (also ``python -m prefill_guard``)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import anthropic

from .agent import Agent
from .errors import api_message
from .messages import is_system_reminder
from .processors import PrefillErrorHandler, default_processors
from .run import RunResult
from .stores import SQLiteStore, StoreError, ThreadStore, check_thread_id
from .testing import AnthropicEmulator, Fault

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


class RuntimeFailure(Exception):
    """Something failed while the command ran: reported in one line, exit code 1."""


def _thread_id(text: str) -> str:
    """An argparse type: a thread id any store accepts, else a usage error naming the problem."""
    try:
        return check_thread_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port(text: str) -> int:
    """An argparse type: a TCP port number, 0 (any free port) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0 to 65535, got {port}")
    return port


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


def _fault(text: str) -> Fault:
    """Parse one --fault: STATUS[:header=value,...] | sse-error[:AFTER] | disconnect[:AFTER] |
    stall:SECONDS."""
    kind, _, arg = text.partition(":")
    try:
        if kind == "sse-error":
            return Fault.sse_error(after_deltas=int(arg or 0))
        if kind == "disconnect":
            return Fault.disconnect(after_deltas=int(arg or 0))
        if kind == "stall":
            return Fault.stall(float(arg))
        headers = dict(pair.split("=", 1) for pair in arg.split(",") if pair)
        return Fault(int(kind), headers=headers)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"bad fault {text!r} ({exc}); expected STATUS[:header=value,...], "
            "sse-error[:AFTER_DELTAS], disconnect[:AFTER_DELTAS] or stall:SECONDS"
        ) from None


def _run_emulator(args: argparse.Namespace, out: TextIO) -> int:
    try:
        emulator = AnthropicEmulator(
            no_prefill_models=args.no_prefill_model or None, host=args.host, port=args.port
        ).start()
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    emulator.script(*args.fault)
    rule = ", ".join(args.no_prefill_model) if args.no_prefill_model else "the 4.6+ families"
    print(f"Anthropic API emulator on {emulator.base_url} (no prefill for: {rule})", file=out)
    print("Point a client at it with ANTHROPIC_BASE_URL; Ctrl-C stops it.", file=out, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    print(f"Served {len(emulator.requests)} requests.", file=out)
    return 0


def _chat_client(args: argparse.Namespace, stack: contextlib.ExitStack) -> anthropic.Anthropic:
    if args.emulator:
        return stack.enter_context(stack.enter_context(AnthropicEmulator()).client())
    if not os.environ.get("ANTHROPIC_API_KEY"):
        raise UsageError("chat needs ANTHROPIC_API_KEY (or --emulator to try it offline)")
    return stack.enter_context(anthropic.Anthropic())


AGAIN = "/again"
"""What a chat line says to ask for another reply without new input."""


def _strict_stdin() -> TextIO:
    """Standard input, decoded strictly: bytes that are not text are an error, not lone
    surrogates (which Python's UTF-8 mode would make of them, and no request can carry)."""
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:
        return sys.stdin
    return io.TextIOWrapper(buffer, encoding=sys.stdin.encoding or "utf-8", errors="strict")


def _read_line(stdin: TextIO) -> str:
    """The next line of standard input ('' at its end), or a runtime error naming the cause."""
    try:
        return stdin.readline()
    except UnicodeDecodeError as exc:
        problem = f"standard input is not valid {exc.encoding} text ({exc.reason})"
        raise RuntimeFailure(problem) from None


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def _open_store(args: argparse.Namespace, *, existing: bool) -> tuple[ThreadStore, str]:
    """The store of ``--store`` (a PostgreSQL URL, or an SQLite file's path) or ``--db`` (an
    SQLite file's path), and how to name it in a message (never with a password).
    ``existing``: a missing SQLite file is a usage error instead of a new file."""
    location: str = args.db if args.db is not None else args.store
    if args.db is None and location.startswith(POSTGRES_SCHEMES):
        try:
            postgres = importlib.import_module("prefill_guard.postgres")
        except ImportError:
            raise UsageError(
                "a PostgreSQL store needs psycopg: pip install 'prefill-guard[postgres]'"
            ) from None
        try:
            store = postgres.PostgresStore(location)
        except ValueError as exc:  # a URL libpq cannot read (the message never repeats it)
            raise UsageError(str(exc)) from None
        return store, f"database {store.database!r} at {store.server}"
    if existing and not Path(location).exists():
        raise UsageError(f"{location}: no such thread database")
    return SQLiteStore(location), location


def _run_chat(args: argparse.Namespace, out: TextIO) -> int:
    interactive = sys.stdin.isatty()
    stdin = _strict_stdin()
    with contextlib.ExitStack() as stack:
        store, _ = _open_store(args, existing=False)
        stack.enter_context(contextlib.closing(store))
        client = _chat_client(args, stack)
        agent = Agent(args.model, client=client, store=store, error_processors=default_processors())
        if interactive:
            print(
                f"Type a message; {AGAIN} asks for another reply; Ctrl-D ends the chat.", file=out
            )
        while True:
            if interactive:
                print("you> ", end="", file=out, flush=True)
            line = _read_line(stdin)
            if not line:
                break
            text = line.rstrip("\r\n")
            if not text.strip():
                print(f"(nothing sent: type a message, or {AGAIN} for another reply)", file=out)
                continue
            before = len(store.load(args.thread)) if args.show_hidden else 0
            try:
                stream = agent.stream(
                    None if text.strip() == AGAIN else text, thread_id=args.thread
                )
            except ValueError as exc:  # input no request can carry: say so, keep chatting
                print(f"(not sent: {exc})", file=out)
                continue
            with stream:
                print("assistant> ", end="", file=out, flush=True)
                for piece in stream.text_stream:
                    print(piece, end="", file=out, flush=True)
                print(file=out)
            if args.show_hidden:
                for message in store.load(args.thread)[before:]:
                    if is_system_reminder(message):
                        print(f"   (hidden){_format_message(message)}", file=out)
    return 0


def _run_history(args: argparse.Namespace, out: TextIO) -> int:
    store, name = _open_store(args, existing=True)
    with contextlib.closing(store):
        messages = store.recall(args.thread, include_system_reminders=args.raw)
        if not messages and args.thread not in store.list_threads():
            raise UsageError(f"{name} has no thread {args.thread!r}")
    if args.json:
        print(json.dumps(messages, indent=2, ensure_ascii=False), file=out)
    else:
        for message in messages:
            print(_format_message(message), file=out)
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

    emulator = commands.add_parser(
        "emulator",
        help="serve the Anthropic API emulator (Claude 4.6 behaviour, locally)",
        description=(
            "Serve the Messages API emulator until stopped, so any client in any language "
            "can be tested against Claude 4.6-and-later behaviour offline."
        ),
    )
    emulator.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    emulator.add_argument("--port", type=_port, default=0, help="port (default: any free port)")
    emulator.add_argument(
        "--no-prefill-model",
        action="append",
        metavar="MODEL",
        help="a model that rejects prefill (repeatable; default: the 4.6-and-later families)",
    )
    emulator.add_argument(
        "--fault",
        action="append",
        type=_fault,
        default=[],
        metavar="FAULT",
        help=(
            "answer the next request with a fault (repeatable, in order): STATUS"
            "[:header=value,...] (e.g. 529, 429:retry-after=3), sse-error[:AFTER_DELTAS], "
            "disconnect[:AFTER_DELTAS] or stall:SECONDS"
        ),
    )

    chat = commands.add_parser(
        "chat",
        help="chat in a thread kept in a SQLite file or a PostgreSQL database",
        description=(
            "An interactive chat that keeps its thread in a SQLite file or a PostgreSQL "
            f"database. A line {AGAIN} asks the model to reply again without new input (the case "
            "that meets the prefill 400); an empty line sends nothing."
        ),
    )
    _store_arguments(chat, "(a file is created if missing)")
    chat.add_argument("--thread", required=True, type=_thread_id, help="the thread id")
    chat.add_argument("--model", default=DEFAULT_DEMO_MODEL, help="model name (%(default)s)")
    chat.add_argument(
        "--show-hidden", action="store_true", help="also print hidden system reminders"
    )
    chat.add_argument(
        "--emulator", action="store_true", help="talk to the embedded emulator, not the API"
    )

    history = commands.add_parser(
        "history",
        help="print a stored thread",
        description="Print a thread: the UI view by default, the raw one with --raw.",
    )
    _store_arguments(history, "")
    history.add_argument("--thread", required=True, type=_thread_id, help="the thread id")
    history.add_argument("--raw", action="store_true", help="include hidden system reminders")
    history.add_argument("--json", action="store_true", help="print the messages as JSON")
    return parser


def _store_arguments(command: argparse.ArgumentParser, new: str) -> None:
    """``--store URL-or-PATH``, or ``--db PATH`` (an SQLite file): one of them, required."""
    where = command.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--store",
        metavar="URL_OR_PATH",
        help=f"where the thread is: a postgresql:// URL, or an SQLite file's path {new}".strip(),
    )
    where.add_argument("--db", metavar="PATH", help="an SQLite file's path")


_COMMANDS = {
    "demo": _run_demo,
    "emulator": _run_emulator,
    "chat": _run_chat,
    "history": _run_history,
}


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 failed, 2 usage)."""
    out = out or sys.stdout
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(out)
        return 2
    try:
        return _COMMANDS[args.command](args, out)
    except UsageError as exc:
        print(f"prefill-guard: error: {exc}", file=sys.stderr)
        return 2
    except (StoreError, RuntimeFailure) as exc:
        print(f"prefill-guard: error: {exc}", file=sys.stderr)
        return 1
    except anthropic.APIConnectionError as exc:
        print(f"prefill-guard: error: could not reach the API ({exc})", file=sys.stderr)
        return 1
    except anthropic.APIStatusError as exc:
        text = api_message(exc) or str(exc)
        print(f"prefill-guard: error: the API answered {exc.status_code}: {text}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except Exception as exc:  # a bug of ours, or one we did not foresee: still one line
        print(f"prefill-guard: error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
