"""Whole-volume inference, test-time augmentation, uncertainty and explanations.

- :func:`sliding_window_predict`: predict a volume of any size with a patch
  (or 2D slice) model, Gaussian-blended overlapping tiles, optional flip TTA.
  Keras models run as one compiled TensorFlow function
  (:mod:`~brain_tf.inference.compiled_window`; :func:`aligned_empty` makes
  arrays it reads without a copy), other callables in a numpy loop.
- :func:`predict_volume`: the same plus the label map and NIfTI output.
- :func:`run_cohort`: read, predict and write a cohort as an overlapping
  three-stage pipeline, skipping items whose outputs exist.
- :func:`export_onnx` and :class:`OnnxPredictor`: ONNX export of a Keras model
  and an ONNX Runtime predictor usable wherever a model callable is taken.
- :func:`to_label_map`: probabilities to labels (softmax argmax; sigmoid
  thresholds merged as exclusive classes or nested BraTS regions).
- :func:`mc_dropout_predict`: Monte Carlo dropout mean, std and entropy.
- :func:`grad_cam` and :func:`save_cam_overlay`: Grad-CAM heat maps and PNGs.
"""

from brain_tf.inference.cohort import CohortError, CohortResult, run_cohort
from brain_tf.inference.compiled_window import aligned_empty
from brain_tf.inference.gradcam import find_last_conv_layer, grad_cam, save_cam_overlay
from brain_tf.inference.mc_dropout import mc_dropout_predict
from brain_tf.inference.onnx_model import OnnxPredictor, export_onnx
from brain_tf.inference.postprocess import (
    BRATS_NESTED_VALUES,
    labels_from_sigmoid,
    labels_from_softmax,
    to_label_map,
)
from brain_tf.inference.predict import Prediction, predict_volume, write_prediction
from brain_tf.inference.sliding_window import sliding_window_predict
from brain_tf.inference.tiling import flip_sets, gaussian_profile, tile_grid, tile_starts

__all__ = [
    "BRATS_NESTED_VALUES", "CohortError", "CohortResult", "OnnxPredictor", "Prediction",
    "aligned_empty", "export_onnx", "find_last_conv_layer", "flip_sets", "gaussian_profile",
    "grad_cam", "labels_from_sigmoid", "labels_from_softmax", "mc_dropout_predict",
    "predict_volume", "run_cohort", "save_cam_overlay", "sliding_window_predict", "tile_grid",
    "tile_starts", "to_label_map", "write_prediction",
]
