"""brain_tf errors raised inside tf.data, given back to the caller as themselves.

A python loader that tf.data calls (:meth:`Source.tf_load` wraps loaders with
``tf.numpy_function``) can raise a brain_tf error, e.g. a :class:`DataError`
for a corrupt label file. TensorFlow hands it to ``model.fit`` as an
``UnknownError`` whose message buries the original one in a TF traceback.
:func:`pipeline_errors` turns it back into the original error (same class,
same message, no TF traceback)::

    with pipeline_errors():
        model.fit(train_ds, ...)

Why the iterator is released at once: the failed input pipeline stays alive
through the frames of the TF traceback (and reference cycles), and its worker
threads keep calling the python loader. If it is destroyed only while the
interpreter shuts down, a worker that needs the GIL then can never finish:
the process hangs, or aborts (exit code 134). :func:`release_pipelines`
drops those frames and collects the cycles while the interpreter is still
whole; :func:`pipeline_errors` calls it on every TF error, and it also runs
at exit for errors nobody caught (or a Ctrl-C).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import inspect
import sys
import threading
from collections import deque
from typing import Callable

import tensorflow as tf

from brain_tf.errors import BrainTFError

_RECENT: deque[BrainTFError] = deque(maxlen=32)  # raised inside tf.data, newest last
_LOCK = threading.Lock()
#: generator and coroutine frames: clearing a suspended one would close it
_SUSPENDABLE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


def remembered(fn: Callable) -> Callable:
    """Wrap a python function that tf.data calls so its brain_tf errors can be found again."""

    def call(*args):
        try:
            return fn(*args)
        except BrainTFError as exc:
            with _LOCK:
                _RECENT.append(type(exc)(*exc.args))  # a copy without the loader's frames
            raise

    return call


def original_error(exc: BaseException) -> BrainTFError | None:
    """The brain_tf error (raised inside tf.data) that caused the TF error ``exc``, if any."""
    if not isinstance(exc, tf.errors.OpError):
        return None
    message = exc.message
    with _LOCK:
        for err in reversed(_RECENT):
            if str(err) in message:
                return type(err)(*err.args)
    return None


def _clear_frames(tb, seen: set[int]) -> None:
    """Drop the locals of every finished frame of ``tb`` and of the frames that called
    them: tracebacks filtered by TF and Keras skip frames that still hold the pipeline."""
    while tb is not None:
        frame = tb.tb_frame
        while frame is not None and id(frame) not in seen:
            seen.add(id(frame))
            if not frame.f_code.co_flags & _SUSPENDABLE:
                with contextlib.suppress(RuntimeError):  # a frame still running keeps its locals
                    frame.clear()
            frame = frame.f_back
        tb = tb.tb_next


def _clear(exc: BaseException | None, seen: set[int]) -> None:
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        _clear_frames(exc.__traceback__, seen)
        exc.__traceback__ = None
        _clear(exc.__cause__, seen)
        exc = exc.__context__


def release_pipelines(exc: BaseException | None = None) -> None:
    """Free input pipelines kept alive by a failed call: clear the frames of ``exc``
    (and of the errors chained to it), then collect reference cycles."""
    _clear(exc, set())
    gc.collect()


def _release_at_exit() -> None:
    # an error nobody caught stays in sys.last_traceback/last_value (with its frames)
    _clear_frames(getattr(sys, "last_traceback", None), set())
    release_pipelines(getattr(sys, "last_value", None))


atexit.register(_release_at_exit)


@contextlib.contextmanager
def pipeline_errors():
    """Re-raise a TF error caused by a brain_tf error inside tf.data as that brain_tf error.

    Wrap ``model.fit``, ``model.predict``, ``model.evaluate`` or a loop over a
    dataset. Other TF errors pass through unchanged. Either way the failed
    input pipeline is released before the error leaves the block.
    """
    try:
        yield
    except tf.errors.OpError as exc:
        original = original_error(exc)
        if original is None:
            gc.collect()  # the TF error keeps its frames for debugging; free the cycles
            raise
        release_pipelines(exc)
        raise original from None
