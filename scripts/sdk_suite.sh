#!/usr/bin/env bash
# Runs the anthropic SDK's own test suite (its sdist's tests/, without tests/api_resources) with
# and without prefill_guard.install() active, and fails when install() breaks a test that passes
# without it, unless the same test also fails with a do-nothing middleware installed the same way
# and is listed in scripts/sdk_suite_known.txt.
#
# Usage, from the repository root:
#   scripts/sdk_suite.sh [VENV] [[--] PYTEST_ARGS...]
# VENV is the project's venv (default .venv, or $SDK_SUITE_VENV); PYTEST_ARGS are added to every
# run (e.g. -k "bedrock or vertex"; the tests/ argument is always given).
#
# The SDK version tested is the one installed in VENV. Its tests run in a venv of their own
# ($SDK_SUITE_DIR/venv), never in VENV: they need test tools the project does not use (respx,
# time-machine, inline-snapshot, http-snapshot and httpx with it, boto3, aiohttp, ...), and their
# conftest aliases `httpx` to `httpx2` process-wide. That venv gets prefill_guard (editable, from
# this checkout), the same anthropic version with its aiohttp and bedrock extras, and is
# constrained to VENV's versions of every package the two share, so the SDK runs on the same
# httpx2, pydantic, pytest, ... as the project; the test tools are pinned to the versions of the
# SDK's requirements-dev.lock where that resolves.
#
# Environment:
#   SDK_SUITE_VENV     the project's venv, when no argument is given (default .venv)
#   SDK_SUITE_DIR      work directory: sdist, sources, venv, results (default build/sdk-suite)
#   SDK_SUITE_MODES    the runs, in order (default "plain noop guard")
#   SDK_SUITE_WORKERS  pytest-xdist workers (default 2; 0 runs in one process)
#   SDK_SUITE_PYTEST_ARGS  more pytest arguments for every run, split on spaces (e.g. "-x")
#
# Results: $SDK_SUITE_DIR/results/<mode>.json (the plugin's per-test record), <mode>.xml (JUnit),
# <mode>.log (pytest's output). The exit status is sdk_suite_compare.py's.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="${SDK_SUITE_VENV:-.venv}"
if [[ $# -gt 0 && "$1" != -* ]]; then VENV="$1"; shift; fi
[[ "${1:-}" == "--" ]] && shift
CLI_ARGS=("$@")  # the rest goes to every pytest run
WORK="${SDK_SUITE_DIR:-build/sdk-suite}"
MODES="${SDK_SUITE_MODES:-plain noop guard}"
WORKERS="${SDK_SUITE_WORKERS:-2}"
EXTRA_ARGS="${SDK_SUITE_PYTEST_ARGS:-}"

case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
case "$WORK" in /*) ;; *) WORK="$ROOT/$WORK" ;; esac
PROJECT_PY="$VENV/bin/python"
[[ -x "$PROJECT_PY" ]] || { echo "sdk_suite: no python in $VENV (make the venv first)" >&2; exit 2; }

log() { printf '[sdk_suite %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

VERSION="$("$PROJECT_PY" -c 'import importlib.metadata as m; print(m.version("anthropic"))')"
log "anthropic $VERSION (installed in $VENV)"
mkdir -p "$WORK"

# 1. The sdist of that very version (kept in $WORK: a rerun does not download it again).
SDIST="$WORK/anthropic-$VERSION.tar.gz"
if [[ ! -s "$SDIST" ]]; then
    DOWNLOAD="$(mktemp -d)"
    trap 'rm -rf "$DOWNLOAD"' EXIT
    log "downloading the sdist of anthropic==$VERSION"
    "$PROJECT_PY" -m pip download --quiet --no-deps --no-binary :all: \
        "anthropic==$VERSION" -d "$DOWNLOAD" 2> >(grep -v "is ignored: it is neither" >&2)
    mv "$DOWNLOAD/anthropic-$VERSION.tar.gz" "$SDIST"
fi
SRC="$WORK/src/anthropic-$VERSION"
rm -rf "$WORK/src"
mkdir -p "$WORK/src"
tar -xzf "$SDIST" -C "$WORK/src"
[[ -d "$SRC/tests" ]] || { echo "sdk_suite: $SDIST has no tests/" >&2; exit 2; }

# 2. The suite's venv, remade when what goes into it changed.
SUITE_VENV="$WORK/venv"
SUITE_PY="$SUITE_VENV/bin/python"
CONSTRAINTS="$WORK/constraints.txt"
REQUIREMENTS="$WORK/requirements.txt"
"$PROJECT_PY" -m pip freeze --exclude-editable 2>/dev/null \
    | grep -v -E '^(#|-e |pip==|setuptools==|wheel==)' >"$CONSTRAINTS"
# The test tools the SDK's tests import (besides pytest, pytest-asyncio and anthropic's own
# dependencies), pinned as in the sdist's requirements-dev.lock unless VENV has them already.
"$PROJECT_PY" - "$SRC/requirements-dev.lock" "$CONSTRAINTS" "$VERSION" >"$REQUIREMENTS" <<'EOF'
import re
import sys

lock_path, constraints_path, version = sys.argv[1:]
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
lock = {}
for line in open(lock_path, encoding="utf-8"):
    match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line.strip())
    if match:
        lock[norm(match[1])] = match[2]
have = {norm(line.split("==")[0]) for line in open(constraints_path, encoding="utf-8") if "==" in line}
tools = {
    "pytest": "", "pytest-asyncio": "", "pytest-xdist": "", "respx": "", "time-machine": "",
    "dirty-equals": "", "inline-snapshot": "", "http-snapshot": "[httpx]", "rich": "",
    "opentelemetry-sdk": "",
}
print(f"anthropic[aiohttp,bedrock]=={version}")
for name, extra in tools.items():
    pin = f"=={lock[name]}" if name in lock and name not in have and not name.startswith("opentelemetry") else ""
    print(f"{name}{extra}{pin}")
EOF
STAMP="$(cat "$CONSTRAINTS" "$REQUIREMENTS" "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
if [[ ! -x "$SUITE_PY" || "$(cat "$SUITE_VENV/.sdk-suite-stamp" 2>/dev/null)" != "$STAMP" ]]; then
    log "making $SUITE_VENV"
    rm -rf "$SUITE_VENV"
    "$PROJECT_PY" -m venv "$SUITE_VENV"
    pip_install() {
        "$SUITE_PY" -m pip install --quiet --disable-pip-version-check -c "$CONSTRAINTS" -e "$ROOT" "$@" \
            2> >(grep -v "is ignored: it is neither" >&2)
    }
    if ! pip_install -r "$REQUIREMENTS"; then
        log "the lock's pins did not resolve; installing the test tools unpinned"
        sed -E 's/==[^ ]+$//; s/^(anthropic\[[^]]*\])$/\1=='"$VERSION"'/' "$REQUIREMENTS" >"$REQUIREMENTS.unpinned"
        pip_install -r "$REQUIREMENTS.unpinned"
    fi
    echo "$STAMP" >"$SUITE_VENV/.sdk-suite-stamp"
fi
SUITE_VERSION="$("$SUITE_PY" -c 'import importlib.metadata as m; print(m.version("anthropic"))')"
[[ "$SUITE_VERSION" == "$VERSION" ]] || { echo "sdk_suite: suite venv has anthropic $SUITE_VERSION" >&2; exit 2; }

# 3. The runs. `-p no:prefill_guard` keeps prefill_guard's own pytest plugin (its emulator
# fixture, loaded through its entry point) out of every run, the plain one included.
RESULTS="$WORK/results"
rm -rf "$RESULTS"
mkdir -p "$RESULTS"
PARALLEL=(-n "$WORKERS")  # -n 0: in one process (the SDK's addopts need xdist: -n auto --dist)
# shellcheck disable=SC2206  # word splitting of the extra arguments is intended
EXTRA=($EXTRA_ARGS "${CLI_ARGS[@]}")
TIMINGS=()
for mode in $MODES; do
    log "run: $mode"
    start=$SECONDS
    rc=0
    (
        cd "$SRC"
        SDK_SUITE_MODE="$mode" SDK_SUITE_REPORT="$RESULTS/$mode.json" \
            PYTHONPATH="$ROOT/scripts${PYTHONPATH:+:$PYTHONPATH}" \
            "$SUITE_PY" -m pytest tests --ignore=tests/api_resources \
            -p sdk_suite_plugin -p no:prefill_guard -p no:cacheprovider \
            "${PARALLEL[@]}" -q -rfE --junitxml="$RESULTS/$mode.xml" "${EXTRA[@]}"
    ) >"$RESULTS/$mode.log" 2>&1 || rc=$?
    elapsed=$((SECONDS - start))
    TIMINGS+=("$mode: ${elapsed}s (pytest exit $rc): $(tail -n 1 "$RESULTS/$mode.log")")
    log "${TIMINGS[-1]}"
    # 0: all passed, 1: some failed; anything else is a broken run (usage, internal error, none).
    if [[ $rc -gt 1 || ! -s "$RESULTS/$mode.json" ]]; then
        echo "sdk_suite: the $mode run did not complete (pytest exit $rc); see $RESULTS/$mode.log" >&2
        tail -n 30 "$RESULTS/$mode.log" >&2
        exit 2
    fi
done
printf '%s\n' "${TIMINGS[@]}" >"$RESULTS/timings.txt"

# 4. The verdict.
"$SUITE_PY" "$ROOT/scripts/sdk_suite_compare.py" "$RESULTS" --known "$ROOT/scripts/sdk_suite_known.txt"
