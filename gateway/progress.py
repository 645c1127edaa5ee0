"""A dependency-free progress bar for long CLI work: redraws in place on a terminal, prints
a line every few seconds otherwise (logs, CI)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def render_bar(done: int, total: int, width: int = 30) -> str:
    filled = int(width * min(done, total) / total) if total > 0 else width
    return "[" + "#" * filled + "-" * (width - filled) + "]"


class ProgressBar:
    def __init__(self, total: int, label: str, *, stream: TextIO | None = None, width: int = 30) -> None:
        self.total = max(total, 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.width = width
        self.done = 0
        self.started = time.monotonic()
        self._last_line = 0.0
        self._tty = self.stream.isatty()

    def advance(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        now = time.monotonic()
        if self._tty or now - self._last_line >= 5 or self.done == self.total:
            self._last_line = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta_text = f"{eta:5.0f}s" if eta != float("inf") else "    ?"
        line = (
            f"{self.label} {render_bar(self.done, self.total, self.width)} {self.done}/{self.total} "
            f"{rate:7.1f}/s eta {eta_text}"
        )
        if self._tty:
            self.stream.write("\r" + line + ("\n" if self.done == self.total else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._tty and self.done < self.total:
            self.stream.write("\n")
            self.stream.flush()
