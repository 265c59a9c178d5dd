"""ONNX export of a Keras model and prediction with ONNX Runtime.

:func:`export_onnx` writes a model with Keras 3's ``model.export(format="onnx")``
(tf2onnx underneath); the spatial axes and the batch axis stay dynamic, so one
file predicts tiles of any size. :class:`OnnxPredictor` runs such a file with
ONNX Runtime as a plain callable ``batch -> numpy``, usable wherever brain_tf
takes a model callable (:func:`brain_tf.inference.sliding_window_predict`,
:func:`brain_tf.inference.predict_volume`, the cohort runner); it goes through
the numpy sliding-window loop.

Both need the optional ``onnx`` extra (``tf2onnx`` and ``onnx`` to export,
``onnxruntime`` or ``onnxruntime-gpu`` to predict).
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import keras
import numpy as np

from brain_tf.errors import ModelError
from brain_tf.io import atomic_path

INSTALL_HINT = "pip install 'brain_tf[onnx]'"


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise ModelError(f"onnxruntime is not installed: {INSTALL_HINT} (or onnxruntime-gpu) to "
                         "predict with ONNX models") from exc
    return onnxruntime


class OnnxPredictor:
    """An ONNX model run by ONNX Runtime: ``predictor(batch)`` returns numpy.

    Args:
        path: the ``.onnx`` file (one input, channels-last like the Keras model).
        providers: ONNX Runtime execution providers in order of preference;
            default: every available one (CUDA first where installed, then CPU).
        threads: intra-op threads (default: ONNX Runtime's choice, all cores).

    A single-output model returns its array; a multi-output model a dict by
    output name (pick one with ``output=`` in the prediction functions).
    """

    def __init__(self, path: str | os.PathLike, providers=None, threads: int | None = None):
        ort = _onnxruntime()
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: no such ONNX file; write one with export_onnx(model, "
                             "path)")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=providers or ort.get_available_providers())
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"{self.path}: ONNX Runtime cannot load it ({exc}); export it again "
                             "with export_onnx") from exc
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"{self.path}: the model has {len(inputs)} inputs; brain_tf predicts "
                             "models with one image input")
        self.input_name = inputs[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, batch):
        outputs = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, np.float32)})
        if len(outputs) == 1:
            return outputs[0]
        return dict(zip(self.output_names, outputs))


def export_onnx(model: keras.Model, path: str | os.PathLike, sample=None,
                tolerance: float = 1e-4) -> Path:
    """Write ``model`` as an ONNX file (atomically) and optionally check it.

    The model must be built (called once, or a functional model). With a
    ``sample`` batch, the file is run with ONNX Runtime on it and the result
    must match the Keras model's within ``tolerance`` (max absolute
    difference), else ModelError.
    """
    path = Path(path)
    if path.suffix != ".onnx":
        raise ModelError(f"{path}: an ONNX file name must end in .onnx")
    if not isinstance(model, keras.Model):
        raise ModelError(f"{type(model).__name__}: export_onnx needs a Keras model")
    if not model.built:
        raise ModelError(f"model {model.name!r} is not built: call it once on a batch (or build "
                         "it) before exporting to ONNX")
    if sample is not None:
        model(np.asarray(sample, np.float32))  # Keras exports only a model that was called
    with atomic_path(path) as tmp:
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # Keras prints the temporary name
                model.export(str(tmp), format="onnx")
        except ImportError as exc:
            raise ModelError(f"{path}: exporting to ONNX needs tf2onnx and onnx: {INSTALL_HINT}"
                             ) from exc
        if sample is not None:
            _check(model, tmp, np.asarray(sample, np.float32), tolerance, path)
    return path


def _check(model, onnx_path, sample, tolerance, name) -> None:
    """ModelError unless ONNX Runtime's outputs on ``sample`` match the Keras model's."""
    expected = keras.tree.flatten(model.predict_on_batch(sample))
    got = OnnxPredictor(onnx_path, providers=["CPUExecutionProvider"])(sample)
    got = list(got.values()) if isinstance(got, dict) else [got]
    if len(got) != len(expected):
        raise ModelError(f"{name}: the ONNX model has {len(got)} outputs, the Keras model "
                         f"{len(expected)}")
    for want, have in zip(expected, got):
        diff = float(np.max(np.abs(np.asarray(want) - have)))
        if not diff <= tolerance:
            raise ModelError(f"{name}: ONNX Runtime output differs from the Keras model by "
                             f"{diff:.3g} (tolerance {tolerance:g}); the export is not faithful")
