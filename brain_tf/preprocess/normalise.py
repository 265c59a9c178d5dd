"""Intensity normalisation schemes: small named functions in a registry.

Every scheme has the signature ``fn(image, mask=None, **options) -> image``
where ``image`` is channels-last with the channel axis present, e.g.
(x, y, z, c) or (rows, cols, c), and ``mask`` a boolean array of the image's
spatial shape (or ``None``). Statistics are per channel. Select one by
name with :func:`normalise`; add one with :func:`register_normaliser`.

=================  ===========================================================
name               what it does
=================  ===========================================================
``zscore_mask``    (x - mean) / std over the mask's voxels; outside the mask 0
``zscore_nonzero`` (x - mean) / std over the voxels > 0 (``keep_zero``: zeros
                   stay 0, e.g. the fill of a resampled or skull-stripped image)
``zscore_slice``   (x - mean) / std per channel and per z-slice; a slice whose
                   std is 0 becomes 0
``percentile``     clip to the [lower, upper] percentiles (over the mask when
                   given), then rescale to [0, 1]
``imagenet``       2D RGB in [0, 1] (uint8 is divided by 255), then ImageNet
                   mean/std per channel
``none``           unchanged (cast to float32)
=================  ===========================================================
"""

from __future__ import annotations

import inspect
from typing import Callable

import numpy as np

from brain_tf.errors import ConfigError, DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

NORMALISERS: dict[str, Callable] = {}


def register_normaliser(name: str):
    """Decorator adding a normalisation function to :data:`NORMALISERS`."""

    def add(fn):
        NORMALISERS[name] = fn
        return fn

    return add


def _safe_div(centred: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``centred / std`` with 0 where ``std`` is 0 (a constant region)."""
    out = np.zeros_like(centred)
    np.divide(centred, std, out=out, where=np.broadcast_to(std > 0, centred.shape))
    return out


def _float_channels(image: np.ndarray) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)


@register_normaliser("zscore_mask")
def zscore_mask(image, mask=None, where: str = "image"):
    """Z-score per channel over ``mask``; voxels outside the mask are set to 0."""
    if mask is None:
        raise DataError(f"{where}: normalisation 'zscore_mask' needs a brain mask; give one "
                        "or set mask = \"auto\" in the preprocessing config")
    x = _float_channels(image)
    m = np.asarray(mask, bool)
    if not m.any():
        raise DataError(f"{where}: the brain mask is empty; check the mask file")
    values = x[m]  # (n, channels)
    mean = values.mean(axis=0, dtype=np.float64).astype(np.float32)
    std = values.std(axis=0, dtype=np.float64).astype(np.float32)
    out = _safe_div(x - mean, std)
    out[~m] = 0.0
    return out


@register_normaliser("zscore_nonzero")
def zscore_nonzero(image, mask=None, keep_zero: bool = True, where: str = "image"):
    """Z-score per channel with mean/std over the voxels > 0.

    With ``keep_zero`` (default) voxels that are exactly 0 stay 0, so padding
    and skull-stripped background remain the zero the augmentation fills with.
    """
    x = _float_channels(image)
    out = np.zeros_like(x)
    for c in range(x.shape[-1]):
        channel = x[..., c]
        positive = channel > 0
        if not positive.any():
            raise DataError(f"{where}: channel {c} has no voxel > 0; cannot z-score it "
                            "(empty or inverted image?)")
        values = channel[positive]
        mean = np.float32(values.mean(dtype=np.float64))
        std = np.float32(values.std(dtype=np.float64))
        out[..., c] = (channel - mean) / std if std > 0 else 0.0
        if keep_zero:
            out[..., c][channel == 0] = 0.0
    return out


@register_normaliser("zscore_slice")
def zscore_slice(image, mask=None, where: str = "image"):
    """Standardise each channel of each z-slice (axis 2) on its own; std 0 gives 0."""
    x = _float_channels(image)
    if x.ndim != 4:
        raise DataError(f"{where}: 'zscore_slice' needs a 3D image (x, y, z[, c]), got {x.shape}")
    mean = x.mean(axis=(0, 1), keepdims=True, dtype=np.float64).astype(np.float32)
    std = x.std(axis=(0, 1), keepdims=True, dtype=np.float64).astype(np.float32)
    return _safe_div(x - mean, std)


@register_normaliser("percentile")
def percentile(image, mask=None, lower: float = 0.5, upper: float = 99.5, within_mask=True,
               where: str = "image"):
    """Clip each channel to its [lower, upper] percentiles (of the voxels inside ``mask``,
    or of all voxels without one or with ``within_mask=False``), then rescale to [0, 1]."""
    if not 0 <= lower < upper <= 100:
        raise ConfigError(f"percentile normalisation needs 0 <= lower < upper <= 100, "
                          f"got lower={lower}, upper={upper}")
    x = _float_channels(image)
    out = np.zeros_like(x)
    m = None if mask is None or not within_mask else np.asarray(mask, bool)
    for c in range(x.shape[-1]):
        channel = x[..., c]
        values = channel[m] if m is not None and m.any() else channel
        lo, hi = np.percentile(values, [lower, upper])
        if hi > lo:
            out[..., c] = (np.clip(channel, lo, hi) - lo) / (hi - lo)
    return out


@register_normaliser("imagenet")
def imagenet(image, mask=None, where: str = "image"):
    """RGB (..., 3) in [0, 1] (uint8 divided by 255) to ImageNet mean/std units."""
    x = np.asarray(image)
    if x.shape[-1] != 3:
        raise DataError(f"{where}: 'imagenet' normalisation needs 3 channels (RGB), "
                        f"got shape {x.shape}")
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    return (x - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)


@register_normaliser("none")
def identity(image, mask=None, where: str = "image"):
    """No normalisation (a float32 copy)."""
    return _float_channels(image).copy()


def normalise(image, scheme: str, mask=None, where: str = "image", **options) -> np.ndarray:
    """Apply the registered scheme ``scheme`` (see the module docstring)."""
    try:
        fn = NORMALISERS[scheme]
    except KeyError:
        raise ConfigError(f"unknown normalisation {scheme!r}; choose one of "
                          f"{sorted(NORMALISERS)}") from None
    try:
        inspect.signature(fn).bind(image, mask, where=where, **options)
    except TypeError as exc:
        raise ConfigError(f"normalisation {scheme!r}: bad options {options} ({exc})") from None
    return fn(image, mask, where=where, **options)
