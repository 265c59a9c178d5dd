"""The one labelled real MRI available offline: the MNI ICBM152 2009a template (nilearn).

For evaluation only (nothing in brain_tf is trained or fitted on it). The template is a
1 mm, 197x233x189, skull-stripped average T1 of 152 young adults with grey- and
white-matter probability maps (uint8, 0-255). Its reference labels here: background /
CSF / GM / WM by argmax, with CSF = clip(1 - gm - wm) inside ``T1 > 0.2`` (T1 scaled to
0-1) and the brain mask ``T1 > 0.2``.

Variants test robustness with fixed, hand-written transforms that use the image alone
(never the labels): other contrasts (intensity remaps, monotone and not), thick slices,
a bias field, noise, a rotated head, a cropped field of view. Each gives a
:class:`~brain_tf.io.Volume` and the reference labels on its own grid.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.ndimage as ndi

from brain_tf.errors import DataError
from brain_tf.io import Volume


@dataclasses.dataclass
class Reference:
    """A real scan with reference labels on its grid (0 background, 1 CSF, 2 GM, 3 WM)."""

    image: Volume
    tissue: np.ndarray
    brain: np.ndarray


def _read(path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    img = nib.load(str(path))
    return np.asarray(img.dataobj, np.float32) / 255.0, img.affine


def mni_reference(step: int = 1) -> Reference:
    """The MNI T1 and its labels, every ``step``-th voxel (``step=2``: a 2 mm version)."""
    try:
        from nilearn import datasets
    except ImportError:
        raise DataError("the MNI ICBM152 template comes with nilearn: pip install nilearn "
                        "(it is in brain_tf's test extra)") from None
    t1, affine = _read(datasets.MNI152_FILE_PATH)
    gm, _ = _read(datasets.GM_MNI152_FILE_PATH)
    wm, _ = _read(datasets.WM_MNI152_FILE_PATH)
    cut = (slice(None, None, step),) * 3
    t1, gm, wm = t1[cut], gm[cut], wm[cut]
    affine = affine @ np.diag([step, step, step, 1.0])
    brain = t1 > 0.2
    csf = np.where(brain, np.clip(1 - gm - wm, 0, 1), 0)
    tissue = np.argmax(np.stack([~brain, csf, gm, wm]), axis=0).astype(np.uint8)
    return Reference(Volume(t1, affine, path="MNI152_T1_2009a"), tissue, brain)


# ------------------------------------------------------------------------------ variants
def _unit(t1: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """The image scaled to 0-1 between its 1st and 99th percentile inside the brain."""
    lo, hi = np.percentile(t1[brain], [1, 99])
    return np.clip((t1 - lo) / (hi - lo), 0, 1)


#: Fixed remaps of the T1's intensity ``u`` (0-1 inside the brain: dark CSF, mid grey
#: matter, bright white matter) into other contrasts; they read the image alone.
CONTRASTS = {
    "t1": lambda u: u,
    "t2_like": lambda u: 1.0 - u,                       # reversed: CSF bright, WM dark
    "gamma_2": lambda u: u ** 2,                        # monotone but strongly non-linear
    "v_shaped": lambda u: np.where(u < 0.6, 2.5 * (0.6 - u), 1.5 * (u - 0.6)),  # GM darkest
}


def contrast(ref: Reference, name: str) -> Reference:
    """The template in another contrast: a fixed remap of its T1 intensities (outside the
    brain stays 0)."""
    u = _unit(ref.image.array, ref.brain)
    image = np.where(ref.brain, CONTRASTS[name](u), 0.0).astype(np.float32)
    return dataclasses.replace(ref, image=ref.image.with_array(image))


def thick_slices(ref: Reference, mm: float = 5.0, axis: int = 2) -> Reference:
    """Slices ``mm`` thick along ``axis``: the template averaged over each slab and stored
    on that coarser grid (the labels stay on the fine grid's centres of each slab)."""
    spacing = ref.image.spacing[axis]
    step = max(1, int(round(mm / spacing)))
    n = ref.image.array.shape[axis] // step
    def slabs(a, reduce):
        moved = np.moveaxis(a[(slice(None),) * axis + (slice(0, n * step),)], axis, 0)
        return np.moveaxis(reduce(moved.reshape((n, step) + moved.shape[1:])), 0, axis)
    image = slabs(ref.image.array, lambda s: s.mean(axis=1)).astype(np.float32)
    centre = step // 2
    tissue = slabs(ref.tissue, lambda s: s[:, centre])
    brain = slabs(ref.brain, lambda s: s[:, centre])
    scale = np.eye(4)
    scale[axis, axis] = step
    scale[axis, 3] = (step - 1) / 2.0
    return Reference(Volume(image, ref.image.affine @ scale, path=f"{ref.image.path}_thick"),
                     tissue, brain)


def bias_field(ref: Reference, strength: float = 0.4) -> Reference:
    """A smooth multiplicative field from 1 - strength/2 to 1 + strength/2 across the head
    (a linear ramp in x and z, then squared for curvature)."""
    shape = ref.image.array.shape
    x = np.linspace(-1, 1, shape[0])[:, None, None]
    z = np.linspace(-1, 1, shape[2])[None, None, :]
    ramp = (0.6 * x + 0.4 * z + 0.3 * x * z) / 1.3
    field = 1.0 + 0.5 * strength * ramp
    return dataclasses.replace(ref, image=ref.image.with_array(
        (ref.image.array * field).astype(np.float32)))


def noise(ref: Reference, sigma: float = 0.04, seed: int = 0) -> Reference:
    """Rician noise of ``sigma`` (times the brain's 99th percentile) everywhere."""
    rng = np.random.default_rng(seed)
    scale = float(np.percentile(ref.image.array[ref.brain], 99)) * sigma
    a = ref.image.array
    noisy = np.sqrt((a + rng.normal(0, scale, a.shape)) ** 2 + rng.normal(0, scale, a.shape) ** 2)
    return dataclasses.replace(ref, image=ref.image.with_array(noisy.astype(np.float32)))


def rotated(ref: Reference, degrees: float = 15.0, axes=(1, 2)) -> Reference:
    """The head rotated in the voxel array (image linear, labels nearest), on the same
    affine: a tilted head as a scanner would store it."""
    def turn(a, order):
        return ndi.rotate(a, degrees, axes=axes, reshape=False, order=order, mode="constant")
    image = turn(ref.image.array, 1).astype(np.float32)
    return Reference(ref.image.with_array(image), turn(ref.tissue, 0), turn(ref.brain, 0) > 0)


def cropped(ref: Reference, top_mm: float = 25.0, bottom_mm: float = 35.0) -> Reference:
    """A partial field of view: ``top_mm`` cut off above and ``bottom_mm`` below (z)."""
    spacing = ref.image.spacing[2]
    lo, hi = int(round(bottom_mm / spacing)), ref.image.array.shape[2] - int(round(top_mm / spacing))
    shift = np.eye(4)
    shift[2, 3] = lo
    cut = (slice(None), slice(None), slice(lo, hi))
    return Reference(Volume(ref.image.array[cut], ref.image.affine @ shift,
                            path=f"{ref.image.path}_cropped"), ref.tissue[cut], ref.brain[cut])


VARIANTS = {
    "thick_5mm": thick_slices, "bias_field": bias_field, "noise": noise,
    "rotated_15deg": rotated, "cropped_fov": cropped,
}
