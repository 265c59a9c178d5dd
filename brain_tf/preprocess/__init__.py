"""Deterministic per-subject preprocessing (numpy/scipy/scikit-image).

Resample onto a target spacing or grid with the centres aligned, crop or pad,
mask, normalise with a named scheme, map label values to class indices; an
HDF5 cache of the results; a loader that streams a manifest's subjects; and the
way back: predictions on the input file's own grid, restricted to a brain mask.
"""

from brain_tf.preprocess.brain_mask import simple_brain_mask
from brain_tf.preprocess.cache import PreprocessCache
from brain_tf.preprocess.inverse import argmax_labels, labels_on_grid, restrict_to_mask
from brain_tf.preprocess.labels import indices_to_values, values_to_indices
from brain_tf.preprocess.loader import ManifestLoader, SliceLoader
from brain_tf.preprocess.normalise import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    NORMALISERS,
    normalise,
    register_normaliser,
)
from brain_tf.preprocess.resample import crop_start, resample, target_grid, window
from brain_tf.preprocess.slices import preprocess_slice, to_pixel_scale
from brain_tf.preprocess.subject import (
    Preprocessed,
    check_config,
    config_hash,
    preprocess_subject,
)

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "ManifestLoader", "NORMALISERS", "Preprocessed",
    "PreprocessCache", "SliceLoader", "argmax_labels", "check_config", "config_hash",
    "crop_start", "indices_to_values", "labels_on_grid", "normalise", "preprocess_slice",
    "preprocess_subject", "register_normaliser", "resample", "restrict_to_mask",
    "simple_brain_mask", "target_grid", "to_pixel_scale", "values_to_indices", "window",
]
