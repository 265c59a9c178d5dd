"""Brain tumours for the BraTS, LGG and TCGA-GBM phantoms.

A tumour is an irregular ellipsoidal core at a random place inside the brain,
surrounded by oedema that spreads through grey and white matter (not into CSF):

- high grade (glioblastoma-like): an enhancing rim 2.5-5 mm thick around a
  necrotic, non-enhancing centre; core radius 9-22 mm, oedema 6-25 mm beyond it;
- low grade: a solid non-enhancing core (radius 10-26 mm), sometimes with a
  fluid cyst or a patch of enhancement, and little oedema (2-10 mm).

Labels follow BraTS / MSD Task01: 0 background, 1 oedema, 2 non-enhancing
tumour (necrosis included), 3 enhancing tumour. The sub-regions are nested
voxel by voxel (face connectivity): label 2 voxels of a high-grade tumour
touch only labels 2 and 3, and every brain voxel next to the core (labels 2
and 3) is tumour (label 1, 2 or 3).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from brain_tf.data.synthetic.anatomy import Anatomy
from brain_tf.data.synthetic.fields import Field, random_field
from brain_tf.data.synthetic.geometry import Frame, rotation_matrix
from brain_tf.data.synthetic.labels import EDEMA, ENHANCING, NECROSIS, NON_ENHANCING, TISSUE
from brain_tf.data.synthetic.shapes import ellipsoid

GRADES = ("high", "low")


@dataclass
class Tumour:
    """The random draw behind one tumour (head-frame mm)."""

    grade: str
    centre: np.ndarray
    semi: np.ndarray
    rotation: np.ndarray
    rim: float          # enhancing rim thickness (mm); 0 for none
    cyst: float         # low grade: depth (mm) below the core surface where fluid starts; 0: none
    patch: bool         # low grade: a patch of enhancement
    edema: float        # mm of oedema beyond the core
    fields: dict[str, Field] = field(repr=False, default_factory=dict)


def sample_tumour(rng: np.random.Generator, anat: Anatomy, grade: str = "high") -> Tumour:
    """Draw a tumour of ``grade`` ("high" or "low") somewhere inside ``anat``'s brain."""
    if grade not in GRADES:
        raise ValueError(f"tumour grade must be one of {GRADES}, not {grade!r}")
    high = grade == "high"
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    where = rng.uniform(0.1, 0.5)
    centre = direction * where * anat.icv
    radius = rng.uniform(9, 22) if high else rng.uniform(10, 26)
    semi = radius * np.exp(rng.normal(0, 0.15, 3))
    semi = np.minimum(semi, (1 - where) * anat.icv.min() * 0.8)
    rim = rng.uniform(2.5, 5.0) if high else 0.0
    cyst = rng.uniform(5, 9) if (not high and rng.random() < 0.3) else 0.0
    return Tumour(
        grade=grade, centre=centre, semi=semi,
        rotation=rotation_matrix(rng.uniform(-180, 180, 3)),
        rim=float(rim), cyst=float(cyst), patch=bool(not high and rng.random() < 0.25),
        edema=float(rng.uniform(6, 25) if high else rng.uniform(2, 10)),
        fields={"core": random_field(rng, 9.0), "edema": random_field(rng, 12.0)},
    )


def _structure(shape) -> np.ndarray:
    """Face-connectivity structuring element, flattened along singleton axes."""
    full = ndimage.generate_binary_structure(3, 1)
    return full[tuple(slice(None) if n > 1 else slice(1, 2) for n in shape)]


def render_tumour(tumour: Tumour, frame: Frame, labels: np.ndarray,
                  mask: np.ndarray) -> np.ndarray:
    """Tumour labels (0-3) on the grid; writes the tumour's fine labels into ``labels``."""
    out = np.zeros(frame.shape, np.uint8)
    box = frame.box(tumour.centre, float(tumour.semi.max()) * 1.3 + tumour.edema + 10)
    if box is None:
        return out
    sub = frame.sub(box)
    u = sub.local()
    d_core = (ellipsoid(u, tumour.centre, tumour.semi, tumour.rotation)
              + 2.5 * tumour.fields["core"].sample(sub.axes))
    inside = mask[box]
    cls = labels[box]
    struct = _structure(d_core.shape)
    core = (d_core < 0) & inside
    if not core.any():
        return out
    reach = tumour.edema * np.clip(1 + 0.5 * tumour.fields["edema"].sample(sub.axes), 0.2, 2)
    fluid = TISSUE[cls] == 1
    whole = (((d_core < reach) & ~fluid) | ndimage.binary_dilation(core, struct)) & inside
    lab = np.where(whole, 1, 0).astype(np.uint8)
    tissue = np.where(whole, EDEMA, cls)
    if tumour.grade == "high":
        centre = core & (d_core < -tumour.rim) & ndimage.binary_erosion(core, struct)
        lab[core] = 3
        tissue[core] = ENHANCING
        lab[centre] = 2
        tissue[centre] = NECROSIS
    else:
        lab[core] = 2
        tissue[core] = NON_ENHANCING
        if tumour.cyst:
            cyst = core & (d_core < -tumour.cyst)
            tissue[cyst] = NECROSIS
        if tumour.patch:
            patch = core & (tumour.fields["edema"].sample(sub.axes) > 1.0)
            lab[patch] = 3
            tissue[patch] = ENHANCING
    out[box] = lab
    labels[box] = tissue
    return out
