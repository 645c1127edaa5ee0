"""Shared helpers for the benchmark scripts (not tests; not part of the gateway package)."""

from __future__ import annotations

import gzip
import json
import os
import platform
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python bench/x.py` from anywhere, without installing
    sys.path.insert(0, str(REPO))

VASWANI = REPO / "gateway" / "data" / "vaswani"


def log(*parts: object) -> None:
    """Progress and info go to stderr; stdout carries only the final JSON object."""
    print(*parts, file=sys.stderr, flush=True)


def corpus(limit: int | None = None) -> list[dict]:
    """Vaswani documents in file order: dicts with "_id" and "text" (blank texts skipped)."""
    docs: list[dict] = []
    with gzip.open(VASWANI / "corpus.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            if not doc.get("text", "").strip():
                continue
            docs.append(doc)
            if limit is not None and len(docs) >= limit:
                break
    return docs


def queries() -> list[str]:
    with (VASWANI / "queries.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle if line.strip()]


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine_info() -> dict:
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


def cpu_busy_snapshot() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine from /proc/stat, or None where there is none."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user/nice
    return total - idle, total


def cpu_busy_fraction(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Share of all cores busy between two snapshots (1.0 = every core fully used)."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round((after[0] - before[0]) / (after[1] - before[1]), 3)


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _pids_under(root: int) -> list[int]:
    """`root` and its descendants, from /proc (an empty list where there is no /proc)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def process_tree_cpu_s(root: int | None) -> float | None:
    """CPU seconds (user + system) used so far by the live processes of the tree under `root`."""
    if root is None:
        return None
    total = 0
    for pid in _pids_under(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


class CpuMeter:
    """Where the CPU went during a timed section, in cores (1.0 = one core fully busy).

    own: this process (client and server threads alike); machine: every process;
    extra: a process tree (e.g. the embedded PostgreSQL); other: machine - own - extra,
    i.e. whatever else ran on the machine at the same time (noise for the numbers).
    """

    def __init__(self, extra_root: int | None = None, extra_name: str = "extra") -> None:
        self.extra_root = extra_root
        self.extra_name = extra_name

    def __enter__(self) -> CpuMeter:
        self._wall = time.perf_counter()
        self._own = _own_cpu_s()
        self._machine = cpu_busy_snapshot()
        self._extra = process_tree_cpu_s(self.extra_root)
        return self

    def __exit__(self, *exc) -> None:
        self.wall_s = time.perf_counter() - self._wall
        self.own_s = _own_cpu_s() - self._own
        machine = cpu_busy_snapshot()
        extra = process_tree_cpu_s(self.extra_root)
        self.extra_s = None if extra is None or self._extra is None else max(0.0, extra - self._extra)
        cores = os.cpu_count() or 1
        fraction = cpu_busy_fraction(self._machine, machine)
        self.machine_cores = None if fraction is None else fraction * cores

    def summary(self) -> dict:
        wall = max(self.wall_s, 1e-9)
        out = {"own_process_cores": round(self.own_s / wall, 2)}
        if self.extra_s is not None:
            out[f"{self.extra_name}_cores"] = round(self.extra_s / wall, 2)
        if self.machine_cores is not None:
            out["machine_busy_cores"] = round(self.machine_cores, 2)
            other = self.machine_cores - self.own_s / wall - (self.extra_s or 0.0) / wall
            out["other_processes_cores"] = round(max(0.0, other), 2)
        return out


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def with_database(dsn: str, database: str) -> str:
    """The same DSN pointing at another database."""
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


def postmaster_pid(data_dir: Path) -> int | None:
    """The PostgreSQL server's pid from its data directory, or None."""
    try:
        return int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
