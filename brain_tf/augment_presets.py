"""Augmentation configs: defaults, the per-system presets, and merging (configuration
only: the typed config checks ``[augment]`` with it; :mod:`brain_tf.pipeline` applies it).

An augmentation config is a TOML-friendly dict. It may name a ``preset`` and
override any of its keys::

    [augment]
    preset = "brats"
    gamma_p = 1.0

Keys that a preset does not set keep the identity default, so ``{}`` (or the
preset ``"none"``) changes nothing. Ranges are ``[low, high]``; ``*_p`` keys
are the probability that a transform is applied to a sample.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

from brain_tf.errors import ConfigError

DEFAULTS_3D: dict[str, Any] = {
    "flip_axes": [],  # axes that may be mirrored, each with probability flip_p
    "flip_p": 0.5,
    "rotation_deg": [0.0, 0.0, 0.0],  # max |angle| about axes 0, 1, 2
    "scale": [1.0, 1.0],  # isotropic zoom range (> 1 zooms in)
    "translation_mm": [0.0, 0.0, 0.0],  # max |shift| per axis
    "affine_p": 1.0,
    "elastic_points": 7,  # control points per axis (cubic B-spline)
    "elastic_mm": 0.0,  # max |control-point displacement|
    "elastic_p": 1.0,
    "bias_points": 4,
    "bias_coefficient": 0.0,  # max |log-field| at the control points
    "bias_p": 0.5,
    "blur_sigma_mm": [0.0, 0.0],
    "blur_p": 0.0,
    "gamma": [1.0, 1.0],
    "gamma_p": 0.5,
    "contrast": [1.0, 1.0],  # multiplicative
    "brightness": [0.0, 0.0],  # additive
    "intensity_p": 0.5,
    "ghosting_ghosts": [2, 6],  # ghosts (every n-th k-space line)
    "ghosting_intensity": [0.0, 0.0],
    "ghosting_axes": [0, 1],
    "ghosting_p": 0.0,
    "motion_mm": 0.0,  # max |translation| during the acquisition
    "motion_segments": 3,
    "motion_axes": [0, 1],
    "motion_p": 0.0,
    "noise_std": [0.0, 0.0],  # in the normalised image's units
    "noise_p": 0.5,
    "jit": True,  # compile the per-sample transform with XLA (much faster on CPU)
    # images generated from label maps (brain_tf.pipeline.generate); the keys above
    # then warp the label map and act on the generated image
    "synth": False,  # generate each patch from its label map instead of reading the image
    "synth_mean": [0.0, 1.0],  # range of each label's mean intensity (one draw per label)
    "synth_std": [0.0, 0.1],  # range of each label's spread (std of its voxels)
    "synth_groups": [],  # lists of label values that share one draw, e.g. [[3, 4]]
    "synth_dark_background_p": 0.0,  # label 0 is black (mean and spread 0), else drawn
    "synth_slice_mm": [1.0, 6.0],  # thickness range of simulated thick slices
    "synth_slice_axes": [0, 1, 2],  # axes the slices may be stacked along (one per sample)
    "synth_slice_p": 0.0,
    "synth_rician_p": 0.0,  # probability that the noise (noise_*) is Rician, not Gaussian
    "synth_crop_fraction": 0.2,  # max fraction of an axis zeroed at each end (field of view)
    "synth_crop_p": 0.0,
    "synth_strip_labels": [],  # head labels (skull, scalp, ...) removed by skull stripping
    "synth_strip_p": 0.0,  # they become background in image (0) and target
    "synth_normalise": "percentile",  # percentile, zscore_nonzero or none (as preprocess does)
    "synth_percentiles": [0.5, 99.5],  # for percentile: clip, then rescale to [0, 1]
}

DEFAULTS_2D: dict[str, Any] = {
    "flip_horizontal": 0.0,  # probability of mirroring columns
    "flip_vertical": 0.0,
    "rotation_deg": 0.0,  # max |angle|
    "zoom": [1.0, 1.0],  # > 1 zooms in
    "shift": 0.0,  # max |shift| as a fraction of the size
    "shear_deg": 0.0,
    "perspective": 0.0,  # corners move up to this fraction of half the size
    "affine_p": 1.0,
    "fill_mode": "reflect",  # reflect, nearest, constant or wrap
    "brightness": [1.0, 1.0],  # multiplicative factor
    "contrast": [1.0, 1.0],  # factor about each channel's mean
    "lighting_p": 1.0,
}

PRESETS: dict[str, dict[str, Any]] = {
    "none": {"dims": 3},
    # C: BraTS tumour patches: flips, a small rotation/zoom, gamma, noise.
    "brats": {"dims": 3, "flip_axes": [0, 1, 2], "rotation_deg": [5.0, 5.0, 5.0],
              "scale": [0.9, 1.1], "gamma": [0.7, 1.5], "gamma_p": 0.5,
              "noise_std": [0.0, 0.1], "noise_p": 0.5},
    # B: ADNI hippocampus (right = 1, left = 2, so no left-right flips).
    "hippocampus": {"dims": 3, "rotation_deg": [5.0, 5.0, 5.0], "scale": [0.9, 1.1],
                    "elastic_points": 7, "elastic_mm": 7.0, "elastic_p": 1.0},
    # B: IXI age (full head) and sex (brain-extracted model used the larger ranges).
    "ixi_age": {"dims": 3, "rotation_deg": [5.0, 5.0, 5.0], "translation_mm": [7.0, 7.0, 7.0]},
    "ixi_sex": {"dims": 3, "rotation_deg": [10.0, 10.0, 10.0],
                "translation_mm": [10.0, 10.0, 10.0]},
    # A: Cam-CAN tissue/age; the coursework had none, this is the IXI-like default.
    "camcan": {"dims": 3, "rotation_deg": [5.0, 5.0, 5.0], "translation_mm": [7.0, 7.0, 7.0]},
    # Domain randomisation (SynthSeg-like): a random image per patch from its label map,
    # with random per-label contrast, warp, partial volume, bias, thick slices, noise, gamma
    # and field of view. Label maps with left/right labels: no flips.
    "synth": {"dims": 3, "synth": True, "rotation_deg": [15.0, 15.0, 15.0],
              "scale": [0.85, 1.15], "elastic_points": 5, "elastic_mm": 4.0, "elastic_p": 0.8,
              "blur_sigma_mm": [0.3, 1.0], "blur_p": 1.0, "bias_coefficient": 0.5,
              "bias_p": 0.8, "noise_std": [0.0, 0.05], "noise_p": 0.8, "gamma": [0.6, 1.6],
              "gamma_p": 0.8, "synth_dark_background_p": 0.8, "synth_slice_p": 0.5,
              "synth_rician_p": 0.5, "synth_crop_p": 0.2},
    # D: LGG slices (fastai-style: flip, rotate 10, zoom 1.1, warp 0.2, lighting 0.2).
    "lgg": {"dims": 2, "flip_horizontal": 0.5, "rotation_deg": 10.0, "zoom": [1.0, 1.1],
            "perspective": 0.2, "affine_p": 0.75, "fill_mode": "reflect",
            "brightness": [0.8, 1.2], "contrast": [0.8, 1.2], "lighting_p": 0.75},
    # E: TCGA-GBM slices (Keras ImageDataGenerator-style ranges).
    "tcga_gbm": {"dims": 2, "flip_horizontal": 0.5, "rotation_deg": 15.0, "shift": 0.1,
                 "shear_deg": 10.0, "zoom": [0.9, 1.2], "fill_mode": "nearest",
                 "brightness": [0.8, 1.2]},
}


def augment_config(spec: str | Mapping[str, Any] | None, dims: int | None = None
                   ) -> tuple[int, dict[str, Any]]:
    """``(dims, full config)`` from a preset name, a dict (optionally with ``preset``) or None.

    ``dims`` (2 or 3) is needed only when no preset says it; unknown keys raise
    :class:`ConfigError` listing the valid ones.
    """
    if spec is None:
        spec = {}
    if isinstance(spec, str):
        spec = {"preset": spec}
    spec = dict(spec)
    name = spec.pop("preset", None)
    base: dict[str, Any] = {}
    if name is not None:
        if name not in PRESETS:
            raise ConfigError(f"unknown augmentation preset {name!r}; "
                              f"choose one of {sorted(PRESETS)}")
        base = copy.deepcopy(PRESETS[name])
    preset_dims = base.pop("dims", None)
    requested = spec.pop("dims", None) or dims
    if name in (None, "none"):
        dims = int(requested or 3)
    else:
        if requested and int(requested) != preset_dims:
            raise ConfigError(f"augmentation preset {name!r} is {preset_dims}D, not {requested}D")
        dims = preset_dims
    if dims not in (2, 3):
        raise ConfigError(f"augmentation dims must be 2 or 3, not {dims!r}")
    defaults = DEFAULTS_3D if dims == 3 else DEFAULTS_2D
    full = {**copy.deepcopy(defaults), **base, **spec}
    unknown = set(full) - set(defaults)
    if unknown:
        raise ConfigError(f"{dims}D augmentation config: unknown keys {sorted(unknown)}; "
                          f"valid keys are {sorted(defaults)}")
    for key, value in full.items():
        if key.endswith("_p") and not 0.0 <= float(value) <= 1.0:
            raise ConfigError(f"augmentation config: {key} must be a probability in [0, 1], "
                              f"not {value!r}")
    return dims, full
