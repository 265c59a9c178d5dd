"""Deep structures: brainstem, corpus callosum, nuclei, hippocampi, ventricles.

Each is an ellipsoid or a tapered tube (see :mod:`.shapes`) in atlas
coordinates for the right side; both sides are drawn at once by evaluating at
``|x|`` (midline structures are symmetric). They are painted in the order of
:data:`PARTS` over the cerebrum, later parts over earlier ones, so the
ventricles cut into what they touch. Sizes follow the anatomy: the ventricles'
widths scale with its ventricle factor (per side), the hippocampi with its
hippocampus factor (per side).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from brain_tf.data.synthetic.geometry import rotation_matrix
from brain_tf.data.synthetic.labels import (
    AMYGDALA, BRAINSTEM, CAUDATE, CEREBRAL_WM, CORPUS_CALLOSUM, LATERAL_VENTRICLES,
    LEFT_HIPPOCAMPUS, PALLIDUM, PUTAMEN, RIGHT_HIPPOCAMPUS, THALAMUS, THIRD_FOURTH_VENTRICLES)
from brain_tf.data.synthetic.shapes import ellipsoid, tube


@dataclass(frozen=True)
class Part:
    """One painted structure: ``label`` (on the left side ``left`` when it differs),
    an ``ellipsoid`` (centre, semi-axes[, rotation]) or ``tube`` (points, radii[,
    squash]); ``grows`` names the anatomy factor that scales it."""

    label: int
    ellipsoid: tuple | None = None
    tube: tuple | None = None
    grows: str | None = None
    left: int | None = None
    septum: bool = False      # kept off the midline (lateral ventricles)
    within_x: float | None = None   # only where |x| < within_x (atlas mm)

    def extent(self, growth: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Atlas box (both sides) that holds the part grown by ``growth``."""
        if self.ellipsoid is not None:
            centre, semi = np.asarray(self.ellipsoid[0]), np.asarray(self.ellipsoid[1])
            reach = np.full(3, semi.max() * max(growth, 1.0))
        else:
            points = np.asarray(self.tube[0])
            squash = np.asarray(self.tube[2] if len(self.tube) > 2 else (1, 1, 1))
            centre = (points.min(0) + points.max(0)) / 2
            reach = (points.max(0) - points.min(0)) / 2 + growth * max(self.tube[1]) / squash
        lo, hi = centre - reach, centre + reach
        side = self.within_x or max(abs(lo[0]), abs(hi[0]))
        return np.array([-side, lo[1], lo[2]]), np.array([side, hi[1], hi[2]])

    def distance(self, u, factor=1.0) -> np.ndarray:
        """Signed distance (atlas units) at mirrored coordinates ``u``. ``factor``
        scales an ellipsoid's width (x semi-axis; a number) or a tube's radii (a
        number or an array like ``u[0]``)."""
        if self.ellipsoid is not None:
            centre, semi, *rotation = self.ellipsoid
            semi = (semi[0] * factor, semi[1], semi[2])
            return ellipsoid(u, centre, semi, rotation[0] if rotation else None)
        points, radii, *squash = self.tube
        return tube(u, points, radii, squash[0] if squash else (1.0, 1.0, 1.0),
                    radius_scale=factor)


_THALAMUS_TURN = rotation_matrix((0, 0, 15))   # posterior ends diverge
_FOURTH_TILT = rotation_matrix((-30, 0, 0))

#: Paint order: later parts are drawn over earlier ones.
PARTS = (
    Part(BRAINSTEM, tube=([(0, -22, -2), (0, -25, -12), (0, -27, -27), (0, -30, -38),
                           (0, -36, -48), (0, -40, -60), (0, -42, -75), (0, -43, -160)],
                          [7.5, 9, 12.5, 10, 8, 7, 6, 5.5], (0.7, 1.0, 1.0))),
    Part(CORPUS_CALLOSUM, tube=([(0, 16, -4), (0, 28, 4), (0, 26, 14), (0, 16, 21), (0, 0, 24),
                                 (0, -18, 24), (0, -32, 19), (0, -38, 10)],
                                [2.5, 5, 5, 4, 3.2, 3.2, 4.5, 6], (0.22, 1.0, 1.0)),
         within_x=14.0),
    Part(THALAMUS, ellipsoid=((11, -18, 7), (10, 18, 11), _THALAMUS_TURN)),
    Part(CAUDATE, ellipsoid=((13, 14, 9), (6.5, 10, 11))),
    Part(CAUDATE, tube=([(13, 8, 16), (16, -6, 20), (20, -22, 21), (25, -34, 15)],
                        [5, 3.6, 2.5, 1.6])),
    Part(PUTAMEN, ellipsoid=((25, 3, 1), (7, 17, 12))),
    Part(PALLIDUM, ellipsoid=((18.5, -3, -1), (5, 11, 7))),
    Part(AMYGDALA, ellipsoid=((23, -3, -20), (7.5, 8.5, 7.5))),
    Part(RIGHT_HIPPOCAMPUS, tube=([(26, -15, -19), (29, -24, -14), (28, -33, -6), (21, -39, 2),
                                   (16, -39, 6)], [7.2, 6.2, 5.2, 3.8, 2.5]),
         grows="hippocampus", left=LEFT_HIPPOCAMPUS),
    Part(LATERAL_VENTRICLES, tube=([(7, 28, 10), (9, 18, 14), (9, 4, 15), (11, -14, 17),
                                    (19, -34, 14), (18, -50, 6), (15, -62, 4)],
                                   [3.5, 5.2, 5.2, 5.2, 7, 4, 1.8], (1.0, 1.0, 1.4)),
         grows="ventricles", septum=True),
    Part(LATERAL_VENTRICLES, tube=([(19, -34, 14), (31, -36, 2), (34, -26, -7), (31, -12, -12)],
                                   [4.5, 3.5, 2.4, 1.8]), grows="ventricles"),
    Part(THIRD_FOURTH_VENTRICLES, ellipsoid=((0, -10, 2), (1.5, 13, 10)), grows="ventricles"),
    Part(THIRD_FOURTH_VENTRICLES, tube=([(0, -30, -2), (0, -33, -14), (0, -40, -24)],
                                        [1.0, 1.0, 1.2]), grows="ventricles"),
    Part(THIRD_FOURTH_VENTRICLES, ellipsoid=((0, -43, -32), (7, 3.5, 9), _FOURTH_TILT)),
    Part(CEREBRAL_WM, tube=([(2.5, -34, 13), (2, -20, 17), (1.5, -4, 13), (2, 2, 3),
                             (3, -4, -8)], [1.8, 2, 2, 1.6, 1.4])),   # fornix
)
#: Spinal canal and foramen magnum: the intracranial cavity's extension round the
#: brainstem and cord.
CANAL = ([(0, -27, -27), (0, -30, -38), (0, -36, -48), (0, -40, -60), (0, -42, -75),
          (0, -43, -160)], [15, 12.5, 10.5, 9.5, 8.5, 8])
