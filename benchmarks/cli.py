"""The entry point: run the benchmarks, print the table, write the JSON."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any, TextIO

from . import (
    long_conversations,
    overhead,
    round_trips,
    scale,
    shared_knowledge,
    streaming,
    telemetry,
    tool_loop,
)
from .common import Config, Section, child_environment, machine, write_json

__all__ = ["BENCHMARKS", "main", "markdown"]

CHILD_TIMEOUT = 900
"""Seconds one benchmark may take before it counts as failed (the full scale run takes ~1 min)."""

BENCHMARKS: dict[str, Callable[[Config], Section]] = {
    "overhead": overhead.run,
    "streaming": streaming.run,
    "round-trips": round_trips.run,
    "scale": scale.run,
    "long": long_conversations.run,
    "tool-loop": tool_loop.run,
    "shared-knowledge": shared_knowledge.run,
    "telemetry": telemetry.run,  # last: it sets OpenTelemetry's global providers (--in-process)
}


def _table(sections: list[Section], out: TextIO) -> None:
    for section in sections:
        print(f"\n{section.title}  ({section.seconds:.1f} s)", file=out)
        width = max((len(row.name) for row in section.rows), default=10)
        for row in section.rows:
            verdict = "" if row.met is None else ("met" if row.met else "MISSED")
            target = f"target {row.target}" if row.target else ""
            line = f"  {row.name:<{width}}  {row.formatted():>14}  {target:<18} {verdict:<6}"
            if row.detail:
                line += f"  {row.detail}"
            print(line.rstrip(), file=out)
        for note in section.notes:
            print(f"  note: {note}", file=out)
        for failure in section.failures:
            print(f"  FAILED: {failure}", file=out)


def markdown(sections: list[Section]) -> str:
    """The table as Markdown, for docs/performance.md."""
    lines = [
        "| benchmark | figure | value | target | met | detail |",
        "| --- | --- | ---: | --- | --- | --- |",
    ]
    for section in sections:
        number = section.title.split(".", 1)[0]
        for row in section.rows:
            verdict = "" if row.met is None else ("yes" if row.met else "**no**")
            cells = [number, row.name, row.formatted(), row.target or "", verdict, row.detail]
            lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _isolated(name: str, config: Config) -> Section:
    """Run one benchmark in a fresh interpreter.

    So no benchmark inherits another's heap (the collector's work grows with it), threads or
    connections, and each peak of resident memory is that benchmark's own.
    """
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "section.json")
        command = [sys.executable, "-m", "benchmarks", "--section", name, "--section-json", path]
        if config.quick:
            command.append("--quick")
        try:
            completed = subprocess.run(
                command, env=child_environment(), timeout=CHILD_TIMEOUT, check=False
            )
            failed = f"exit code {completed.returncode}" if completed.returncode else ""
        except subprocess.TimeoutExpired:
            failed = f"no result after {CHILD_TIMEOUT} s"
        if failed or not os.path.exists(path):
            section = Section(name, f"{name} (did not finish)")
            section.failures.append(f"the {name} benchmark failed: {failed or 'no figures'}")
            return section
        with open(path, encoding="utf-8") as figures:
            return Section.from_json(name, json.load(figures))


def _child(name: str, path: str | None, config: Config) -> int:
    logging.getLogger("prefill_guard").setLevel(logging.WARNING)
    start = time.perf_counter()
    section = BENCHMARKS[name](config)
    section.seconds = time.perf_counter() - start
    if path:
        write_json(path, section.to_json())
    return 0


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark prefill_guard against the embedded API emulator on 127.0.0.1.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small counts: checks that every benchmark runs (CI), not how fast",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=list(BENCHMARKS),
        help="run only this benchmark (repeatable)",
    )
    parser.add_argument(
        "--json",
        default=None,
        metavar="PATH",
        help="where to write the figures (default: benchmarks/results[-quick].json)",
    )
    parser.add_argument(
        "--markdown",
        default=None,
        metavar="PATH",
        help="also write the table as Markdown (as in docs/performance.md)",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every benchmark in this process (by default each gets a fresh one)",
    )
    parser.add_argument("--section", choices=list(BENCHMARKS), help=argparse.SUPPRESS)
    parser.add_argument("--section-json", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    config = Config(quick=args.quick)
    if args.section:  # a child started by _isolated(): run one benchmark, hand back its figures
        return _child(args.section, args.section_json, config)
    path = args.json or (
        "benchmarks/results-quick.json" if args.quick else "benchmarks/results.json"
    )
    # Retries are logged at INFO on the prefill_guard logger; the scale run makes many.
    logging.getLogger("prefill_guard").setLevel(logging.WARNING)

    info = machine()
    print(
        f"prefill_guard benchmarks ({'quick' if config.quick else 'full'}): Python "
        f"{info['python']} on {info['cpu']} x{info['cpus']}, load {info['load_average']}, "
        f"{', '.join(f'{k} {v}' for k, v in info['versions'].items())}",
        file=out,
    )
    sections: list[Section] = []
    started = time.perf_counter()
    for name in args.only or list(BENCHMARKS):
        print(f"running {name} ...", file=out, flush=True)
        if args.in_process:
            start = time.perf_counter()
            section = BENCHMARKS[name](config)
            section.seconds = time.perf_counter() - start
        else:
            section = _isolated(name, config)
        sections.append(section)
    total = time.perf_counter() - started
    _table(sections, out)
    info["load_average_after"] = machine()["load_average"]
    payload: dict[str, Any] = {
        "mode": "quick" if config.quick else "full",
        "seconds": round(total, 1),
        "machine": info,
        "benchmarks": {section.key: section.to_json() for section in sections},
    }
    write_json(path, payload)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as table:
            table.write(markdown(sections))
    failures = [f"{s.key}: {f}" for s in sections for f in s.failures]
    missed = [f"{s.key}: {r.name}" for s in sections for r in s.rows if r.met is False]
    print(f"\n{total:.1f} s in all; figures written to {path}", file=out)
    if missed:
        print(
            f"targets missed: {len(missed)}"
            + ("" if not config.quick else " (quick mode: counts too small to judge speed)"),
            file=out,
        )
    if failures:
        print(f"correctness checks FAILED: {len(failures)}", file=out)
        return 1
    return 0
