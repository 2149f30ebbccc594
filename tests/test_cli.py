"""The prefill-guard command line, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
from typing import Any

import pytest

from prefill_guard.testing import AnthropicEmulator

from .conftest import require, store_location


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    return subprocess.run(
        [sys.executable, "-m", "prefill_guard", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
        check=False,
    )


def test_demo_shows_the_400_the_repair_the_retry_and_both_views() -> None:
    """The README's main command runs offline against the embedded emulator."""
    result = _run("demo")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Attempt 1: 400 BadRequestError: This model does not support assistant message" in out
    assert "repair:  processor 'prefill-error-handler' appended a hidden" in out
    assert "Attempt 2: 200 OK" in out
    ui, raw = out.split("UI view")[1].split("Raw view")
    assert "<system-reminder>" not in ui
    assert "<system-reminder>continue</system-reminder>  (hidden)" in raw
    assert '"systemReminder": {"type": "anthropic-prefill-processor-retry"}' in raw
    assert result.stderr == ""


def test_demo_live_talks_to_the_configured_api() -> None:
    """--live uses ANTHROPIC_API_KEY and ANTHROPIC_BASE_URL like any SDK client."""
    with AnthropicEmulator() as emulator:
        result = _run(
            "demo",
            "--live",
            "--model",
            "claude-sonnet-5-5",
            env={"ANTHROPIC_API_KEY": "k", "ANTHROPIC_BASE_URL": emulator.base_url},
        )
        assert result.returncode == 0, result.stderr
        assert [r.body["model"] for r in emulator.message_requests] == ["claude-sonnet-5-5"] * 2
    assert "Attempt 2: 200 OK" in result.stdout


def test_demo_live_without_a_key_is_one_clear_line() -> None:
    """A missing key: exit code 2, one line on stderr, no traceback."""
    result = _run("demo", "--live")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "prefill-guard: error: --live needs the ANTHROPIC_API_KEY environment variable to be set"
    ]


def test_demo_live_with_an_unreachable_api_is_one_clear_line() -> None:
    """Nothing listening: exit code 1 and one line, not a traceback."""
    result = _run(
        "demo",
        "--live",
        env={"ANTHROPIC_API_KEY": "k", "ANTHROPIC_BASE_URL": "http://127.0.0.1:9"},
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("prefill-guard: error: could not reach the API")


def test_help_and_bad_arguments() -> None:
    """--help works on every command; an unknown option exits 2 with argparse's message."""
    assert "demo" in _run("--help").stdout
    assert "--live" in _run("demo", "--help").stdout
    bad = _run("demo", "--frobnicate")
    assert bad.returncode == 2
    assert "unrecognized arguments: --frobnicate" in bad.stderr
    assert _run().returncode == 2


def _env_for(emulator: AnthropicEmulator) -> dict[str, str]:
    return {"ANTHROPIC_API_KEY": "k", "ANTHROPIC_BASE_URL": emulator.base_url}


def test_emulator_command_serves_until_terminated() -> None:
    """`emulator` prints its URL, answers like the API (faults first), and stops on SIGTERM."""
    import signal

    import anthropic

    base = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefill_guard",
            "emulator",
            "--fault",
            "529",
            "--no-prefill-model",
            "acme",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=base,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert "(no prefill for: acme)" in first
        url = first.split(" on ")[1].split(" ")[0]
        with anthropic.Anthropic(api_key="k", base_url=url, max_retries=0) as client:
            hi: Any = [{"role": "user", "content": "hi"}]
            with pytest.raises(anthropic.OverloadedError):
                client.messages.create(model="acme", max_tokens=8, messages=hi)
            client.messages.create(model="acme", max_tokens=8, messages=hi)
            with pytest.raises(anthropic.BadRequestError, match="prefill"):
                client.messages.create(
                    model="acme",
                    max_tokens=8,
                    messages=[
                        {"role": "user", "content": "hi"},
                        {"role": "assistant", "content": "a"},
                    ],
                )
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "Served 3 requests." in out


def test_emulator_command_rejects_a_bad_fault() -> None:
    """A fault it cannot read is a usage error naming the accepted forms."""
    result = _run("emulator", "--fault", "overloaded")
    assert result.returncode == 2
    assert "bad fault 'overloaded'" in result.stderr


@pytest.mark.parametrize(
    ("option", "kind"), [("--db", "sqlite"), ("--store", "sqlite"), ("--store", "postgres")]
)
def test_chat_through_stdin_then_history(option: str, kind: str, tmp_path: Any) -> None:
    """A chat driven through stdin: a message, then /again (reply again, which meets the
    prefill 400 and recovers); `history` shows the UI view, --raw the reminder, --json JSON.
    The thread is in an SQLite file (--db or --store PATH) or PostgreSQL (--store URL)."""
    with store_location(kind, tmp_path) as where:
        _chat_then_history(option, _as_url(where) if kind == "postgres" else where)


def _as_url(conninfo: str) -> str:
    """The ``postgresql://`` URL of a key=value connection string (what a user types)."""
    parts = require("psycopg").conninfo.conninfo_to_dict(conninfo)
    options = urllib.parse.quote(parts["options"], safe="")
    return (
        f"postgresql://{parts['user']}:{urllib.parse.quote(parts['password'], safe='')}@"
        f"{parts['host']}:{parts['port']}/{parts['dbname']}?options={options}"
    )


def _chat_then_history(option: str, db: str) -> None:
    with AnthropicEmulator() as emulator:
        chat = subprocess.run(
            [
                sys.executable,
                "-m",
                "prefill_guard",
                "chat",
                option,
                db,
                "--thread",
                "t1",
                "--show-hidden",
            ],
            input="Hello there\n/again\n",
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **_env_for(emulator)},
            check=False,
        )
        assert chat.returncode == 0, chat.stderr
        assert len(emulator.message_requests) == 2  # the built-in list knows claude-opus-4-6
    assert chat.stdout.count("assistant> Hello from the prefill_guard emulator.") == 2
    assert "(hidden)" in chat.stdout
    assert "you>" not in chat.stdout  # plain output when stdin is not a terminal

    ui = _run("history", option, db, "--thread", "t1")
    assert ui.returncode == 0
    assert [line.split(":")[0].strip() for line in ui.stdout.splitlines()] == [
        "user",
        "assistant",
        "assistant",
    ]
    raw = _run("history", option, db, "--thread", "t1", "--raw")
    assert "<system-reminder>continue</system-reminder>  (hidden)" in raw.stdout
    as_json = json.loads(_run("history", option, db, "--thread", "t1", "--raw", "--json").stdout)
    assert as_json[2]["metadata"] == {
        "systemReminder": {"type": "anthropic-prefill-processor-retry"}
    }


def test_chat_offline_with_the_embedded_emulator(tmp_path: Any) -> None:
    """`chat --emulator` needs no key and no network."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "prefill_guard",
            "chat",
            "--emulator",
            "--db",
            str(tmp_path / "c.db"),
            "--thread",
            "x",
        ],
        input="hi\n",
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "assistant> Hello from the prefill_guard emulator." in result.stdout


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (("chat", "--db", "{db}", "--thread", "t"), 2, "chat needs ANTHROPIC_API_KEY"),
        (("history", "--db", "{missing}", "--thread", "t"), 2, "no such thread database"),
        (("history", "--db", "{db}", "--thread", "nope"), 2, "has no thread 'nope'"),
        (("history", "--db", "{foreign}", "--thread", "t"), 1, "is not a prefill_guard"),
        (("history", "--db", "{db}"), 2, "the following arguments are required: --thread"),
    ],
)
def test_command_errors_are_one_clear_line(
    tmp_path: Any, args: tuple[str, ...], code: int, text: str
) -> None:
    """Bad arguments, a missing key, a missing or foreign file: exit code and one line."""
    from prefill_guard import SQLiteStore

    db = tmp_path / "ok.db"
    with SQLiteStore(db) as store:
        store.append("t", [{"role": "user", "content": "hi"}])
    foreign = tmp_path / "notes.db"
    foreign.write_text("just some text, not a database\n" * 100)
    paths = {"db": str(db), "missing": str(tmp_path / "missing.db"), "foreign": str(foreign)}
    result = _run(*(arg.format(**paths) for arg in args))
    assert result.returncode == code
    lines = result.stderr.strip().splitlines()
    assert text in lines[-1]
    assert "Traceback" not in result.stderr
    assert len([line for line in lines if ": error: " in line]) == 1


def test_emulator_on_a_busy_port_is_one_clear_line() -> None:
    """A port already in use: exit code 2 and one line naming the address, no traceback."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run("emulator", "--port", str(port))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"prefill-guard: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def _chat(db: str, stdin: bytes, emulator: AnthropicEmulator) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "prefill_guard", "chat", "--db", db, "--thread", "t1"],
        input=stdin,
        capture_output=True,
        timeout=60,
        env={**os.environ, **_env_for(emulator)},
        check=False,
    )
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )


def test_chat_sends_nothing_for_an_empty_or_blank_line(tmp_path: Any) -> None:
    """An empty or whitespace-only line gets a short answer and no request; before, a blank
    line was stored and every later turn (and session) failed with a 400."""
    db = str(tmp_path / "threads.db")
    with AnthropicEmulator() as emulator:
        chat = _chat(db, b"Hello\n\n   \n\t\nStill here?\n", emulator)
        assert chat.returncode == 0, chat.stderr
        assert len(emulator.message_requests) == 2
    assert chat.stdout.count("(nothing sent: type a message, or /again for another reply)") == 3
    history = _run("history", "--db", db, "--thread", "t1")
    assert [line.split(":")[0].strip() for line in history.stdout.splitlines()] == [
        "user",
        "assistant",
        "user",
        "assistant",
    ]


def test_chat_with_invalid_utf8_on_stdin_is_one_clear_line(tmp_path: Any) -> None:
    """Bytes that are not UTF-8: exit code 1, one line, no traceback; what came before stays."""
    db = str(tmp_path / "threads.db")
    with AnthropicEmulator() as emulator:
        chat = _chat(db, b"Hello\ncaf\xe9\n", emulator)
    assert chat.returncode == 1
    assert chat.stderr.strip().splitlines() == [
        "prefill-guard: error: standard input is not valid utf-8 text (invalid continuation byte)"
    ]
    assert "Traceback" not in chat.stderr


@pytest.mark.parametrize(
    ("args", "text"),
    [
        ((b"chat", b"--db", b"{db}", b"--thread", b" "), "thread_id must be a non-blank str"),
        ((b"history", b"--db", b"{db}", b"--thread", b""), "thread_id must be a non-blank str"),
        ((b"history", b"--db", b"{db}", b"--thread", b"caf\xe9"), "must be valid Unicode text"),
        ((b"emulator", b"--port", b"99999"), "port must be 0 to 65535, got 99999"),
        ((b"emulator", b"--port", b"http"), "not a port number: 'http'"),
    ],
)
def test_bad_thread_ids_and_ports_are_usage_errors(
    tmp_path: Any, args: tuple[bytes, ...], text: str
) -> None:
    """Each once printed a traceback (ValueError, OverflowError): now exit code 2 and one
    error line from argparse, naming the argument."""
    db = str(tmp_path / "ok.db").encode()
    result = subprocess.run(
        [sys.executable.encode(), b"-m", b"prefill_guard", *(a.replace(b"{db}", db) for a in args)],
        capture_output=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")},
        check=False,
    )
    stderr = result.stderr.decode(errors="backslashreplace")
    assert result.returncode == 2
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1
    assert text in errors[0]


def test_history_of_an_unknown_postgres_thread_names_the_database_not_the_password(
    tmp_path: Any,
) -> None:
    with store_location("postgres", tmp_path) as where:
        url = _as_url(where)
        result = _run("history", "--store", url, "--thread", "nope")
    parts = require("psycopg").conninfo.conninfo_to_dict(where)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"prefill-guard: error: database {parts['dbname']!r} at {parts['host']}:{parts['port']} "
        "has no thread 'nope'"
    )
    assert parts["password"] not in result.stderr


def test_a_postgres_url_libpq_cannot_read_is_a_usage_error_without_the_password() -> None:
    result = _run(
        "history", "--store", "postgresql://u:pa%zzsecret@127.0.0.1:1/db", "--thread", "t"
    )
    assert result.returncode == 2
    assert "percent-encode" in result.stderr
    assert "secret" not in result.stderr
