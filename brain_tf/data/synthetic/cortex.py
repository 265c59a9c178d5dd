"""The cerebral and cerebellar hulls and the folded cortex over their white matter.

Geometry is given in atlas coordinates (see :mod:`.atlas`), for the right
side: left-side points are evaluated at ``|x|``. Distances come out in atlas
units; callers convert them to mm.

Cerebrum. Each hemisphere's hull is the union of a dome (frontal, parietal
and occipital lobes) and a temporal lobe. Cerebrospinal fluid enters it as:

- sulci: sheets along the zero lines that a smooth random field draws on the
  hull surface, read at each point's projection onto the surface (a little
  short of it, so sulci bend as they deepen): every sulcus runs down from the
  surface, as in real cortex. Primary sulci (about 18 mm apart) reach about
  18 mm deep, secondary ones (about 14 mm apart, not on the medial surface)
  about 10 mm; a second field varies the depths, and sulci open slightly at
  the surface;
- the interhemispheric fissure (a midline sheet down to the corpus callosum,
  and to the base of the brain in front of and behind it), and on the medial
  surface the same sulci, projected onto the midline;
- the Sylvian fissure: the sheet where dome and temporal lobe meet, reaching
  in to the insula;
- the basal cisterns under the diencephalon and the tentorial gap above the
  cerebellum.

The cortex is every point within the cortical thickness of that CSF; the rest
is white matter, so white matter follows every gyrus as a finger between two
sulci whose spacing exceeds twice the thickness.

Cerebellum. Two hemispheres and the vermis; its folia run left-right, as
fissures fanning out from the fourth ventricle's roof (sheets at equal angles
about a transverse axis, wavy by a random field): deep fissures between
lobules with cerebellar white matter branching into each lobule, and shallow
ones between folia.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from brain_tf.data.synthetic.fields import Field
from brain_tf.data.synthetic.geometry import rotation_matrix
from brain_tf.data.synthetic.labels import CEREBELLAR_CORTEX, CEREBELLAR_WM, CEREBRAL_WM, CORTEX
from brain_tf.data.synthetic.shapes import cleft, ellipsoid

# Atlas geometry (right side): centre, semi-axes[, rotation].
DOME = ((0.0, -16.0, 20.0), (68.0, 86.0, 55.0))
TEMPORAL = ((42.0, -24.0, -16.0), (25.0, 46.0, 24.0), rotation_matrix((-12, 0, 0)))
#: Where the hemispheres are joined (no interhemispheric fissure): its top
#: follows the upper surface of the corpus callosum.
BRIDGE = ((0.0, -5.0, 0.0), (30.0, 37.0, 26.0))
#: Suprasellar, interpeduncular and ambient cisterns under the diencephalon.
CISTERN = ((0.0, -10.0, -28.0), (13.0, 20.0, 14.0))
CEREBELLAR_HEMISPHERE = ((24.0, -62.0, -36.0), (28.0, 31.0, 22.0))
VERMIS = ((0.0, -60.0, -32.0), (13.0, 32.0, 21.0))
#: Insula (lateral limit of the Sylvian fissure's depth) and its posterior end.
INSULA_X, SYLVIAN_END_Y = 36.0, -42.0
#: Transverse axis (y, z) the cerebellar fissures fan out from, and fissures per turn.
FOLIA_AXIS = (-46.0, -31.0)
LOBULES, FOLIA = 16, 60
#: Depth (mm) of the fissures between lobules and between folia, the folial
#: fissures' half-width (mm), and the cerebellar cortex's thickness as a share
#: of the cerebral one.
LOBULE_DEPTH, FOLIUM_DEPTH, FOLIUM_HALF_WIDTH = 13.0, 3.0, 0.15
CEREBELLAR_THICKNESS = 0.8
#: Lattice step (atlas mm) on which the sulcal pattern is tabulated.
FOLD_STEP = 1.5
#: Depth (mm) of the secondary sulci; extra half-width (mm) where a sulcus opens at
#: the surface; how far towards the surface (share of the depth) a point reads the
#: sulcal pattern (below 1, sulci bend as they deepen).
SECONDARY_DEPTH = 10.0
OPENING = 0.3
SURFACE_SHARE = 0.75
#: CSF gap (mm) between the cerebrum and the cerebellum (tentorium).
TENTORIUM_MM = 1.5


def hulls(u) -> dict[str, np.ndarray]:
    """Signed distances (atlas units, mirrored coordinates) to the dome, the temporal
    lobe and the cerebellum (hemispheres and vermis)."""
    return {"dome": ellipsoid(u, *DOME), "temporal": ellipsoid(u, *TEMPORAL),
            "cerebellum": np.minimum(ellipsoid(u, *CEREBELLAR_HEMISPHERE),
                                     ellipsoid(u, *VERMIS))}


def _near(u, shape, reach: float):
    """Indices of the points within ``reach`` (atlas mm) of an ellipsoid's bounding box."""
    centre, semi = np.asarray(shape[0]), np.asarray(shape[1]) + reach
    inside = np.abs(u[0] - np.float32(centre[0])) < np.float32(semi[0])
    for i in (1, 2):
        inside &= np.abs(u[i] - np.float32(centre[i])) < np.float32(semi[i])
    return np.nonzero(inside)


def surface_zero_distance(field: Field, points, normals, step: float = FOLD_STEP) -> np.ndarray:
    """Distance along a surface from each point to the zero line the field draws on it.

    ``points`` (on the surface) and unit ``normals`` are three flat arrays each,
    in the field's coordinates. The distance is ``|g| / |grad_t g|`` with
    ``grad_t`` the gradient within the surface; ``g`` and its gradient are read
    off a lattice (multiples of ``step``) by trilinear interpolation.
    """
    lo = [np.floor(float(p.min()) / step) * step for p in points]
    hi = [np.ceil(float(p.max()) / step) * step for p in points]
    axes = [np.arange(a, b + step / 2, step) for a, b in zip(lo, hi)]
    index = np.stack([(p - a) / np.float32(step) for p, a in zip(points, lo)])
    g, *grad = (ndimage.map_coordinates(field.sample(axes, d), index, order=1, mode="nearest",
                                        prefilter=False) for d in (None, 0, 1, 2))
    along = grad[0] * normals[0] + grad[1] * normals[1] + grad[2] * normals[2]
    slope2 = grad[0] * grad[0] + grad[1] * grad[1] + grad[2] * grad[2] - along * along
    return np.abs(g) / np.sqrt(np.maximum(slope2, np.float32(4e-4)))


def render_cerebrum(anat, region, hull: dict[str, np.ndarray]) -> np.ndarray:
    """Cortex / cerebral WM labels (0 for CSF or outside) of the cerebrum on a region
    (see :class:`.atlas.Region`); ``hull`` holds the whole grid's :func:`hulls`."""
    u, mm = region.u, region.mm
    x, y, z = u
    mm32 = np.float32(mm)
    d_dome, d_temp = region.take(hull["dome"]), region.take(hull["temporal"])
    depth = -np.minimum(d_dome, d_temp)
    nearest_dome = d_dome < d_temp
    # the interhemispheric fissure, a midline sheet outside the bridge
    d_bridge = np.full(depth.shape, np.float32(1e3))
    near = _near(u, BRIDGE, 0.0)
    d_bridge[near] = ellipsoid([c[near] for c in u], *BRIDGE)
    medial = (x < depth) & (d_bridge > 0)
    # where the midline is the nearest surface, sulci are those of the medial surface
    depth_mm = np.where(medial, x, depth) * mm32
    thickness = np.float32(anat.gm) * (1 + 0.15 * anat.fields["thickness"].sample(region.axes))
    vary = anat.fields["depth"].sample(region.axes)
    dist = depth * mm32 - np.float32(anat.shrink)
    for name, reach, spread in (("fold", anat.sulcus_depth, 0.35), ("fold2", SECONDARY_DEPTH, 0.5)):
        reach = np.float32(reach) * np.clip(1 + np.float32(spread) * vary, 0.3, 1.5)
        # only points that a sulcus can bring within the cortex of CSF (the medial
        # surface has only primary sulci)
        near = (depth_mm > 0) & (depth_mm < reach + thickness + 1)
        shell = np.nonzero(near if name == "fold" else near & ~medial)
        dist = np.minimum(dist, _sulci(anat, name, region, shell, medial[shell],
                                       nearest_dome[shell], depth_mm, reach))
    fissure = cleft(x * mm32 - np.float32(anat.fissure), np.maximum(-d_bridge, 0) * mm32)
    sylvian = cleft(np.abs(d_dome - d_temp) * np.float32(mm / 2) - np.float32(anat.fissure),
                    np.maximum(np.maximum(INSULA_X - x, SYLVIAN_END_Y - y), 0) * mm32)
    dist = np.minimum(dist, np.minimum(fissure, sylvian))
    near = _near(u, CISTERN, 8.0)
    dist[near] = np.minimum(dist[near], ellipsoid([c[near] for c in u], *CISTERN) * mm32)
    dist = np.minimum(dist, region.take(hull["cerebellum"]) * mm32 - np.float32(TENTORIUM_MM))
    return np.where(dist < 0, 0, np.where(dist < thickness, CORTEX, CEREBRAL_WM)).astype(np.uint8)


def _sulci(anat, name: str, region, shell, medial, dome, depth_mm, reach) -> np.ndarray:
    """Signed distance (mm) to one system of sulci: sheets along the zero line that the
    field ``name`` draws on the brain surface, from the surface down to ``reach`` mm.

    Only the ``shell`` points are measured (the rest are far); a point reads the
    pattern at its projection onto the surface it is nearest to (``medial``: the
    midline, ``dome``: the dome, else the temporal lobe), a little short of it, so
    that sulci bend as they deepen.
    """
    mm = np.float32(region.mm)
    u = [c[shell] for c in region.u]
    sign = region.sign[shell]
    (_, n_dome), (_, n_temp) = (ellipsoid(u, *DOME, normal=True),
                                ellipsoid(u, *TEMPORAL, normal=True))
    normal = [np.where(medial, -np.float32(i == 0), np.where(dome, n_dome[i], n_temp[i]))
              for i in range(3)]
    depth = depth_mm[shell]
    lift = depth * (np.float32(SURFACE_SHARE) / mm)
    surface = [u[i] + lift * normal[i] for i in range(3)]
    surface[0] *= sign
    normal[0] *= sign
    width = np.float32(anat.sulcus_width) + np.float32(OPENING) * np.exp(-depth / np.float32(1.5))
    sheet = np.full(depth_mm.shape, np.float32(1e3))
    sheet[shell] = surface_zero_distance(anat.fields[name], surface, normal) * mm - width
    return cleft(sheet, np.maximum(depth_mm - reach, 0))


def _fissure_distance(angle: np.ndarray, radius: np.ndarray, count: int) -> np.ndarray:
    """Arc length (mm) from each point to the nearest of ``count`` sheets per turn."""
    phase = angle * np.float32(count / (2 * np.pi))
    return np.abs(phase - np.round(phase)) * radius * np.float32(2 * np.pi / count)


def render_cerebellum(anat, region, hull: dict[str, np.ndarray]) -> np.ndarray:
    """Cerebellar cortex / WM labels (0 for CSF or outside) on a region."""
    x, y, z = region.u
    depth = (-region.take(hull["cerebellum"]) * np.float32(region.mm)
             - np.float32(0.5 * anat.shrink))
    dy, dz = FOLIA_AXIS[0] - y, z - FOLIA_AXIS[1]
    radius = np.sqrt(dy * dy + dz * dz) * np.float32(region.mm)
    wave = anat.fields["folia"].sample(region.axes)
    angle = np.arctan2(dz, dy) + np.float32(0.12) * wave
    lobules = cleft(_fissure_distance(angle, radius, LOBULES) - np.float32(anat.sulcus_width),
                    np.maximum(depth - np.float32(LOBULE_DEPTH) * (1 + 0.35 * wave), 0))
    folia = cleft(_fissure_distance(angle, radius, FOLIA) - np.float32(FOLIUM_HALF_WIDTH),
                  np.maximum(depth - np.float32(FOLIUM_DEPTH), 0))
    dist = np.minimum(depth, np.minimum(lobules, folia))
    cortex = np.float32(CEREBELLAR_THICKNESS * anat.gm)
    return np.where(dist < 0, 0, np.where(dist < cortex, CEREBELLAR_CORTEX,
                                          CEREBELLAR_WM)).astype(np.uint8)
