"""2D slices of a phantom: axial, coronal and sagittal planes as displayed.

A plane is rendered directly (a grid with one axis of length 1), so a
256x256 slice costs about as much as 256x256 voxels, not a whole volume.
Slices follow the radiological display convention of exported JPG/TIFF
slices: axial and coronal images show the subject's right on the image's
left; axial images have anterior at the top; coronal and sagittal images have
superior at the top; sagittal images have anterior on the left.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from brain_tf.data.synthetic.subject import Phantom, render_phantom

PERSPECTIVES = ("AX", "COR", "SAG")
#: World axis normal to each perspective's plane (x: left-right, y: back-front, z: up-down).
NORMAL_AXIS = {"AX": 2, "COR": 1, "SAG": 0}


def plane_axes(perspective: str, position: float, size: Sequence[int],
               fov: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World grid of a ``size`` = (rows, cols) plane at ``position`` mm along its normal,
    covering ``fov`` mm along its longer side, centred on the world origin."""
    if perspective not in NORMAL_AXIS:
        raise ValueError(f"perspective must be one of {PERSPECTIVES}, not {perspective!r}")
    rows, cols = (int(n) for n in size)
    pixel = float(fov) / max(rows, cols)
    line = {n: (np.arange(n) - (n - 1) / 2) * pixel for n in (rows, cols)}
    # In-plane axes in array order (x before y before z): cols then rows.
    axes = [None, None, None]
    normal = NORMAL_AXIS[perspective]
    in_plane = [a for a in range(3) if a != normal]
    axes[in_plane[0]], axes[in_plane[1]] = line[cols], line[rows]
    axes[normal] = np.array([float(position)])
    return tuple(axes)


def to_display(plane: np.ndarray) -> np.ndarray:
    """A rendered plane (one axis of length 1) as an image in display orientation."""
    squeezed = np.squeeze(plane, axis=[i for i, n in enumerate(plane.shape) if n == 1][0])
    return np.ascontiguousarray(squeezed[::-1, ::-1].T)


def axial_display(volume: np.ndarray, k: int) -> np.ndarray:
    """Axial slice ``k`` of an (x, y, z[, c]) RAS volume in display orientation."""
    return np.ascontiguousarray(np.swapaxes(volume[::-1, ::-1, k], 0, 1))


def render_slice(phantom: Phantom, perspective: str, position: float, size: Sequence[int],
                 fov: float, modalities: Sequence[str], rng: np.random.Generator) -> dict:
    """One plane of ``phantom``: ``images`` per modality and ``tumour``/``mask`` maps,
    all 2D in display orientation."""
    out = render_phantom(phantom, plane_axes(perspective, position, size, fov), modalities, rng)
    return {"images": {m: to_display(v) for m, v in out["images"].items()},
            "tumour": to_display(out["tumour"]), "mask": to_display(out["mask"])}


def to_uint8(image: np.ndarray, upper: float) -> np.ndarray:
    """Scale so that ``upper`` maps to 255, clip, and round to 8 bits."""
    scaled = np.asarray(image, np.float32) * np.float32(255.0 / max(float(upper), 1e-6))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
