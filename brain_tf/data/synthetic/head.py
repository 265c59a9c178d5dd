"""Everything outside the intracranial cavity: scalp, skull, face, eyes, neck.

From the cavity outwards: the dura, the skull (dark cortical bone round a
bright marrow layer, the diploe), then soft tissue (muscle and galea, a bright
subcutaneous fat layer, the skin). In front and below: a face with a nose,
nasal cavity and maxillary sinuses (air), eyes in orbital fat, and a neck
with the airway and the cervical vertebrae (bone round marrow) in front of the
spinal canal. Deeper face and neck tissue is ``other_head``. Shapes are in
atlas coordinates, the face scaled by the anatomy's face size.
"""

from __future__ import annotations

import numpy as np

from brain_tf.data.synthetic.labels import (
    BACKGROUND, DURA, EYES, FAT, MARROW, OTHER_HEAD, SKIN_MUSCLE, SKULL)
from brain_tf.data.synthetic.shapes import ellipsoid, tube

SKIN_MM = 1.0
FACE = ((0.0, 40.0, -50.0), (60.0, 48.0, 55.0))
NOSE = ((0.0, 96.0, -36.0), (10.0, 14.0, 20.0))
NECK = ((0.0, -24.0, 0.0), (50.0, 46.0, 1e4))
NECK_TOP = -25.0
AIR = (  # nasal cavity (either side of the septum) and maxillary sinuses (right; mirrored)
    ((7.0, 64.0, -44.0), (5.0, 26.0, 13.0)),
    ((22.0, 58.0, -52.0), (11.0, 14.0, 13.0)),
)
AIRWAY = ([(0, 36, -50), (0, 20, -62), (0, 14, -90), (0, 12, -170)], [6, 7, 6, 7])
EYE = ((32.0, 64.0, -32.0), (12.0, 12.0, 12.0))
ORBIT_FAT = ((32.0, 58.0, -32.0), (17.0, 20.0, 16.0))
VERTEBRAE = ([(0, -14, -64), (0, -16, -170)], [8.0, 8.0])


def _face_point(p, size: float) -> tuple:
    return tuple(np.asarray(p[0]) * size), tuple(np.asarray(p[1]) * size)


def render_head(anat, grid, d_icv: np.ndarray) -> np.ndarray:
    """Labels outside the intracranial cavity (``d_icv`` its signed distance, mm)."""
    u = grid.region().u
    mm = np.float32(grid.mm)
    size = anat.face / anat.scale
    outline = anat.skull + anat.scalp + anat.fat + SKIN_MM
    d_head = d_icv - np.float32(outline) - 2.5 * anat.fields["head"].sample(grid.frame.axes)
    d_head = np.minimum(d_head, ellipsoid(u, *_face_point(FACE, size)) * mm)
    centre, semi = _face_point(NOSE, size)
    box = grid.box(np.subtract(centre, semi), np.add(centre, semi))
    if box is not None:
        d_head[box] = np.minimum(d_head[box], ellipsoid(grid.region(box).u, centre, semi) * mm)
    neck = np.maximum(ellipsoid(u, *NECK), u[2] - np.float32(NECK_TOP)) * mm
    d_head = np.minimum(d_head, neck)
    labels = np.zeros(grid.shape, np.uint8)
    inside = d_head < 0
    labels[inside] = OTHER_HEAD
    labels[inside & (d_head > -np.float32(SKIN_MM + anat.fat + anat.scalp))] = SKIN_MUSCLE
    labels[(d_head < -SKIN_MM) & (d_head > -np.float32(SKIN_MM + anat.fat))] = FAT
    for shape, label in [(s, BACKGROUND) for s in AIR] + [(ORBIT_FAT, FAT), (EYE, EYES)]:
        _paint_ellipsoid(grid, labels, _face_point(shape, size), label)
    _paint_tube(grid, labels, AIRWAY, BACKGROUND)
    _paint_tube(grid, labels, VERTEBRAE, SKULL)
    _paint_tube(grid, labels, VERTEBRAE, MARROW, 0.8)
    bone = (d_icv >= 0) & (d_icv < np.float32(anat.skull))
    labels[bone] = SKULL
    labels[bone & (d_icv > np.float32(0.3 * anat.skull))
           & (d_icv < np.float32(0.7 * anat.skull))] = MARROW
    labels[(d_icv >= 0) & (d_icv < 1.0)] = DURA
    return labels


def _paint_ellipsoid(grid, labels, shape, label) -> None:
    centre, semi = np.asarray(shape[0]), np.asarray(shape[1])
    side = abs(centre[0]) + semi[0]
    box = grid.box((-side, centre[1] - semi[1], centre[2] - semi[2]),
                   (side, centre[1] + semi[1], centre[2] + semi[2]))
    if box is not None:
        labels[box][ellipsoid(grid.region(box).u, centre, semi) < 0] = label


def _paint_tube(grid, labels, shape, label, scale: float = 1.0) -> None:
    points, radii = np.asarray(shape[0], float), shape[1]
    reach = max(radii)
    box = grid.box(points.min(0) - reach, points.max(0) + reach)
    if box is not None:
        labels[box][tube(grid.region(box).u, points, radii, radius_scale=scale) < 0] = label
