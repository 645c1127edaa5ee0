"""How long `driftgate --help` and `driftgate X --help` take, and what they import.

Each run is a fresh interpreter (`python -m gateway.cli ARGS --help`), timed from start to
exit; the floor is `python -c pass` in the same run, so the figures are ratios against it.
`--tree DIR` times another checkout's gateway/ (e.g. a worktree of main) the same way, for a
before/after comparison in one run. Prints one JSON object.

    .venv/bin/python bench/cli_help.py --runs 20 --tree /path/to/main-checkout
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import emit, load_average, log, machine_info

ROOT = Path(__file__).resolve().parents[1]
HELPS = (("--help",), ("migrate", "status", "--help"), ("serve", "--help"))
HEAVY = ("onnxruntime", "asyncpg", "aiohttp", "numpy", "tokenizers", "pydantic")
PROBE = f"HEAVY = {HEAVY!r}\n" + (
    "import json, sys\nfrom gateway.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
    "print(json.dumps({'modules': len(sys.modules), 'heavy': sorted(m for m in HEAVY if m in sys.modules)}), "
    "file=sys.stderr)\n"
)


def timed(argv: list[str], cwd: Path, runs: int) -> dict:
    """Median and min wall time (ms) of `argv` run `runs` times in `cwd`."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append((time.perf_counter() - started) * 1000)
    return {"median_ms": round(statistics.median(times), 1), "min_ms": round(min(times), 1)}


def measure(tree: Path, runs: int, floor_ms: float) -> dict:
    """Per help command: time, its ratio to the floor, modules imported and which heavy ones."""
    out = {}
    for args in HELPS:
        figures = timed([sys.executable, "-m", "gateway.cli", *args], tree, runs)
        probe = subprocess.run(
            [sys.executable, "-c", PROBE, *args], cwd=tree, capture_output=True, text=True, check=True
        )
        imported = json.loads(probe.stderr.strip().splitlines()[-1])
        out[" ".join(args)] = {**figures, "x_floor": round(figures["median_ms"] / floor_ms, 2), **imported}
        log(f"{tree}: driftgate {' '.join(args)}: {figures['median_ms']} ms")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="interpreter starts per figure")
    parser.add_argument("--tree", type=Path, help="another checkout to time the same way (e.g. main)")
    args = parser.parse_args()
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    floor = timed([sys.executable, "-c", "pass"], ROOT, args.runs)
    result = {
        "benchmark": "cli_help",
        "runs": args.runs,
        "floor_python_c_pass": floor,
        "this_tree": measure(ROOT, args.runs, floor["median_ms"]),
        "load_average": load_average(),
        "machine": machine_info(),
    }
    if args.tree:
        result["other_tree"] = {"path": str(args.tree), **measure(args.tree, args.runs, floor["median_ms"])}
    emit(result)


if __name__ == "__main__":
    main()
