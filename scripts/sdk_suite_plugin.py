"""pytest plugin for running the anthropic SDK's own test suite under prefill_guard.

Loaded by ``scripts/sdk_suite.sh`` with ``-p sdk_suite_plugin`` (``scripts/`` on ``PYTHONPATH``)
into a run of the SDK's ``tests/``. ``SDK_SUITE_MODE`` chooses what is active for the whole run,
set up in ``pytest_configure`` (in every xdist worker), before any test module is imported and
so before any client is made:

``plain``
    nothing: the SDK's suite as it is.
``noop``
    the control: a middleware that does nothing (each hook returns ``call_next(request)``),
    put into every client by ``prefill_guard.install()`` itself, so exactly the way the guard is
    (each client class's ``__init__`` patched to append it unless one is there already, which
    ``copy()``/``with_options()`` pass on). What fails here fails because of *how* the
    middleware is installed, or because the SDK behaves differently with any middleware.
``guard``
    ``prefill_guard.install()`` with its defaults: the check.

``SDK_SUITE_REPORT`` names a JSON file that the controlling process writes at the end: every
test's node id, outcome and, for a failure, the phase and the report text.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

MODES = ("plain", "noop", "guard")
_MODE = os.environ.get("SDK_SUITE_MODE", "plain")
if _MODE not in MODES:
    raise pytest.UsageError(f"SDK_SUITE_MODE={_MODE!r}: expected one of {', '.join(MODES)}")

_state: dict[str, Any] = {}


def _passthrough_class() -> type:
    from prefill_guard import middleware as pg_middleware

    class PassThroughMiddleware(pg_middleware.ErrorProcessorMiddleware):
        """Does nothing: the rest of the chain, untouched. A subclass of the guard's class so that
        install()'s own checks (never a second one, kept by copy()) treat it as the guard."""

        def handle(self, request: Any, call_next: Any) -> Any:
            return call_next(request)

        async def handle_async(self, request: Any, call_next: Any) -> Any:
            return await call_next(request)

        def __repr__(self) -> str:
            return "PassThroughMiddleware()"

    return PassThroughMiddleware


def _install_passthrough() -> object:
    """prefill_guard.install(), with the do-nothing middleware in place of the guard."""
    import prefill_guard
    from prefill_guard import middleware as pg_middleware

    real = pg_middleware.ErrorProcessorMiddleware
    passthrough: Any = _passthrough_class()
    pg_middleware.ErrorProcessorMiddleware = passthrough  # type: ignore[misc]  # install() makes it
    try:
        installed = prefill_guard.install(processors=[])
    finally:
        pg_middleware.ErrorProcessorMiddleware = real  # type: ignore[misc]
    if type(installed) is not passthrough:
        raise RuntimeError(
            "prefill_guard.install() no longer builds its middleware from "
            "prefill_guard.middleware.ErrorProcessorMiddleware; update sdk_suite_plugin.py"
        )
    return installed


def pytest_configure(config: pytest.Config) -> None:
    _state["results"] = {}
    _state["is_worker"] = hasattr(config, "workerinput")
    if _MODE == "plain":
        return
    import prefill_guard

    if _MODE == "guard":
        _state["middleware"] = prefill_guard.install()
    else:
        _state["middleware"] = _install_passthrough()
    _check_installed(_state["middleware"])


def _check_installed(entry: object) -> None:
    """A new client has the middleware: else the run would test nothing."""
    import anthropic

    with anthropic.Anthropic(api_key="sdk-suite-check") as client:
        if entry not in client.middleware:
            raise pytest.UsageError(f"SDK_SUITE_MODE={_MODE}: a new client has no {entry!r}")


def pytest_report_header(config: pytest.Config) -> str:
    return f"sdk_suite_plugin: mode={_MODE} middleware={_state.get('middleware')!r}"


_RANK = {"passed": 0, "skipped": 1, "xfailed": 1, "xpassed": 1, "failed": 2, "error": 3}


def _record(nodeid: str, outcome: str, phase: str, text: str) -> None:
    """Keep a test's worst outcome, and the report of its first failing phase (a failed call
    often makes the teardown fail too, e.g. respx's "routes not called")."""
    results: dict[str, dict[str, str]] = _state["results"]
    current = results.get(nodeid)
    if current is None:
        results[nodeid] = {"outcome": outcome, "phase": phase, "longrepr": text}
        return
    if _RANK[outcome] > _RANK[current["outcome"]]:
        current["outcome"] = outcome
    if text and not current["longrepr"]:
        current["phase"], current["longrepr"] = phase, text
    elif text:
        current["phase"] += f"+{phase}"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "results" not in _state:
        return
    text = ""
    if report.failed:
        outcome = "failed" if report.when == "call" else "error"
        text = str(report.longreprtext)[-6000:]
    elif report.skipped:
        outcome = "xfailed" if hasattr(report, "wasxfail") else "skipped"
    elif report.when == "call":
        outcome = "xpassed" if hasattr(report, "wasxfail") else "passed"
    else:
        return
    _record(report.nodeid, outcome, report.when, text)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if "results" in _state and report.skipped:  # a module skipped whole (importorskip)
        _record(report.nodeid, "skipped", "collect", "")
    if "results" in _state and report.failed:
        _record(
            report.nodeid or "<collection>", "error", "collect", str(report.longreprtext)[-6000:]
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get("SDK_SUITE_REPORT")
    if not path or _state.get("is_worker", True):
        return
    with open(path, "w", encoding="utf-8") as out:
        json.dump(
            {
                "mode": _MODE,
                "middleware": repr(_state.get("middleware")),
                "exitstatus": int(exitstatus),
                "tests": _state["results"],
            },
            out,
            indent=1,
            sort_keys=True,
        )
