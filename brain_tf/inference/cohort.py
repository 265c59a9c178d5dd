"""Predicting a cohort as a three-stage pipeline: read, predict, write.

:func:`run_cohort` takes the items (file paths, manifest rows, anything) and
three functions:

- ``prepare(item)``: read and preprocess one item (runs in a background thread,
  ahead of the prediction);
- ``predict(prepared)``: the model's work (runs in the calling thread, so a
  GPU or TensorFlow session is used from one thread only);
- ``write(item, result)``: write the outputs (runs in another background
  thread, behind the prediction). Write them atomically, as
  :func:`brain_tf.io.save_volume` and :func:`brain_tf.io.atomic_path` do, so
  that an output that exists is a complete one.

While item k is predicted, item k+1 is read and item k-1 written. The queues
between the stages hold ``prefetch`` items each, so memory does not grow with
the cohort. ``outputs(item)`` lists an item's output files; with
``skip_existing`` an item whose outputs all exist is skipped, so a run that
stopped (an error, Ctrl-C, a killed job) continues where it was.

An error in any stage stops the run: items already predicted are still
written, nothing more is read or predicted, the worker threads end, and the
error is raised naming the item and the stage. A brain_tf error keeps its
class (its message gets the item's name in front); any other exception is
raised as :class:`CohortError` with the original as its cause.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from brain_tf.errors import BrainTFError, ConfigError

_END = object()
_POLL_S = 0.1


class CohortError(RuntimeError):
    """A stage of the cohort pipeline failed on one item (``item``, ``stage``)."""


@dataclasses.dataclass
class CohortResult:
    """Items predicted and written by this run, items skipped, wall-clock seconds."""

    done: list
    skipped: list
    seconds: float


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class _Progress:
    """One stderr line per finished item: scans done, scans per minute, time left."""

    def __init__(self, total: int, skipped: int, enabled: bool):
        self.total, self.enabled = total, enabled
        self.start = time.perf_counter()
        self.done = 0
        if enabled and skipped:
            print(f"{skipped} of {total + skipped} scans already have their outputs: skipped",
                  file=sys.stderr, flush=True)

    def finished(self, name: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed * 60.0 if elapsed > 0 else float("inf")
        left = (self.total - self.done) / rate * 60.0 if rate > 0 else 0.0
        print(f"[{self.done}/{self.total}] {name}: {rate:.2f} scans/min, "
              f"{_duration(left)} left", file=sys.stderr, flush=True)


class _Pipeline:
    def __init__(self, prepare, predict, write, name, prefetch: int, progress: _Progress):
        self.prepare, self.predict, self.write, self.name = prepare, predict, write, name
        self.prepared = queue.Queue(maxsize=prefetch)
        self.results = queue.Queue(maxsize=prefetch)
        self.stop_reading = threading.Event()  # read no more items (an error, or the end)
        self.stop_all = threading.Event()      # the writer failed: every stage stops
        self.failure: tuple | None = None
        self.lock = threading.Lock()
        self.done: list = []
        self.progress = progress

    def fail(self, item, stage: str, exc: BaseException) -> None:
        with self.lock:
            if self.failure is None:
                self.failure = (item, stage, exc)
        self.stop_reading.set()

    def put(self, q: queue.Queue, value, stop: threading.Event) -> bool:
        """Put ``value`` unless ``stop`` is set while waiting for room."""
        while not stop.is_set():
            try:
                q.put(value, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def get(self, q: queue.Queue):
        """The next value, or _END once the writer has failed."""
        while True:
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                if self.stop_all.is_set():
                    return _END

    def read_all(self, todo) -> None:
        stop = self.stop_reading  # also set when the writer fails
        for item in todo:
            if stop.is_set():
                return
            try:
                value = (item, self.prepare(item), None)
            except Exception as exc:  # handed to the predicting thread, in order
                value = (item, None, exc)
            if not self.put(self.prepared, value, stop) or value[2] is not None:
                return
        self.put(self.prepared, _END, stop)

    def write_all(self) -> None:
        while True:
            value = self.get(self.results)
            if value is _END:
                return
            item, result = value
            try:
                self.write(item, result)
            except Exception as exc:
                self.fail(item, "write", exc)
                self.stop_all.set()
                return
            del result, value
            self.done.append(item)
            self.progress.finished(self.name(item))

    def predict_all(self) -> None:
        try:
            while True:
                value = self.get(self.prepared)
                if value is _END:
                    return
                item, data, exc = value
                if exc is not None:
                    self.fail(item, "prepare", exc)
                    return
                del value
                try:
                    result = self.predict(data)
                except Exception as exc:
                    self.fail(item, "predict", exc)
                    return
                del data
                if not self.put(self.results, (item, result), self.stop_all):
                    return
                del result
        finally:
            self.stop_reading.set()
            self.put(self.results, _END, self.stop_all)

    def raise_failure(self) -> None:
        if self.failure is None:
            return
        item, stage, exc = self.failure
        name = self.name(item)
        if isinstance(exc, BrainTFError):
            try:
                error = type(exc)(f"{name}: {exc}")
            except TypeError:
                error = CohortError(f"{name}: {stage} failed: {type(exc).__name__}: {exc}")
        else:
            error = CohortError(f"{name}: {stage} failed: {type(exc).__name__}: {exc}")
        error.item, error.stage = item, stage
        raise error from exc


def pending_items(items: Iterable, outputs: Callable[[Any], Sequence], skip_existing: bool = True
                  ) -> tuple[list, list]:
    """Split ``items`` into (to do, skipped): skipped items have all their outputs on disk."""
    todo, skipped = [], []
    for item in items:
        paths = [Path(p) for p in outputs(item)]
        if skip_existing and paths and all(p.exists() for p in paths):
            skipped.append(item)
        else:
            todo.append(item)
    return todo, skipped


def run_cohort(
    items: Iterable,
    prepare: Callable[[Any], Any],
    predict: Callable[[Any], Any],
    write: Callable[[Any, Any], Any],
    outputs: Callable[[Any], Sequence[str | os.PathLike]],
    *,
    skip_existing: bool = True,
    prefetch: int = 1,
    progress: bool = True,
    name: Callable[[Any], str] = str,
) -> CohortResult:
    """Read, predict and write every item, the three stages overlapping.

    Args:
        items: the cohort (any objects; ``name(item)`` names them in messages).
        prepare: ``prepare(item) -> prepared``, e.g. load a scan and preprocess it.
        predict: ``predict(prepared) -> result``, e.g. a sliding-window prediction.
        write: ``write(item, result)``: write the item's outputs atomically.
        outputs: ``outputs(item)``: the paths ``write`` creates for the item.
        skip_existing: skip items whose outputs all exist.
        prefetch: items waiting between two stages (1: one read ahead, one
            waiting to be written).
        progress: print a line per finished item to stderr (scans done, scans
            per minute, time left).

    Returns:
        :class:`CohortResult`. Raises the first error of any stage, naming the item.
    """
    if int(prefetch) < 1:
        raise ConfigError(f"prefetch={prefetch}: must be at least 1")
    start = time.perf_counter()
    todo, skipped = pending_items(items, outputs, skip_existing)
    pipe = _Pipeline(prepare, predict, write, name, int(prefetch),
                     _Progress(len(todo), len(skipped), progress))
    reader = threading.Thread(target=pipe.read_all, args=(todo,), name="cohort-read",
                              daemon=True)
    writer = threading.Thread(target=pipe.write_all, name="cohort-write", daemon=True)
    reader.start()
    writer.start()
    try:
        pipe.predict_all()
    finally:
        writer.join()
        pipe.stop_reading.set()
        reader.join()
    pipe.raise_failure()
    return CohortResult(pipe.done, skipped, time.perf_counter() - start)
