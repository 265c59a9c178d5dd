"""Per-subject preprocessing driven by a plain (TOML-friendly) config dict.

Steps, in order (volumes are already RAS+ from :func:`brain_tf.io.load_volume`):

1. resample to ``spacing`` and/or ``shape`` with the centres aligned
   (images with spline ``order``, labels and masks nearest);
2. brain mask: the given one, or with ``mask = "auto"`` a simple one computed
   from the image when none is given (:func:`simple_brain_mask`);
3. crop or pad to ``crop`` (``crop_mode`` "center" or "bbox" around the mask);
4. ``apply_mask``: zero the image outside the mask;
5. normalise with the scheme ``normalise`` (see :mod:`brain_tf.preprocess.normalise`);
6. map label values to class indices in the order of ``labels`` (the spec's
   ``[labels]`` table), e.g. 0/255 masks to 0/1.

Config keys (all optional)::

    spacing = [3.0, 3.0, 3.0]   # target voxel size in mm
    shape = [64, 64, 64]        # target grid (with spacing: a fixed grid, system A/B)
    crop = [160, 160, 144]      # crop/pad after resampling
    crop_mode = "center"        # or "bbox" (centred on the mask's bounding box)
    order = 3                   # image interpolation: 1 linear, 3 cubic B-spline
    normalise = "zscore_mask"   # a registered scheme name
    normalise_options = { lower = 0.5, upper = 99.5 }
    mask = "given"              # "given", "auto" (compute when missing) or "none"
    apply_mask = false
    labels = [0, 1, 2, 3]       # label values in class order
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Mapping, Sequence

import numpy as np

from brain_tf.config import with_defaults
from brain_tf.errors import ConfigError, DataError
from brain_tf.io import Volume
from brain_tf.preprocess.aligned import as_aligned
from brain_tf.preprocess.brain_mask import simple_brain_mask
from brain_tf.preprocess.labels import values_to_indices
from brain_tf.preprocess.normalise import NORMALISERS, normalise
from brain_tf.preprocess.resample import crop_start, resample, target_grid, translate_affine, window
from brain_tf.schema import Preprocess

#: Bump when the preprocessing code changes its output, to invalidate caches.
PREPROCESS_VERSION = 2

DEFAULTS: dict[str, Any] = Preprocess().to_dict()
MASK_MODES = ("given", "auto", "none")


@dataclasses.dataclass
class Preprocessed:
    """A preprocessed subject: arrays on one grid with its affine."""

    image: np.ndarray  # float32 (x, y, z, c)
    label: np.ndarray | None  # uint8 class indices (x, y, z)
    mask: np.ndarray | None  # bool (x, y, z)
    affine: np.ndarray
    spacing: tuple[float, float, float]
    subject: str = ""

    def image_volume(self) -> Volume:
        """The image as a :class:`Volume` (e.g. to save it)."""
        return Volume(self.image, self.affine)


def check_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The config with defaults filled in; :class:`ConfigError` on unknown keys or values."""
    full = with_defaults(config, DEFAULTS, "preprocessing config")
    if full["normalise"] not in NORMALISERS:
        raise ConfigError(f"preprocessing config: unknown normalise {full['normalise']!r}; "
                          f"choose one of {sorted(NORMALISERS)}")
    if full["mask"] not in MASK_MODES:
        raise ConfigError(f"preprocessing config: mask must be one of {MASK_MODES}, "
                          f"not {full['mask']!r}")
    if full["order"] not in (0, 1, 2, 3, 4, 5):
        raise ConfigError(f"preprocessing config: order must be 0..5, not {full['order']!r}")
    for key in ("crop", "shape"):
        value = full[key]
        if value is not None and (len(value) != 3 or any(int(v) < 1 for v in value)):
            raise ConfigError(f"preprocessing config: {key} must be three positive integers, "
                              f"not {value!r}")
    return full


def config_hash(config: Mapping[str, Any] | None, label_values: Sequence[int] | None = None) -> str:
    """A short hash of the full preprocessing config (and code version)."""
    full = check_config(config)
    if full["labels"] is None and label_values is not None:
        full["labels"] = [int(v) for v in label_values]
    text = json.dumps({"config": full, "version": PREPROCESS_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _with_channels(array: np.ndarray, where: str) -> np.ndarray:
    if array.ndim == 3:
        return array[..., None]
    if array.ndim != 4:
        raise DataError(f"{where}: image must be 3D or 4D (x, y, z[, c]), got shape {array.shape}")
    return array


def _check_grid(other: Volume | None, image: Volume, what: str, where: str) -> None:
    if other is None:
        return
    if other.array.shape[:3] != image.array.shape[:3] or not np.allclose(
            other.affine, image.affine, atol=1e-3):
        raise DataError(f"{other.path or where}: {what} is not on the image's grid "
                        f"({other.array.shape[:3]} vs {image.array.shape[:3]}); resample it first")


def preprocess_subject(
    image: Volume,
    label: Volume | None = None,
    mask: Volume | None = None,
    config: Mapping[str, Any] | None = None,
    label_values: Sequence[int] | None = None,
    subject: str = "",
) -> Preprocessed:
    """Preprocess one subject as described in the module docstring.

    ``label_values`` (the spec's ``[labels]`` values) is used when the config
    has no ``labels`` key. ``subject`` names the subject in errors.
    """
    cfg = check_config(config)
    where = subject or image.path or "subject"
    _check_grid(label, image, "label", where)
    _check_grid(mask, image, "mask", where)
    array = _with_channels(np.asarray(image.array, dtype=np.float32), where)
    shape, spacing = target_grid(array.shape, image.spacing, cfg["spacing"], cfg["shape"])
    img, affine = resample(array, image.affine, shape, spacing, order=cfg["order"])
    lab = None if label is None else resample(np.asarray(label.array), image.affine, shape,
                                             spacing, order=0)[0]
    msk = None
    if mask is not None and cfg["mask"] != "none":
        msk = resample(np.asarray(mask.array) > 0, image.affine, shape, spacing, order=0)[0]
    if msk is None and cfg["mask"] == "auto":
        msk = simple_brain_mask(img, where=where)
    if cfg["crop"] is not None:
        start = crop_start(img.shape, cfg["crop"], cfg["crop_mode"],
                           msk if msk is not None else np.any(img != 0, axis=-1))
        img = window(img, start, cfg["crop"])
        lab = None if lab is None else window(lab, start, cfg["crop"])
        msk = None if msk is None else window(msk, start, cfg["crop"])
        affine = translate_affine(affine, start)
    if cfg["apply_mask"]:
        if msk is None:
            raise DataError(f"{where}: apply_mask is set but there is no mask; give a mask "
                            "file or set mask = \"auto\"")
        img = img * msk[..., None]
    img = normalise(img, cfg["normalise"], mask=msk, where=where, **cfg["normalise_options"])
    values = cfg["labels"] if cfg["labels"] is not None else label_values
    if lab is not None:
        lab = values_to_indices(lab, values, where=label.path or where)
    return Preprocessed(
        image=as_aligned(img, np.float32),  # aligned: TF wraps it without copying
        label=None if lab is None else as_aligned(lab),
        mask=None if msk is None else msk.astype(bool),
        affine=affine,
        spacing=tuple(float(s) for s in spacing),
        subject=subject,
    )
