"""A count of finished items for long commands (``synth``, ``shard``), without Keras.

On a terminal one line is rewritten in place; otherwise (a log file, a pipe) a plain
line is written for each tenth of the work, so logs hold no control characters.
"""

from __future__ import annotations

import sys
import time


class Progress:
    """``Progress(total, "subject")``, then ``add()`` per finished item."""

    def __init__(self, total: int, unit: str, stream=None):
        self.total, self.unit = int(total), unit
        self.stream = stream if stream is not None else sys.stdout
        self.done = 0
        self.start = time.perf_counter()
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._next_line = 0  # plain output: the count at which the next line is due

    def add(self, count: int = 1) -> None:
        self.done += count
        last = self.done >= self.total
        seconds = time.perf_counter() - self.start
        text = f"{self.done}/{self.total} {self.unit}s, {seconds:.0f} s"
        if self.live:
            self.stream.write("\r" + text + ("\n" if last else ""))
        elif self.done >= self._next_line or last:
            self.stream.write(text + "\n")
            self._next_line = self.done + max(1, self.total // 10)
        self.stream.flush()
