"""Shared helpers of the benchmark scripts: logging, JSON output, machine facts, CPU use, latencies.

Not tests and not part of the gateway package. Every script in bench/ prints exactly one JSON
object on stdout (`emit`) and its progress on stderr (`log`), so `> result.json` keeps the
numbers clean. Importing this module also puts the repository on sys.path, so a script runs as
`python bench/x.py` from a clone without installing the package.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python bench/x.py` from anywhere, without installing
    sys.path.insert(0, str(REPO))

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def log(*parts: object) -> None:
    """Progress and info go to stderr; stdout carries only the final JSON object."""
    print(*parts, file=sys.stderr, flush=True)


def setup_logging(verbose: bool, prefix: str = "") -> None:
    """The gateway's own log lines on stderr: INFO with --verbose, warnings otherwise."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        stream=sys.stderr,
        format=f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s",
    )


def emit(output: dict) -> None:
    """The benchmark's result: one indented JSON object on stdout."""
    json.dump(output, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


# -- the machine ------------------------------------------------------------------------------


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine_info() -> dict:
    """What a reader needs to compare numbers across machines (cores, CPU, library versions)."""
    import numpy
    import onnxruntime

    info = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover - only the text-input model would work then
        pass
    return info


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def busy_cores(seconds: float = 2.0) -> float | None:
    """Cores busy on the whole machine over the next `seconds` (before a run: is it quiet?)."""
    before = _machine_snapshot()
    time.sleep(seconds)
    fraction = _busy_fraction(before, _machine_snapshot())
    return None if fraction is None else round(fraction * (os.cpu_count() or 1), 2)


# -- CPU use ----------------------------------------------------------------------------------


def _machine_snapshot() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine from /proc/stat, or None where there is none."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user/nice
    return total - idle, total


def _busy_fraction(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Share of all cores busy between two snapshots (1.0 = every core fully used)."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _pids_under(root: int) -> list[int]:
    """`root` and its descendants, from /proc (an empty list where there is no /proc)."""
    children: dict[int, list[int]] = {}
    try:
        entries = [int(e) for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return []
    for pid in entries:
        fields = _stat_fields(pid)
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def tree_cpu_s(root: int | None, *, reaped: bool = False) -> float | None:
    """CPU seconds (user + system) of the live processes under `root`; with `reaped`, plus the
    children `root` has already waited for (PostgreSQL's parallel index-build workers and closed
    backends live shorter than a timed run; their time lands in the postmaster's cutime/cstime)."""
    if root is None:
        return None
    total = 0
    for pid in _pids_under(root):
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    if reaped:
        fields = _stat_fields(root)
        if fields is None:
            return None
        total += int(fields[13]) + int(fields[14])  # cutime, cstime
    return total / _TICK


class CpuMeter:
    """Where the CPU went during a timed section, in cores (1.0 = one core fully busy).

    own: this process (client, gateway and encoder threads alike); postgres: the embedded server's
    processes, reaped ones included (absent with DATABASE_URL); worker_processes: the trees of
    `worker_pids`; other: the machine minus all of those, i.e. whatever else ran at the same time
    (noise for the numbers).
    """

    def __init__(self, pg_pid: int | None = None, worker_pids: list[int] | None = None) -> None:
        self.pg_pid = pg_pid
        self.worker_pids = worker_pids or []

    def _snapshot(self) -> tuple:
        times = os.times()
        workers = sum(tree_cpu_s(pid) or 0.0 for pid in self.worker_pids)
        return (
            time.perf_counter(),
            times.user + times.system,
            tree_cpu_s(self.pg_pid, reaped=True),
            workers,
            _machine_snapshot(),
        )

    def __enter__(self) -> CpuMeter:
        self._before = self._snapshot()
        return self

    def __exit__(self, *exc) -> None:
        self._after = self._snapshot()
        self.wall_s = self._after[0] - self._before[0]

    def summary(self) -> dict:
        (w0, own0, pg0, wk0, m0), (w1, own1, pg1, wk1, m1) = self._before, self._after
        wall = max(w1 - w0, 1e-9)
        out = {"own_process_cores": round((own1 - own0) / wall, 2), "own_cpu_s": round(own1 - own0, 2)}
        busy = (own1 - own0) / wall
        if pg0 is not None and pg1 is not None:
            out["postgres_cores"] = round((pg1 - pg0) / wall, 2)
            out["postgres_cpu_s"] = round(pg1 - pg0, 2)
            busy += (pg1 - pg0) / wall
        if self.worker_pids:
            out["worker_processes_cores"] = round((wk1 - wk0) / wall, 2)
            busy += (wk1 - wk0) / wall
        fraction = _busy_fraction(m0, m1)
        if fraction is not None:
            machine = fraction * (os.cpu_count() or 1)
            out["machine_busy_cores"] = round(machine, 2)
            out["other_processes_cores"] = round(max(0.0, machine - busy), 2)
        return out


# -- latencies --------------------------------------------------------------------------------


def pct(values_ms: list[float]) -> dict:
    """p50/p90/p99/mean/max of latencies in ms (None each when there are none)."""
    import numpy as np

    if not values_ms:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "mean_ms": None, "max_ms": None}
    a = np.asarray(values_ms)
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p90_ms": round(float(np.percentile(a, 90)), 2),
        "p99_ms": round(float(np.percentile(a, 99)), 2),
        "mean_ms": round(float(a.mean()), 2),
        "max_ms": round(float(a.max()), 2),
    }


Op = Callable[[int, int], Awaitable["bool | str"]]


async def closed_loop(workers: int, seconds: float, op: Op) -> tuple[list[float], dict[str, int], float]:
    """`workers` tasks each call `await op(worker, n)` back to back until `seconds` have passed.

    `op` answers True for a success (its latency is recorded, in ms) or a short error label
    (counted). Returns (latencies, error counts, elapsed seconds); every recorded call started
    and finished inside the elapsed time.
    """
    latencies: list[float] = []
    errors: dict[str, int] = {}
    started = time.perf_counter()
    deadline = started + seconds

    async def worker(w: int) -> None:
        for n in itertools.count():
            if time.perf_counter() >= deadline:
                return
            t0 = time.perf_counter()
            try:
                ok = await op(w, n)
            except Exception as exc:  # noqa: BLE001 - counted, not raised
                ok = f"{type(exc).__name__}: {exc}"[:200]
            if ok is True:
                latencies.append((time.perf_counter() - t0) * 1000)
            else:
                errors[str(ok)] = errors.get(str(ok), 0) + 1

    await asyncio.gather(*(worker(w) for w in range(workers)))
    return latencies, errors, time.perf_counter() - started
