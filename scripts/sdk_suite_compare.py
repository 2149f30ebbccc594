"""Compare the runs of the anthropic SDK's test suite that scripts/sdk_suite.sh made.

    python scripts/sdk_suite_compare.py RESULTS_DIR [--known FILE] [--details]

(``--known`` defaults to sdk_suite_known.txt beside this script.)

RESULTS_DIR holds ``plain.json``, ``noop.json`` and ``guard.json`` (sdk_suite_plugin.py writes
them).

A *regression* is a test that passed in the plain run and did not pass (failed, errored, was
skipped, or did not run) with ``prefill_guard.install()`` active. A regression is explained only
when the test did not pass under the do-nothing control either (the same install mechanism with a
middleware that does nothing) AND its node id is in the allow-list: such a failure comes from the
SDK's behaviour with middleware installed that way, not from the guard's logic. Any other
regression makes the exit status 1 and is printed with its error.

Allow-list format: one node id per line, then `` # `` and the reason (the SDK behaviour behind
it); lines that start with ``#`` and blank lines are ignored.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

Run = dict[str, dict[str, str]]


def load(path: Path) -> Run:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    tests: Run = data["tests"]
    return tests


def load_known(path: Path | None) -> dict[str, str]:
    known: dict[str, str] = {}
    if path is None or not path.exists():
        return known
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        nodeid, _, reason = line.partition(" # ")
        known[nodeid.strip()] = reason.strip()
    return known


def passed(run: Run, nodeid: str) -> bool:
    entry = run.get(nodeid)
    return entry is not None and entry["outcome"] in ("passed", "xfailed")


def outcome(run: Run, nodeid: str) -> str:
    entry = run.get(nodeid)
    return "not run" if entry is None else entry["outcome"]


def error_line(run: Run, nodeid: str) -> str:
    """The exception of a failure's report: its first ``E`` line, with the line of pytest's
    assertion diff that says what differs when there is one; else the report's last line."""
    entry = run.get(nodeid)
    if entry is None:
        return "(not run)"
    text = entry.get("longrepr", "")
    lines = [line[1:].strip() for line in text.splitlines() if line.startswith("E ")]
    lines = [line for line in lines if line]
    if lines:
        diff = [
            line
            for line in lines[1:]
            if line.startswith(("Left contains", "Right contains", "At index"))
        ]
        return (lines[0] + (f" | {diff[0]}" if diff else ""))[:400]
    rest = [line for line in text.splitlines() if line.strip()]
    return (rest[-1].strip() if rest else entry["outcome"])[:400]


def cause(message: str) -> str:
    """An error line with the parts that vary from test to test blanked, to group by."""
    message = re.sub(r"\S*\.\.\.\S*", "…", message)  # pytest's abbreviated reprs
    message = re.sub(r" at 0x[0-9a-f]+", "", message)
    message = re.sub(r"0x[0-9a-f]+", "0x…", message)
    message = re.sub(r"'[^']{60,}'", "'…'", message)
    message = re.sub(r"\b\d+(\.\d+)?\b", "N", message)
    return message[:240]


def print_grouped(
    title: str, nodeids: list[str], run: Run, details: bool, extra: Any = None
) -> None:
    print(f"\n{title}: {len(nodeids)}")
    if not nodeids:
        return
    groups: dict[str, list[str]] = defaultdict(list)
    for nodeid in nodeids:
        groups[cause(error_line(run, nodeid))].append(nodeid)
    for key, members in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
        print(f"  [{len(members)}] {key}")
        if details or len(members) <= 50:
            for nodeid in sorted(members):
                note = extra(nodeid) if extra else ""
                note = f"  ({note})" if note else ""
                print(f"      {nodeid}{note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", type=Path)
    parser.add_argument(
        "--known", type=Path, default=Path(__file__).with_name("sdk_suite_known.txt")
    )
    parser.add_argument(
        "--details", action="store_true", help="also list the explained regressions by cause"
    )
    args = parser.parse_args(argv)

    runs: dict[str, Run] = {}
    for mode in ("plain", "noop", "guard"):
        path = args.results / f"{mode}.json"
        if path.exists():
            runs[mode] = load(path)
    missing = [mode for mode in ("plain", "noop", "guard") if mode not in runs]
    if missing:
        print(
            f"sdk_suite_compare: no results for {', '.join(missing)} in {args.results}",
            file=sys.stderr,
        )
        return 2
    plain, noop, guard = runs["plain"], runs["noop"], runs["guard"]
    known = load_known(args.known)

    for mode, run in runs.items():
        counts: dict[str, int] = defaultdict(int)
        for entry in run.values():
            counts[entry["outcome"]] += 1
        summary = ", ".join(f"{n} {name}" for name, n in sorted(counts.items()))
        print(f"{mode:>13}: {summary}")

    baseline = sorted(nodeid for nodeid in plain if passed(plain, nodeid))
    if not baseline:
        print("sdk_suite_compare: no test passed in the plain run", file=sys.stderr)
        return 2
    regressions = [nodeid for nodeid in baseline if not passed(guard, nodeid)]
    with_control = [nodeid for nodeid in regressions if not passed(noop, nodeid)]
    guard_only = [nodeid for nodeid in regressions if passed(noop, nodeid)]
    explained = [nodeid for nodeid in with_control if nodeid in known]
    unexplained_control = [nodeid for nodeid in with_control if nodeid not in known]
    control_only = [
        nodeid for nodeid in baseline if not passed(noop, nodeid) and passed(guard, nodeid)
    ]
    stale = sorted(nodeid for nodeid in known if nodeid in plain and nodeid not in regressions)
    unselected = [nodeid for nodeid in known if nodeid not in plain]

    print(
        f"\n{len(baseline)} tests pass plainly; {len(regressions)} of them do not pass with "
        f"install(): {len(with_control)} fail under the do-nothing control too "
        f"({len(explained)} in the allow-list), {len(guard_only)} only with the guard"
    )

    def note(nodeid: str) -> str:
        notes = (
            []
            if outcome(guard, nodeid) == "failed"
            else [outcome(guard, nodeid) + " with install()"]
        )
        if nodeid in known and nodeid in guard_only:
            notes.append("in the allow-list, but passes under the control")
        return "; ".join(notes)

    if args.details:
        print_grouped(
            "Explained (fail under the control too, in the allow-list)",
            explained,
            guard,
            True,
            note,
        )
    print_grouped("UNEXPLAINED: fail only with the guard", guard_only, guard, True, note)
    print_grouped(
        "UNEXPLAINED: fail under the control too, but not in the allow-list",
        unexplained_control,
        guard,
        True,
        note,
    )
    if control_only:
        print_grouped(
            "Note: fail under the control but pass with install()", control_only, noop, args.details
        )
    if stale:
        print(f"\nNote: {len(stale)} allow-list entries are not regressions now (remove them):")
        for nodeid in stale:
            states = f"plain: {outcome(plain, nodeid)}, guard: {outcome(guard, nodeid)}"
            print(f"      {nodeid}  ({states})")
    if unselected:
        print(f"\n({len(unselected)} allow-list entries did not run in the plain run.)")
    bad = len(guard_only) + len(unexplained_control)
    print(f"\nsdk_suite: {'FAILED' if bad else 'ok'}: {bad} unexplained regressions")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
