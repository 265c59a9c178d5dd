"""MR contrasts, scanners and image formation for the phantoms.

Each modality maps the fine labels of :mod:`.labels` to relative signals,
chosen from the usual relaxation behaviour of each tissue (T1 white matter
brightest in the brain, CSF darkest; T2 and PD the reverse, FLAIR with CSF
suppressed; b=1000 diffusion with free water dark):

- T1 (MPRAGE-like): WM > pallidum and brainstem > thalamus > putamen >
  caudate > cortex > CSF (a third of WM); corpus callosum slightly brighter
  than other white matter; fat and marrow bright, bone dark;
- T1gd: T1 plus gadolinium: enhancing tumour rim, dura and muscle brighter;
- T2: CSF and eyes brightest, GM > WM, the iron-rich pallidum (and less the
  putamen) dark, oedema bright;
- FLAIR: CSF dark, GM > WM, hippocampi slightly bright, oedema brightest;
- PD: CSF > GM > WM with little contrast;
- DWI (b=1000 trace): CSF and fat dark, cellular tumour bright, low resolution
  and twice the noise.

Per subject and scanner the signals vary: each label of each modality is
scaled by exp(N(0, 0.03)); white-matter T1 signal falls 6 % and T2/FLAIR
signal rises 4 % per 60 years of age; periventricular white-matter change adds
FLAIR/T2 signal. Image formation: label signal x tissue texture, a
partial-volume blur (a point spread of sd 0.5 voxel), a smooth
multiplicative bias field exp(b * field), Rician noise, and a global
intensity scale that differs between scanners and subjects (the arbitrary
units of raw MRI).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from brain_tf.data.synthetic.fields import Field, blur, random_field, rician
from brain_tf.data.synthetic.geometry import Frame
from brain_tf.data.synthetic.labels import (
    BRAINSTEM, CEREBELLAR_WM, CEREBRAL_WM, CORPUS_CALLOSUM, LABELS, TUMOUR_LABELS)

MODALITIES = ("T1", "T1gd", "T2", "FLAIR", "PD", "DWI")

_TABLE = """
background                 0     0     0     0     0     0
skin_muscle                .42   .50   .25   .28   .45   .20
fat                        1.05  1.05  .60   .65   .90   .08
skull                      .06   .06   .04   .04   .05   .03
marrow                     .80   .82   .50   .45   .75   .10
eyes                       .14   .15   1.0   .08   1.0   .10
other_head                 .38   .46   .24   .26   .45   .20
dura                       .28   .80   .30   .22   .35   .10
extracerebral_csf          .36   .37   1.0   .07   1.0   .12
lateral_ventricles         .34   .35   1.0   .06   1.0   .11
third_fourth_ventricles    .34   .35   1.0   .06   1.0   .11
cerebral_cortex            .72   .74   .55   .62   .84   .62
cerebral_wm                1.0   1.0   .36   .45   .68   .52
corpus_callosum            1.03  1.03  .33   .43   .65   .55
cerebellar_cortex          .70   .72   .56   .60   .84   .64
cerebellar_wm              .95   .96   .37   .46   .68   .52
brainstem                  .90   .91   .42   .50   .72   .55
thalamus                   .86   .87   .44   .52   .76   .58
caudate                    .74   .76   .52   .58   .82   .60
putamen                    .78   .80   .47   .55   .80   .58
pallidum                   .90   .91   .36   .46   .72   .55
right_hippocampus          .70   .72   .58   .66   .86   .62
left_hippocampus           .70   .72   .58   .66   .86   .62
amygdala                   .72   .74   .56   .64   .84   .62
edema                      .52   .54   .80   1.0   .95   .50
non_enhancing              .46   .50   .70   .85   .90   .70
necrosis                   .22   .22   .95   .35   1.0   .18
enhancing                  .56   1.50  .60   .75   .85   .85
"""


def _signals() -> dict[str, np.ndarray]:
    rows = [line.split() for line in _TABLE.strip().splitlines()]
    if [r[0] for r in rows] != list(LABELS):
        raise AssertionError("contrast table rows must follow labels.LABELS")
    values = np.array([[float(v) for v in r[1:]] for r in rows], np.float32)
    return {m: values[:, i] for i, m in enumerate(MODALITIES)}


#: Relative signal per fine label (index = label value), per modality.
SIGNAL = _signals()
WHITE_MATTER = (CEREBRAL_WM, CORPUS_CALLOSUM, CEREBELLAR_WM, BRAINSTEM)
AGE_WM = {"T1": -0.06, "T1gd": -0.06, "T2": 0.04, "FLAIR": 0.04, "PD": 0.03, "DWI": 0.0}
PERIVENTRICULAR = {"T1": -0.10, "T1gd": -0.10, "T2": 0.25, "FLAIR": 0.35, "PD": 0.15,
                   "DWI": 0.05}
#: Gaussian sd (voxels) of the point spread: voxel averaging and k-space truncation.
PSF_VOXELS = 0.5
EXTRA_BLUR_MM = {"DWI": 2.0}
NOISE_FACTOR = {"DWI": 2.0}
TEXTURE = np.full(len(LABELS), 0.03, np.float32)
TEXTURE[list(TUMOUR_LABELS)] = 0.08


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
        jitter={m: np.exp(rng.normal(0, 0.03, len(LABELS))).astype(np.float32)
                for m in MODALITIES},
        bias_field=random_field(rng, 50.0),
    )


def frame_spacing(frame: Frame) -> tuple[float, float, float]:
    """Grid step per axis (1.0 along axes of length 1)."""
    return tuple(float(a[1] - a[0]) if len(a) > 1 else 1.0 for a in frame.axes)


def render_image(modality: str, labels: np.ndarray, periventricular: np.ndarray,
                 anat, scanner: Scanner, frame: Frame,
                 rng: np.random.Generator, cache: dict | None = None) -> np.ndarray:
    """One modality's image (float32, scanner units) of the fine labels on ``frame``.

    ``cache`` (a dict kept across the modalities of one grid) holds the texture
    and bias fields so they are sampled once.
    """
    cache = {} if cache is None else cache
    if modality not in SIGNAL:
        raise ValueError(f"unknown modality {modality!r}; choose from {MODALITIES}")
    if "texture" not in cache:
        cache["texture"] = anat.fields["texture"].sample(frame.axes)
        cache["bias"] = (np.exp(np.float32(scanner.bias) * scanner.bias_field.sample(frame.axes))
                         if scanner.bias else None)
    table = SIGNAL[modality] * scanner.jitter[modality]
    table[list(WHITE_MATTER)] *= 1 + AGE_WM[modality] * max(anat.age - 20, 0) / 60
    image = table[labels]
    if periventricular.any():
        image += PERIVENTRICULAR[modality] * periventricular * table[CEREBRAL_WM]
    image *= 1 + TEXTURE[labels] * cache["texture"]
    spacing = frame_spacing(frame)
    extra = EXTRA_BLUR_MM.get(modality, 0.0)
    image = blur(image, [np.hypot(PSF_VOXELS * s, extra) for s in spacing], spacing)
    if cache["bias"] is not None:
        image *= cache["bias"]
    sigma = scanner.noise * NOISE_FACTOR.get(modality, 1.0)
    image = rician(rng, image, sigma)
    return image * np.float32(scanner.scale)
