"""Phantom anatomy of one head, driven by age and sex.

Structures are defined in atlas coordinates (see :mod:`.atlas`) and drawn
on any grid; each subject differs by size, a smooth random deformation, a
left-right asymmetry, its own random folding, and the age effects below.
From the outside in:

- head (:mod:`.head`): skin, fat, muscle, skull with marrow, dura; face,
  eyes, sinuses, neck with airway and vertebrae;
- intracranial cavity: the brain's hull plus a thin CSF layer (the cavity,
  like the skull, does not change with age; the brain shrinks inside it);
- cerebrum and cerebellum (:mod:`.cortex`): folded cortical ribbons over white
  matter that follows every gyrus; interhemispheric and Sylvian fissures;
  cerebellar folia over branching cerebellar white matter;
- deep structures (:mod:`.structures`): brainstem running into the spinal
  canal, corpus callosum, fornix, thalami, caudate, putamen, pallidum,
  amygdalae, hippocampi, and the ventricles (lateral with frontal, occipital
  and temporal horns, third and fourth, aqueduct).

The result is a fine label map (:mod:`.labels`) and the maps derived from it.

Generative relations (``a = (age - 20) / 60``; N(0, s) is per-subject noise):

- size: linear scale ``0.95`` (male) or ``0.907`` (female, 4.5 % less) of the
  atlas times exp(N(0, 0.025)), each axis times (1 + N(0, 0.02)), one
  hemisphere (1 + N(0, 0.015)) larger; a smooth displacement of sd
  ``2 exp(N(0, 0.2))`` mm on a 40 mm scale (0.6 of that across the midline).
  Men also have a thicker skull (+1.2 mm) and a 7 % larger face, women a
  thicker fat layer, so the full head reveals sex more easily than the brain
  alone;
- cortex: thickness ``3.0 (1 - 0.12 a) exp(N(0, 0.06))`` mm (+-15 % locally;
  the cerebellar cortex is 0.8 of it);
- CSF: the brain surface retreats ``max(1.3 a + N(0, 0.3), 0)`` mm from the
  cavity (which it fills but for a 0.8 mm layer when young; the cerebellum
  retreats half as far); sulcal half-width ``max(0.1 + 0.15 a + 0.35 a^2 +
  N(0, 0.1), 0.03)`` mm; interhemispheric and Sylvian fissure half-width
  ``max(0.5 + 0.8 a + N(0, 0.2), 0.3)`` mm;
- ventricles: widths times ``exp(0.65 a + N(0, 0.13))`` (each side a further
  exp(N(0, 0.08))), taking their room from the white and deep grey matter
  round them: lateral ventricles about 10 ml in a young man, 3.5 times that
  at 80;
- white matter: T1 signal down 6 % per 60 years (GM/WM contrast falls) and
  periventricular FLAIR/T2 hyperintensity growing from about 45 years
  (weight ``max(a - 0.4, 0) exp(N(0, 0.3))``);
- hippocampi: widths times ``(1 - 0.06 a - 0.04 a^2) exp(N(0, 0.04))`` (each
  side a further exp(N(0, 0.03))), about 3.5 ml each in a young man.

Measured over 300 subjects aged 18-88 on a 3 mm grid (``bench/bench_synthetic.py``):
corr(age, CSF fraction) = +0.93, corr(age, GM fraction) = -0.88,
corr(age, WM fraction) = -0.40; intracranial volume 1435 +- 136 ml in men and
1243 +- 107 ml in women (13 % smaller). The irreducible error: an oracle that
knows each subject's true CSF/GM/WM fractions predicts age (linear or cubic
regression, 5-fold cross-validation) with a mean absolute error of 5.3-5.5
years (17.5 for the mean age), so a model working from segmented volumes
should approach 5-6 years, never 0. Young adults fall in the published
ranges of tissue fractions and cortical thickness (``bench/realism.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from brain_tf.data.synthetic.atlas import AtlasGrid
from brain_tf.data.synthetic.cortex import (
    CEREBELLAR_HEMISPHERE, DOME, TEMPORAL, VERMIS, hulls, render_cerebellum, render_cerebrum)
from brain_tf.data.synthetic.fields import Field, random_field
from brain_tf.data.synthetic.geometry import Frame, rotation_matrix
from brain_tf.data.synthetic.head import render_head
from brain_tf.data.synthetic.labels import (
    CEREBRAL_WM, EXTRA_CSF, HIPPOCAMPUS, LATERAL_VENTRICLES, MASK, TISSUE)
from brain_tf.data.synthetic.shapes import smooth_min, tube
from brain_tf.data.synthetic.structures import CANAL, PARTS

#: Linear size of an average man and woman relative to the atlas.
SEX_SCALE = {"M": 0.95, "F": 0.95 * 0.955}
FIELD_STEPS = {"icv": 20.0, "head": 24.0, "fold": 7.0, "fold2": 5.0, "depth": 18.0,
               "thickness": 14.0, "texture": 5.0, "folia": 12.0,
               "warp0": 40.0, "warp1": 40.0, "warp2": 40.0}
#: CSF layer (mm) between a young brain and the intracranial cavity.
ICV_MARGIN = 0.8
#: Semi-axes (atlas mm) of the cerebrum about the head frame's origin.
CEREBRUM_AXES = np.array([68.0, 86.0, 60.0])


def age_units(age: float) -> float:
    """Years past 20 in units of 60 years: 0 at 20, 1 at 80."""
    return (float(age) - 20.0) / 60.0


@dataclass
class Anatomy:
    """The random draw behind one head; render it on any grid with :func:`render_anatomy`.

    Lengths are mm. ``scale`` is the linear size relative to the atlas, ``axes``
    its factor per axis, ``asymmetry`` how much larger the right hemisphere is
    (negative: the left), ``warp`` the sd of the smooth displacement; ``icv``
    the semi-axes of the cerebrum (where tumours are placed). ``skull``,
    ``scalp`` (skin and muscle) and ``fat`` are layer thicknesses and ``face``
    the face's linear size. ``shrink`` is how far the brain surface has
    retreated from the cavity, ``gm`` the cortical thickness,
    ``sulcus_width`` the half-width of a sulcus and ``sulcus_depth`` its
    usual depth, ``fissure`` the half-width of the interhemispheric and
    Sylvian fissures. ``ventricles`` and ``hippocampus`` are width factors of
    those structures (``*_sides``: right and left), ``wm_change`` the weight
    of periventricular white-matter change. ``rotation`` and ``shift`` are
    the head pose.
    """

    age: float
    sex: str
    scale: float
    axes: np.ndarray
    asymmetry: float
    warp: float
    icv: np.ndarray
    skull: float
    scalp: float
    fat: float
    face: float
    shrink: float
    gm: float
    sulcus_width: float
    sulcus_depth: float
    fissure: float
    ventricles: float
    ventricle_sides: np.ndarray
    hippocampus: float
    hippocampus_sides: np.ndarray
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
    noise = rng.standard_normal(24)
    scale = SEX_SCALE[sex] * np.exp(0.025 * noise[0])
    axes = 1 + 0.02 * noise[1:4]
    angles = np.clip(3.0 * noise[4:7], -8, 8) if pose else np.zeros(3)
    shift = np.clip(3.0 * noise[7:10], -8, 8) if pose else np.zeros(3)
    ventricles = np.exp(0.65 * a + 0.13 * noise[10])
    hippocampus = (1 - 0.06 * a - 0.04 * a * a) * np.exp(0.04 * noise[11])
    return Anatomy(
        age=float(age), sex=sex, scale=float(scale), axes=axes,
        asymmetry=float(0.015 * noise[12]), warp=float(2.0 * np.exp(0.2 * noise[13])),
        icv=CEREBRUM_AXES * scale * axes,
        skull=float(5.5 + 1.2 * male + 0.5 * noise[14]),
        scalp=float(max(2.0, 4.0 + 0.6 * noise[15])),
        fat=float(max(1.0, 2.5 + 1.5 * (not male) + 0.6 * noise[16])),
        face=float(scale * (1.07 if male else 1.0) * np.exp(0.03 * noise[17])),
        shrink=float(max(1.3 * a + 0.3 * noise[18], 0.0)),
        gm=float(3.0 * (1 - 0.12 * a) * np.exp(0.06 * noise[19])),
        sulcus_width=float(max(0.1 + 0.15 * a + 0.35 * a * a + 0.1 * noise[20], 0.03)),
        sulcus_depth=float(19.0 * scale),
        fissure=float(max(0.5 + 0.8 * a + 0.2 * noise[21], 0.3)),
        ventricles=float(ventricles),
        ventricle_sides=ventricles * np.exp(0.08 * rng.standard_normal(2)),
        hippocampus=float(hippocampus),
        hippocampus_sides=hippocampus * np.exp(0.03 * rng.standard_normal(2)),
        wm_change=float(max(a - 0.4, 0.0) * np.exp(0.3 * noise[22])),
        rotation=rotation_matrix(angles), shift=shift,
        fields={name: random_field(rng, step) for name, step in FIELD_STEPS.items()},
    )


@dataclass
class AnatomyMaps:
    """An anatomy rendered on a grid."""

    labels: np.ndarray           # uint8 fine label per voxel (see labels.LABELS)
    tissue: np.ndarray           # uint8 0 background, 1 CSF, 2 GM, 3 WM
    hippocampus: np.ndarray      # uint8 0 background, 1 right, 2 left
    mask: np.ndarray             # bool intracranial (brain) mask
    periventricular: np.ndarray  # float32 0..1 white-matter change weight


def _cavity(anat: Anatomy, grid: AtlasGrid, hull: dict[str, np.ndarray]) -> np.ndarray:
    """Signed distance (mm) to the intracranial cavity's inner surface."""
    mm = np.float32(grid.mm)
    cerebrum = np.minimum(hull["dome"], hull["temporal"])
    young = smooth_min(cerebrum, hull["cerebellum"], 5.0) * mm
    points, radii = CANAL
    box = grid.box(np.min(points, 0) - max(radii), np.max(points, 0) + max(radii))
    if box is not None:
        young[box] = np.minimum(young[box], tube(grid.region(box).u, points, radii) * mm)
    return young - np.float32(ICV_MARGIN) - 0.8 * anat.fields["icv"].sample(grid.frame.axes)


def _extent(*ellipsoids) -> tuple[np.ndarray, np.ndarray]:
    """Atlas box (both sides) of right-side ellipsoids (centre, semi[, rotation])."""
    lo = np.min([np.asarray(e[0]) - max(e[1]) for e in ellipsoids], 0)
    hi = np.max([np.asarray(e[0]) + max(e[1]) for e in ellipsoids], 0)
    side = max(abs(lo[0]), abs(hi[0]))
    return np.array([-side, lo[1], lo[2]]), np.array([side, hi[1], hi[2]])


#: Anatomy fields of each growing part's size: the mean, then (right, left).
GROWTH = {"ventricles": ("ventricles", "ventricle_sides"),
          "hippocampus": ("hippocampus", "hippocampus_sides")}


def _factor(anat: Anatomy, part, sign: np.ndarray):
    """Size factor of a part: per side for tubes, the mean for ellipsoids."""
    if part.grows is None:
        return 1.0
    mean, sides = GROWTH[part.grows]
    if part.ellipsoid is not None:
        return getattr(anat, mean)
    right, left = getattr(anat, sides)
    return np.where(sign > 0, np.float32(right), np.float32(left))


def _paint_parts(anat: Anatomy, grid: AtlasGrid, labels: np.ndarray, mask: np.ndarray,
                 periventricular: np.ndarray) -> None:
    mm = np.float32(grid.mm)
    for part in PARTS:
        growth = 1.0 if part.grows is None else float(np.max(getattr(anat, GROWTH[part.grows][1])))
        box = grid.box(*part.extent(growth))
        if box is None:
            continue
        region = grid.region(box)
        u, sign = region.u, region.sign
        d = part.distance(u, _factor(anat, part, sign)) * mm
        if part.septum:
            d = np.maximum(d, np.float32(0.8) - u[0] * mm)
        if part.within_x is not None:
            d = np.maximum(d, (u[0] - np.float32(part.within_x)) * mm)
        inside = (d < 0) & mask[box]
        label = part.label if part.left is None else np.where(sign > 0, part.label, part.left)
        labels[box] = np.where(inside, label, labels[box])
        if part.label == LATERAL_VENTRICLES and anat.wm_change > 0:
            weight = np.clip(1 - d / np.float32(6.0), 0, 1) * np.float32(anat.wm_change)
            periventricular[box] = np.maximum(periventricular[box], weight)


def render_anatomy(anat: Anatomy, frame: Frame, head: bool = True) -> AnatomyMaps:
    """Render ``anat`` on ``frame``'s grid. ``head=False`` skips everything outside the
    intracranial cavity."""
    grid = AtlasGrid(anat, frame)
    hull = hulls(grid.region().u)
    d_icv = _cavity(anat, grid, hull)
    mask = d_icv < 0
    labels = render_head(anat, grid, d_icv) if head else np.zeros(frame.shape, np.uint8)
    labels[mask] = EXTRA_CSF
    for extent, render in ((_extent(DOME, TEMPORAL), render_cerebrum),
                           (_extent(CEREBELLAR_HEMISPHERE, VERMIS), render_cerebellum)):
        box = grid.box(*extent)
        if box is not None:
            drawn = render(anat, grid.region(box), hull)
            labels[box] = np.where((drawn > 0) & mask[box], drawn, labels[box])
    periventricular = np.zeros(frame.shape, np.float32)
    _paint_parts(anat, grid, labels, mask, periventricular)
    periventricular *= labels == CEREBRAL_WM
    return AnatomyMaps(labels=labels, tissue=TISSUE[labels], hippocampus=HIPPOCAMPUS[labels],
                       mask=MASK[labels], periventricular=periventricular)
