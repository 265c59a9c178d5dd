"""A simple foreground ("brain") mask computed from the image itself.

This is threshold + morphology, not skull stripping: it separates the head
(or an already skull-stripped brain) from the air around it, which is what
masked normalisation and bounding-box cropping need. For a true brain mask
use a dedicated tool (e.g. HD-BET) and give its output as the mask file.

Steps: average the channels, light Gaussian smoothing, Otsu threshold over
the voxels > 0, binary opening to cut thin bridges, keep the largest connected
component, close small gaps and fill holes slice by slice and in 3D.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi
from skimage.filters import threshold_otsu

from brain_tf.errors import DataError


def simple_brain_mask(
    image: np.ndarray,
    smooth_sigma: float = 1.0,
    threshold_scale: float = 1.0,
    opening_radius: int = 1,
    closing_radius: int = 2,
    where: str = "image",
) -> np.ndarray:
    """Boolean foreground mask of a 3D image (x, y, z) or (x, y, z, c).

    ``threshold_scale`` multiplies the Otsu threshold (below 1 keeps more of
    the dark tissue). Raises :class:`DataError` when nothing is above it.
    """
    x = np.asarray(image, dtype=np.float32)
    if x.ndim == 4:
        x = x.mean(axis=-1)
    if x.ndim != 3:
        raise DataError(f"{where}: brain mask needs a 3D image, got shape {image.shape}")
    if smooth_sigma > 0:
        x = ndi.gaussian_filter(x, smooth_sigma)
    positive = x[x > 0]
    if positive.size < 2 or positive.min() == positive.max():
        raise DataError(f"{where}: image is empty or constant; cannot compute a brain mask")
    mask = x > threshold_otsu(positive) * threshold_scale
    if opening_radius > 0:
        mask = ndi.binary_opening(mask, _ball(opening_radius))
    labels, count = ndi.label(mask)
    if count == 0:
        raise DataError(f"{where}: no foreground above the threshold; cannot compute a brain mask")
    if count > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == int(sizes.argmax())
    if closing_radius > 0:
        pad = closing_radius
        closed = ndi.binary_closing(np.pad(mask, pad), _ball(closing_radius))
        mask = closed[pad:-pad, pad:-pad, pad:-pad]
    for z in range(mask.shape[2]):
        mask[:, :, z] = ndi.binary_fill_holes(mask[:, :, z])
    return ndi.binary_fill_holes(mask)


def _ball(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2) <= radius**2
