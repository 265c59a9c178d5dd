"""MR contrasts, scanners and image formation for the phantoms.

Each modality maps the intensity classes of :mod:`anatomy` to relative
signals with the usual orders inside the brain:

- T1 (MPRAGE-like): WM > deep GM > GM > CSF; fat bright, bone dark;
- T1gd: T1 plus gadolinium: enhancing tumour rim and dura bright;
- T2: CSF and eyes brightest, GM > WM, oedema bright;
- FLAIR: CSF dark, GM > WM, oedema brightest;
- DWI (b=1000 trace): CSF and fat dark, cellular tumour bright, low resolution
  and twice the noise.

Per subject and scanner the signals vary: each class of each modality is
scaled by exp(N(0, 0.03)); WM T1 signal falls 6 % and WM T2/FLAIR signal rises
4 % per 60 years of age; periventricular white-matter change adds FLAIR/T2
signal. Image formation: class signal x tissue texture, a partial-volume blur
of about half a voxel, a smooth multiplicative bias field exp(b * field),
Rician noise, and a global intensity scale that differs between scanners and
subjects (the arbitrary units of raw MRI).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from brain_tf.data.synthetic.anatomy import CLASSES, EDEMA, WM, Anatomy
from brain_tf.data.synthetic.fields import Field, blur, random_field, rician
from brain_tf.data.synthetic.geometry import Frame

MODALITIES = ("T1", "T1gd", "T2", "FLAIR", "DWI")

# Relative signal per class, in the order of anatomy.CLASSES:
# air fat muscle bone marrow eye dura csf gm wm deep_gm hippocampus
# edema non_enhancing necrosis enhancing
SIGNAL = {
    "T1": [0, .95, .40, .06, .70, .12, .25, .15, .58, 1.0, .72, .60, .50, .45, .22, .55],
    "T1gd": [0, .95, .50, .06, .72, .12, .80, .16, .62, 1.0, .74, .63, .52, .48, .22, 1.30],
    "T2": [0, .55, .22, .04, .45, 1.0, .30, 1.0, .52, .36, .45, .56, .80, .70, .95, .60],
    "FLAIR": [0, .60, .25, .04, .40, .08, .20, .07, .60, .45, .55, .62, 1.0, .85, .35, .75],
    "DWI": [0, .08, .20, .03, .10, .10, .10, .12, .62, .52, .58, .62, .50, .70, .18, .85],
}
AGE_WM = {"T1": -0.06, "T1gd": -0.06, "T2": 0.04, "FLAIR": 0.04, "DWI": 0.0}
PERIVENTRICULAR = {"T1": -0.10, "T1gd": -0.10, "T2": 0.25, "FLAIR": 0.35, "DWI": 0.05}
EXTRA_BLUR_MM = {"DWI": 2.0}
NOISE_FACTOR = {"DWI": 2.0}


@dataclass
class Scanner:
    """One scan session: intensity scale, noise, bias field, contrast jitter."""

    scale: float
    noise: float
    bias: float
    jitter: dict[str, np.ndarray]
    bias_field: Field = field(repr=False)


def sample_scanner(rng: np.random.Generator, scale: float = 1000.0, noise: float = 0.03,
                   bias: float = 0.12) -> Scanner:
    """Draw a session around a scanner's typical ``scale``, ``noise`` (fraction of WM T1)
    and ``bias`` (sd of the log bias field)."""
    return Scanner(
        scale=float(scale * np.exp(rng.normal(0, 0.25))),
        noise=float(noise * rng.uniform(0.7, 1.3)),
        bias=float(bias),
        jitter={m: np.exp(rng.normal(0, 0.03, len(CLASSES))).astype(np.float32)
                for m in MODALITIES},
        bias_field=random_field(rng, 50.0),
    )


def frame_spacing(frame: Frame) -> tuple[float, float, float]:
    """Grid step per axis (1.0 along axes of length 1)."""
    return tuple(float(a[1] - a[0]) if len(a) > 1 else 1.0 for a in frame.axes)


def render_image(modality: str, classes: np.ndarray, periventricular: np.ndarray,
                 anat: Anatomy, scanner: Scanner, frame: Frame,
                 rng: np.random.Generator, cache: dict | None = None) -> np.ndarray:
    """One modality's image (float32, scanner units) of the classes on ``frame``.

    ``cache`` (a dict kept across the modalities of one grid) holds the texture
    and bias fields so they are sampled once.
    """
    cache = {} if cache is None else cache
    if "texture" not in cache:
        cache["texture"] = anat.fields["texture"].sample(frame.axes)
        cache["bias"] = (np.exp(np.float32(scanner.bias) * scanner.bias_field.sample(frame.axes))
                         if scanner.bias else None)
    if modality not in SIGNAL:
        raise ValueError(f"unknown modality {modality!r}; choose from {MODALITIES}")
    table = np.asarray(SIGNAL[modality], np.float32) * scanner.jitter[modality]
    table[WM] *= 1 + AGE_WM[modality] * max(anat.age - 20, 0) / 60
    image = table[classes]
    if periventricular.any():
        image += PERIVENTRICULAR[modality] * periventricular * table[WM]
    image *= 1 + np.where(classes >= EDEMA, 0.08, 0.03).astype(np.float32) * cache["texture"]
    spacing = frame_spacing(frame)
    extra = EXTRA_BLUR_MM.get(modality, 0.0)
    image = blur(image, [np.hypot(0.45 * s, extra) for s in spacing], spacing)
    if cache["bias"] is not None:
        image *= cache["bias"]
    sigma = scanner.noise * NOISE_FACTOR.get(modality, 1.0)
    image = rician(rng, image, sigma)
    return image * np.float32(scanner.scale)
