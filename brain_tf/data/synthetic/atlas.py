"""Atlas coordinates: where every phantom structure is defined.

The atlas frame is RAS+ millimetres of an average man's head with the origin
at the anterior commissure (x to the right, y anterior, z superior), the usual
frame of stereotactic anatomy. A subject's head frame (see :mod:`.geometry`)
is centred on the cerebrum, :data:`ATLAS_CENTRE` in atlas coordinates; a head
point maps to the atlas by a smooth random displacement (a few mm), the
subject's size per axis and a left-right size difference between the
hemispheres. :class:`AtlasGrid` holds those coordinates for one grid and finds
the grid boxes of atlas regions, so each structure is evaluated only near
where it lies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from brain_tf.data.synthetic.geometry import Frame

#: The head frame's origin (centre of the cerebrum) in atlas coordinates.
ATLAS_CENTRE = np.array([0.0, -16.0, 15.0])
#: Share of the displacement's sd along each axis: less across the midline, which
#: stays nearly flat in real brains.
WARP_AXES = (0.6, 1.0, 1.0)


@dataclass
class Region:
    """A box of an :class:`AtlasGrid`: atlas coordinates with x replaced by ``|x|``
    (``u``), the side (``sign``: +1 right, -1 left), the box's world ``axes`` (for
    fields that live in world space) and ``mm``, atlas distance to mm."""

    u: tuple[np.ndarray, np.ndarray, np.ndarray]
    sign: np.ndarray
    axes: tuple[np.ndarray, np.ndarray, np.ndarray]
    mm: float
    box: tuple[slice, ...] | None

    def take(self, array: np.ndarray) -> np.ndarray:
        """The region's part of a whole-grid array."""
        return array if self.box is None else array[self.box]


class AtlasGrid:
    """Atlas coordinates of every point of ``frame``'s grid for one anatomy."""

    def __init__(self, anat, frame: Frame):
        self.frame = frame
        self.size = np.asarray(anat.scale * anat.axes, float)   # head mm per atlas mm
        self.mm = float(anat.scale)                              # atlas distance -> mm
        self.asymmetry = float(anat.asymmetry)
        self.margin = 3.5 * anat.warp + 4.0                      # mm, for boxes
        u = frame.local()
        coords = []
        for i in range(3):
            amplitude = anat.warp * WARP_AXES[i]
            shift = np.float32(amplitude) * anat.fields[f"warp{i}"].sample(frame.axes)
            coords.append((u[i] + shift) / np.float32(self.size[i]))
        # one hemisphere a little larger than the other
        grow = 1 + np.float32(self.asymmetry) * np.tanh(coords[0] / np.float32(10))
        self.u = [c / grow + np.float32(ATLAS_CENTRE[i]) for i, c in enumerate(coords)]

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.frame.shape

    def box(self, lo: Sequence[float], hi: Sequence[float]) -> tuple[slice, ...] | None:
        """Grid index ranges that cover the atlas box ``lo``..``hi`` (None if off the grid)."""
        lo = (np.asarray(lo, float) - ATLAS_CENTRE) * self.size
        hi = (np.asarray(hi, float) - ATLAS_CENTRE) * self.size
        pad = self.margin + abs(self.asymmetry) * np.maximum(np.abs(lo), np.abs(hi))
        return self.frame.extent_box(lo - pad, hi + pad)

    def region(self, box: tuple[slice, ...] | None = None) -> Region:
        """The :class:`Region` of ``box`` (the whole grid for None)."""
        u = self.u if box is None else [c[box] for c in self.u]
        sign = np.where(u[0] >= 0, np.float32(1), np.float32(-1))
        axes = self.frame.axes if box is None else tuple(
            a[s] for a, s in zip(self.frame.axes, box))
        return Region((np.abs(u[0]), u[1], u[2]), sign, axes, self.mm, box)
