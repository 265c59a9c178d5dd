"""Predict a scan and write probabilities and labels as NIfTI on the input's grid."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from brain_tf.errors import DataError
from brain_tf.inference.postprocess import to_label_map
from brain_tf.inference.sliding_window import sliding_window_predict
from brain_tf.io import Volume, save_volume


@dataclasses.dataclass
class Prediction:
    """Probabilities (x, y, z, k) (float32 unless ``output_dtype`` says otherwise) and the
    label map (x, y, z) derived from them."""

    probabilities: np.ndarray
    labels: np.ndarray | None = None


def write_prediction(
    reference: Volume,
    labels_path: str | os.PathLike | None = None,
    probabilities_path: str | os.PathLike | None = None,
    *,
    labels: np.ndarray | None = None,
    probabilities: np.ndarray | None = None,
) -> list[Path]:
    """Write a label map (integer 3D) and/or probabilities (float32 4D) as NIfTI.

    Both get ``reference``'s affine and header (the scan that was predicted),
    so they overlay it in any viewer. Files are written atomically.
    """
    written = []
    name = reference.path or "input volume"
    for path, array, ndim in ((labels_path, labels, 3), (probabilities_path, probabilities, 4)):
        if path is None:
            continue
        if array is None:
            raise DataError(f"{path}: nothing to write; pass the array to write there")
        array = np.asarray(array)
        if array.ndim != ndim or array.shape[:3] != tuple(reference.shape[:3]):
            raise DataError(f"{path}: array shape {array.shape} does not fit {name} "
                            f"{tuple(reference.shape[:3])}; predict on that scan's grid")
        dtype = np.float32 if ndim == 4 else None
        written.append(save_volume(array, path, affine=reference.affine, dtype=dtype,
                                   header=reference.header))
    return written


def predict_volume(
    model,
    volume: Volume | np.ndarray,
    patch_size=None,
    *,
    activation: str | None = "softmax",
    label_values=None,
    threshold=0.5,
    merge: str = "argmax",
    labels_path: str | os.PathLike | None = None,
    probabilities_path: str | os.PathLike | None = None,
    **window,
) -> Prediction:
    """Sliding-window prediction of one scan, its label map, and optional NIfTI output.

    Args:
        model, volume, patch_size, **window: as for :func:`sliding_window_predict`
            (``overlap``, ``mode``, ``tta``, ``batch_size``, ``slice_axis``, ...).
        activation: the model's output activation, ``"softmax"`` or
            ``"sigmoid"``; ``None`` skips the label map.
        label_values, threshold, merge: see :func:`postprocess.to_label_map`.
        labels_path, probabilities_path: NIfTI files to write (needs a
            :class:`Volume`, whose affine and header they get).
    """
    if (labels_path or probabilities_path) and not isinstance(volume, Volume):
        raise DataError(f"{labels_path or probabilities_path}: writing NIfTI needs the input's "
                        "affine; pass a brain_tf.io.Volume (load_volume) instead of an array")
    if labels_path is not None and activation is None:
        raise DataError(f"{labels_path}: a label map needs activation='softmax' or 'sigmoid'")
    probabilities = sliding_window_predict(model, volume, patch_size, **window)
    labels = None
    if activation is not None:
        labels = to_label_map(probabilities, activation, label_values, threshold, merge)
    if labels_path or probabilities_path:
        write_prediction(volume, labels_path, probabilities_path, labels=labels,
                         probabilities=probabilities)
    return Prediction(probabilities, labels)
