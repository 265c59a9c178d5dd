"""Phantom anatomy of one head, driven by age and sex.

The head frame is RAS+ millimetres centred on the intracranial cavity (ICV).
Structures, from the outside in:

- soft tissue (skin/muscle with a bright subcutaneous fat layer) over the
  skull, a face (with eyes, nose and air sinuses) in front and below, a neck;
- the skull (dark bone with a bright marrow layer), then the dura;
- the ICV: a perturbed ellipsoid filled, from its surface inwards, with a
  subarachnoid CSF layer, a folded grey-matter ribbon (CSF-filled sulci along
  the zero-lines of a random field, and the interhemispheric fissure) and white
  matter;
- deep grey matter (thalami, lentiform and caudate nuclei), the hippocampi
  with the temporal horns beside them, and the ventricles.

Generative relations (``a = (age - 20) / 60``; N(0, s) is per-subject noise):

- size: linear scale ``1.0`` (male) or ``0.955`` (female) times exp(N(0, 0.025)),
  each ICV semi-axis times (1 + N(0, 0.02)): intracranial volume about
  1320 +- 125 ml in men and 1170 +- 105 ml in women (13 % smaller). Men also
  have a thicker skull (+1.2 mm) and a 7 % larger face, women a thicker fat
  layer, so the full head reveals sex more easily than the brain alone;
- grey matter: ribbon thickness ``5.6 (1 - 0.15 a) exp(N(0, 0.08))`` mm (+-15 %
  locally);
- CSF: subarachnoid layer ``1.0 + 1.7 a + N(0, 0.35)`` mm; sulcal half-width
  ``0.5 + 1.0 a + N(0, 0.15)`` mm; interhemispheric fissure half-width
  ``1.0 + 1.2 a + N(0, 0.3)`` mm;
- ventricles: linear size ``exp(0.55 a + N(0, 0.13))`` (volume about x4 from 20
  to 80 years), taking their volume from the white matter around them;
- white matter: volume lost to the ventricles, T1 signal down 6 % per 60 years
  (GM/WM contrast falls) and periventricular FLAIR/T2 hyperintensity growing
  from about 45 years (weight ``max(a - 0.4, 0) exp(N(0, 0.3))``);
- hippocampi: linear size ``(1 - 0.06 a - 0.04 a^2) exp(N(0, 0.04))``, about
  3.5 ml each at 20 years.

Measured over 300 subjects aged 18-88 on a 3 mm grid (``bench/bench_synthetic.py``):
corr(age, GM fraction) = -0.90, corr(age, CSF fraction) = +0.95,
corr(age, WM fraction) = -0.16. The irreducible error: an oracle that knows
each subject's true CSF/GM/WM fractions predicts age (linear or cubic
regression, 5-fold cross-validation) with a mean absolute error of 4.9 years,
so a model working from segmented volumes should approach 5-6 years, never 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from brain_tf.data.synthetic.fields import Field, random_field
from brain_tf.data.synthetic.geometry import Frame, rotation_matrix

# Intensity classes (rows of the contrast tables in contrast.py).
CLASSES = ("air", "fat", "muscle", "bone", "marrow", "eye", "dura", "csf", "gm", "wm",
           "deep_gm", "hippocampus", "edema", "non_enhancing", "necrosis", "enhancing")
(AIR, FAT, MUSCLE, BONE, MARROW, EYE, DURA, CSF, GM, WM, DEEP_GM, HIPPOCAMPUS,
 EDEMA, NON_ENHANCING, NECROSIS, ENHANCING) = range(len(CLASSES))

#: Tissue label of each intensity class: 0 background, 1 CSF, 2 GM, 3 WM.
TISSUE_OF_CLASS = np.array([0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 2, 2, 3, 3, 3, 3], np.uint8)

ICV_AXES = np.array([67.0, 84.0, 56.0])   # male mean semi-axes (mm)
SEX_SCALE = {"M": 1.0, "F": 0.955}
FIELD_STEPS = {"icv": 20.0, "head": 24.0, "fold": 6.5, "thickness": 14.0, "texture": 5.0}


def age_units(age: float) -> float:
    """Years past 20 in units of 60 years: 0 at 20, 1 at 80."""
    return (float(age) - 20.0) / 60.0


@dataclass
class Anatomy:
    """The random draw behind one head; render it on any grid with :func:`render_anatomy`.

    Lengths are mm: ``icv`` the ICV semi-axes; ``skull``, ``scalp`` (skin and
    muscle) and ``fat`` layer thicknesses; ``csf`` the subarachnoid layer;
    ``gm`` the cortical ribbon; ``sulcus_width`` the half-width of a sulcus
    and ``sulcus_depth`` its depth; ``fissure`` the half-width of the
    interhemispheric fissure. ``scale`` and ``face`` are linear size factors
    of brain and face, ``ventricles`` and ``hippocampus`` those of these
    structures; ``wm_change`` the weight of periventricular white-matter
    change. ``rotation`` and ``shift`` are the head pose.
    """

    age: float
    sex: str
    scale: float
    icv: np.ndarray
    skull: float
    scalp: float
    fat: float
    face: float
    csf: float
    gm: float
    sulcus_width: float
    sulcus_depth: float
    fissure: float
    ventricles: float
    hippocampus: float
    wm_change: float
    rotation: np.ndarray
    shift: np.ndarray
    fields: dict[str, Field] = field(repr=False, default_factory=dict)


def sample_anatomy(rng: np.random.Generator, age: float, sex: str,
                   pose: bool = True) -> Anatomy:
    """Draw one head for a subject of ``age`` (years) and ``sex`` ("M" or "F")."""
    if sex not in SEX_SCALE:
        raise ValueError(f"sex must be 'M' or 'F', not {sex!r}")
    a = age_units(age)
    male = sex == "M"
    noise = rng.standard_normal(16)
    scale = SEX_SCALE[sex] * np.exp(0.025 * noise[0])
    icv = ICV_AXES * scale * (1 + 0.02 * noise[1:4])
    angles = np.clip(3.0 * noise[13:16], -8, 8) if pose else np.zeros(3)
    shift = np.clip(rng.normal(0, 3.0, 3), -8, 8) if pose else np.zeros(3)
    return Anatomy(
        age=float(age), sex=sex, scale=float(scale), icv=icv,
        skull=float(5.5 + 1.2 * male + 0.5 * noise[4]),
        scalp=float(max(2.0, 4.0 + 0.6 * noise[5])),
        fat=float(max(1.0, 2.5 + 1.5 * (not male) + 0.6 * noise[6])),
        face=float(scale * (1.07 if male else 1.0) * np.exp(0.03 * noise[7])),
        csf=float(max(0.5, 1.0 + 1.7 * a + 0.35 * noise[8])),
        gm=float(5.6 * (1 - 0.15 * a) * np.exp(0.08 * noise[9])),
        sulcus_width=float(max(0.2, 0.5 + 1.0 * a + 0.15 * noise[10])),
        sulcus_depth=float(14.0 * scale),
        fissure=float(max(0.8, 1.0 + 1.2 * a + 0.3 * noise[11])),
        ventricles=float(np.exp(0.55 * a + 0.13 * noise[12])),
        hippocampus=float((1 - 0.06 * a - 0.04 * a * a) * np.exp(0.04 * rng.standard_normal())),
        wm_change=float(max(a - 0.4, 0.0) * np.exp(0.3 * rng.standard_normal())),
        rotation=rotation_matrix(angles), shift=shift,
        fields={name: random_field(rng, step) for name, step in FIELD_STEPS.items()},
    )


def ellipsoid_distance(u, centre, semi, rotation=None) -> np.ndarray:
    """Approximate signed distance (mm) to an ellipsoid surface; negative inside.

    ``(r - 1) / |grad r|`` with ``r`` the normalised radius: exact on the
    surface and a close estimate within a few mm of it.
    """
    v = [u[i] - np.float32(centre[i]) for i in range(3)]
    if rotation is not None:
        r = np.asarray(rotation, np.float32)
        v = [r[0, i] * v[0] + r[1, i] * v[1] + r[2, i] * v[2] for i in range(3)]
    q = [v[i] / np.float32(semi[i]) for i in range(3)]
    rad = np.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2])
    g = [q[i] / np.float32(semi[i]) for i in range(3)]
    grad = np.sqrt(g[0] * g[0] + g[1] * g[1] + g[2] * g[2])
    ratio = np.where(grad > 1e-9, rad / np.maximum(grad, 1e-9), np.float32(min(semi)))
    return (rad - 1) * ratio


@dataclass
class AnatomyMaps:
    """An anatomy rendered on a grid."""

    classes: np.ndarray          # uint8 intensity class per voxel (see CLASSES)
    tissue: np.ndarray           # uint8 0 background, 1 CSF, 2 GM, 3 WM
    hippocampus: np.ndarray      # uint8 0 background, 1 right, 2 left
    mask: np.ndarray             # bool intracranial (brain) mask
    periventricular: np.ndarray  # float32 0..1 white-matter change weight


def _head(anat: Anatomy, u, d_icv, head_field) -> np.ndarray:
    """Classes outside the ICV: soft tissue, fat, bone, marrow, eyes, sinuses."""
    s, f = anat.scale, anat.face
    d_scalp = d_icv - (anat.skull + anat.scalp + anat.fat) - 2.5 * head_field
    d_face = ellipsoid_distance(u, (0, 60 * f, -56 * f), (60 * f, 44 * f, 50 * f))
    d_nose = ellipsoid_distance(u, (0, 104 * f, -50 * f), (9 * f, 12 * f, 17 * f))
    d_neck = np.maximum(ellipsoid_distance(u, (0, -12 * s, 0), (46 * s, 42 * s, 1e4)),
                        u[2] + 45 * s)
    d_head = np.minimum(np.minimum(d_scalp, d_face), np.minimum(d_nose, d_neck))
    classes = np.zeros(d_icv.shape, np.uint8)
    classes[d_head < 0] = MUSCLE
    classes[(d_head < 0) & (d_head > -anat.fat)] = FAT
    for side in (1, -1):
        sinus = ellipsoid_distance(u, (side * 22 * f, 72 * f, -72 * f), (11 * f, 14 * f, 13 * f))
        classes[sinus < 0] = AIR
        eye = ellipsoid_distance(u, (side * 32 * f, 84 * f, -38 * f), (11.5, 11.5, 11.5))
        classes[eye < 0] = EYE
    bone = (d_icv >= 0) & (d_icv < anat.skull)
    classes[bone] = BONE
    classes[bone & (d_icv > 0.3 * anat.skull) & (d_icv < 0.7 * anat.skull)] = MARROW
    classes[(d_icv >= 0) & (d_icv < 1.0)] = DURA
    return classes


def _cortex(anat: Anatomy, frame: Frame, u, d_icv) -> np.ndarray:
    """Tissue classes inside the ICV: CSF layer and sulci, folded GM ribbon, WM.

    Sulci are clefts of CSF along the zero-surfaces of the ``fold`` field
    (distance to them ~ |g| / |grad g|), reaching ``sulcus_depth`` mm below
    the surface; the interhemispheric fissure is a CSF sheet at the midline
    above the corpus callosum. Grey matter is everything within ``gm`` mm of
    CSF, white matter the rest.
    """
    s = anat.scale
    depth = -d_icv
    fold = anat.fields["fold"]
    g = fold.sample(frame.axes)
    slope = np.sqrt(sum(fold.sample(frame.axes, i) ** 2 for i in range(3)))
    sheet = np.abs(g) / np.maximum(slope, np.float32(0.02)) - np.float32(anat.sulcus_width)
    below = np.maximum(depth - np.float32(anat.sulcus_depth), 0)
    cleft = np.where(sheet < 0, np.where(below > 0, below, sheet),
                     np.sqrt(sheet * sheet + below * below))
    dist = np.minimum(depth - np.float32(anat.csf), cleft)
    # the fissure reaches down to an arch over the corpus callosum (20 mm above the
    # centre) that falls away towards the frontal and occipital poles
    fissure = u[2] > np.float32(20 * s) - np.float32(0.02 / s) * u[1] * u[1]
    dist = np.where(fissure, np.minimum(dist, np.abs(u[0]) - np.float32(anat.fissure)), dist)
    gm = anat.gm * (1 + 0.15 * anat.fields["thickness"].sample(frame.axes))
    return np.where(dist < 0, CSF, np.where(dist < gm, GM, WM)).astype(np.uint8)


def _structures(anat: Anatomy):
    """Deep structures: (class, centre, semi-axes, rotation, hippocampus label)."""
    s, v, h = anat.scale, anat.ventricles, anat.hippocampus * anat.scale
    tilt = rotation_matrix((25, 0, 0))  # long axis of the hippocampus: anterior end lower
    out = []
    for side in (1, -1):  # +1: subject's right (+x), -1: left
        label = 1 if side > 0 else 2
        out += [
            (DEEP_GM, (side * 11 * s, -12 * s, -7 * s), (8 * s, 14 * s, 9 * s), None, 0),
            (DEEP_GM, (side * 24 * s, 4 * s, -15 * s), (6 * s, 15 * s, 10 * s), None, 0),
            (DEEP_GM, (side * 13 * s, 14 * s, -5 * s), (5 * s, 10 * s, 8 * s), None, 0),
            (HIPPOCAMPUS, (side * 27 * s, -20 * s, -30 * s), (6 * h, 20 * h, 7 * h), tilt,
             label),
            (CSF, (side * 29 * s, -19 * s, -30 * s + 7 * h + 2.2 * v * s),
             (2.0 * v * s, 13 * s, 2.2 * v * s), tilt, 0),
        ]
    return out


def _ventricles(anat: Anatomy, u) -> np.ndarray:
    """Distance-like field of the lateral and third ventricles (negative inside)."""
    s, v = anat.scale, anat.ventricles
    half = 5.0 * v * s
    d = np.full(u[0].shape, np.inf, np.float32)
    for side in (1, -1):
        bend = (u[0], u[1], u[2] + np.float32(0.012 / s) * u[1] * u[1])  # horns curve down
        d = np.minimum(d, ellipsoid_distance(bend, (side * (1.2 * s + half), 0, 8 * s),
                                             (half, 26 * s * np.sqrt(v), 7.0 * v * s)))
    return np.minimum(d, ellipsoid_distance(u, (0, -6 * s, -8 * s), (1.5 * v * s, 11 * s, 8 * s)))


def render_anatomy(anat: Anatomy, frame: Frame, head: bool = True) -> AnatomyMaps:
    """Render ``anat`` on ``frame``'s grid. ``head=False`` skips everything outside the ICV."""
    u = frame.local()
    d_icv = ellipsoid_distance(u, (0, 0, 0), anat.icv) + 2.0 * anat.fields["icv"].sample(frame.axes)
    mask = d_icv < 0
    if head:
        classes = _head(anat, u, d_icv, anat.fields["head"].sample(frame.axes))
    else:
        classes = np.zeros(frame.shape, np.uint8)
    classes[mask] = _cortex(anat, frame, u, d_icv)[mask]
    hippocampus = np.zeros(frame.shape, np.uint8)
    for cls, centre, semi, rot, label in _structures(anat):
        box = frame.box(centre, float(max(semi)) + 3)
        if box is None:
            continue
        sub = frame.sub(box)
        inside = (ellipsoid_distance(sub.local(), centre, semi, rot) < 0) & mask[box]
        classes[box][inside] = cls
        hippocampus[box][inside] = label
    periventricular = np.zeros(frame.shape, np.float32)
    box = frame.box((0, 0, 0), 60 * anat.scale)
    if box is not None:
        sub = frame.sub(box)
        d_vent = _ventricles(anat, sub.local())
        inside = (d_vent < 0) & mask[box]
        cls = classes[box]
        cls[inside] = CSF
        hippocampus[box][inside] = 0
        if anat.wm_change > 0:
            weight = np.clip(1 - d_vent / 6.0, 0, 1) * np.float32(anat.wm_change)
            periventricular[box] = np.where(cls == WM, weight, 0)
    return AnatomyMaps(classes=classes, tissue=TISSUE_OF_CLASS[classes], hippocampus=hippocampus,
                       mask=mask, periventricular=periventricular)
