"""The prefill-guard command line, run as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

from prefill_guard.testing import AnthropicEmulator


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
