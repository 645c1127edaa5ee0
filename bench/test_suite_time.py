"""How long the test suite's pytest takes, serial and on two pytest-xdist workers, as JSON.

The floor is the suite run serially (`pytest -q -p no:xdist`, the test command before issue 22);
the measured run is the test command's own `pytest -q -n 2 --dist loadfile`. Both run in this
checkout, back to back, on the same machine; `--source` adds a run of another checkout's suite
(its own .venv, serially: main before this change, say) before them. Each run reports its wall
time, the CPU its processes used (children's rusage: pytest, its workers, subprocesses; the
embedded PostgreSQL servers detach and are not counted), the pass/fail line, and the time per
test module (setup + call + teardown of its tests, from `--durations=0`).

    python bench/test_suite_time.py > bench/results/bench-test-suite-time.json    # the whole suite (~20 min quiet)
    python bench/test_suite_time.py --source /path/to/main tests/test_bad_input.py  # some modules only
    python bench/test_suite_time.py --only xdist tests/test_backfill.py

Goal (issue 22, point 7): the whole test command (install + ruff + mypy + pytest) under 10 minutes
on the quiet 2-core machine, so pytest well under 8.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from _common import REPO, emit, load_average, log, machine_info

MODES = {"serial": ["-p", "no:xdist"], "xdist": ["-n", "2", "--dist", "loadfile"]}
DURATION = re.compile(r"^\s*([0-9.]+)s (setup|call|teardown)\s+(\S+?)::")
SUMMARY = re.compile(r"^=*\s*(\d+ (passed|failed).*) in [0-9.]+s")


def run_suite(checkout: Path, extra: list[str], modules: list[str]) -> dict:
    """Run one pytest of `checkout` (with its own .venv) and measure it."""
    python = checkout / ".venv" / "bin" / "python"
    command = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=0", *extra, *modules]
    log(f"running in {checkout}: {' '.join(command[1:])}")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_before = load_average()
    started = time.perf_counter()
    done = subprocess.run(
        command, cwd=checkout, capture_output=True, text=True, env={**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    per_module: dict[str, float] = defaultdict(float)
    summary = None
    for line in done.stdout.splitlines():
        if match := DURATION.match(line):
            per_module[match.group(3)] += float(match.group(1))
        elif match := SUMMARY.match(line):
            summary = match.group(1)
    if done.returncode != 0:
        log(done.stdout[-3000:])
    return {
        "command": " ".join(["pytest", *command[3:]]),
        "returncode": done.returncode,
        "summary": summary,
        "wall_s": round(wall, 1),
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "modules_s": {name: round(s, 1) for name, s in sorted(per_module.items(), key=lambda kv: -kv[1])},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help="test modules to run (default: the whole suite)")
    parser.add_argument("--only", choices=sorted(MODES), help="run this mode of this checkout only")
    parser.add_argument("--source", type=Path, help="also run this other checkout's suite serially first")
    args = parser.parse_args()

    runs: dict[str, dict] = {}
    if args.source:
        runs["source_serial"] = {"checkout": str(args.source), **run_suite(args.source.resolve(), [], args.modules)}
    for mode, extra in MODES.items():
        if args.only in (None, mode):
            runs[mode] = run_suite(REPO, extra, args.modules)
    output: dict = {"benchmark": "test_suite_time", "machine": machine_info(), "modules": args.modules or "all"}
    output["runs"] = runs
    if "serial" in runs and "xdist" in runs:
        output["xdist_vs_serial_wall"] = round(runs["xdist"]["wall_s"] / runs["serial"]["wall_s"], 3)
    if "source_serial" in runs and "xdist" in runs:
        output["xdist_vs_source_wall"] = round(runs["xdist"]["wall_s"] / runs["source_serial"]["wall_s"], 3)
    emit(output)
    sys.exit(max(run["returncode"] for run in runs.values()))


if __name__ == "__main__":
    main()
