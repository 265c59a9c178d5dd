"""One synthetic subject in memory: images per modality and every label map.

:func:`make_subject` is the entry point for code and tests that want arrays
without files::

    rng = np.random.default_rng(0)
    s = make_subject(rng, shape=(48, 48, 48), spacing=4.0, age=70, sex="F",
                     tumour="high", modalities=("FLAIR", "T1", "T1gd", "T2"))
    s.images["FLAIR"], s.labels, s.tissue, s.tumour, s.mask, s.affine

A subject is first drawn (:func:`sample_phantom`: anatomy, tumour, scanner),
then rendered on a grid (:func:`render_phantom`). The draw does not depend on
the grid, so one phantom can be rendered as a volume or as single planes
(see :mod:`slices`). All randomness comes from the ``rng`` passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from brain_tf.data.synthetic.anatomy import Anatomy, render_anatomy, sample_anatomy
from brain_tf.data.synthetic.contrast import Scanner, render_image, sample_scanner
from brain_tf.data.synthetic.geometry import Frame, affine_from_axes, grid_axes
from brain_tf.data.synthetic.tumour import GRADES, Tumour, render_tumour, sample_tumour
from brain_tf.errors import ConfigError


@dataclass
class Phantom:
    """Everything random about one subject; ``centre`` is where the ICV centre sits in the
    world before the subject's own small pose shift."""

    anatomy: Anatomy
    tumour: Tumour | None
    scanner: Scanner
    centre: np.ndarray

    def frame(self, axes: Sequence[np.ndarray]) -> Frame:
        """The subject posed on a grid given by world coordinate vectors."""
        return Frame(tuple(np.asarray(a, float) for a in axes), self.anatomy.rotation,
                     np.asarray(self.centre, float) + self.anatomy.shift)


def head_centre(fov: Sequence[float]) -> np.ndarray:
    """Where to put the ICV centre so a full head (face below, vertex above) fits ``fov`` mm."""
    return np.array([0.0, -8.0, float(np.clip(fov[2] / 2 - 80, 0, 22))])


def sample_phantom(rng: np.random.Generator, age: float, sex: str, tumour: str | None = None,
                   scanner: Scanner | Mapping | None = None,
                   centre: Sequence[float] = (0, 0, 0), pose: bool = True) -> Phantom:
    """Draw anatomy, then tumour (``"high"``, ``"low"`` or None), then scanner session.
    ``pose=False`` aligns the head with the grid (no random rotation and shift)."""
    anat = sample_anatomy(rng, age, sex, pose=pose)
    tum = sample_tumour(rng, anat, tumour) if tumour else None
    if not isinstance(scanner, Scanner):
        scanner = sample_scanner(rng, **dict(scanner or {}))
    return Phantom(anatomy=anat, tumour=tum, scanner=scanner, centre=np.asarray(centre, float))


def render_phantom(phantom: Phantom, axes: Sequence[np.ndarray], modalities: Sequence[str],
                   rng: np.random.Generator, head: bool = True,
                   skull_strip: bool = False) -> dict:
    """Render on a grid: a dict with ``images`` (per modality), ``labels`` (the fine
    label map, tumour included), ``tissue``, ``hippocampus``, ``tumour`` and ``mask``
    arrays (``tissue`` and ``hippocampus`` describe the healthy anatomy)."""
    frame = phantom.frame(axes)
    maps = render_anatomy(phantom.anatomy, frame, head=head and not skull_strip)
    labels = maps.labels
    if phantom.tumour is not None:
        labels = labels.copy()
        tumour = render_tumour(phantom.tumour, frame, labels, maps.mask)
    else:
        tumour = np.zeros(frame.shape, np.uint8)
    images, cache = {}, {}
    for m in modalities:
        image = render_image(m, labels, maps.periventricular, phantom.anatomy,
                             phantom.scanner, frame, rng, cache)
        images[m] = np.where(maps.mask, image, 0).astype(np.float32) if skull_strip else image
    return {"images": images, "labels": labels, "tissue": maps.tissue,
            "hippocampus": maps.hippocampus, "tumour": tumour, "mask": maps.mask}


@dataclass
class Subject:
    """A rendered subject: arrays in RAS+ voxel order (x, y, z) and their affine.

    ``labels`` is the fine label map (one value per structure, see
    :mod:`.labels`), tumour labels included. ``tissue`` (0 background, 1 CSF,
    2 GM, 3 WM) and ``hippocampus`` (1 right, 2 left) describe the healthy
    anatomy: outside the tumour they are the lookups ``labels.TISSUE[labels]``
    and ``labels.HIPPOCAMPUS[labels]``. ``tumour`` (BraTS labels 0-3) is drawn
    over the anatomy; ``mask`` is the intracranial (brain) mask,
    ``labels.MASK[labels]``, equal to ``tissue > 0``.
    """

    images: dict[str, np.ndarray]
    labels: np.ndarray
    tissue: np.ndarray
    hippocampus: np.ndarray
    tumour: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    age: float
    sex: str
    phantom: Phantom = field(repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.mask.shape)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(0)))

    def stack(self, modalities: Sequence[str] | None = None) -> np.ndarray:
        """Images as one channels-last array (x, y, z, channels)."""
        names = list(modalities or self.images)
        return np.stack([self.images[m] for m in names], axis=-1)

    def tissue_fractions(self) -> dict[str, float]:
        """CSF, GM and WM voxel counts divided by their sum."""
        counts = np.bincount(self.tissue.ravel(), minlength=4)[1:4].astype(float)
        return dict(zip(("csf", "gm", "wm"), counts / max(counts.sum(), 1)))

    def brain_volume_ml(self) -> float:
        """Intracranial (brain mask) volume in millilitres."""
        return float(self.mask.sum() * np.prod(self.spacing) / 1000)


def _spacing3(spacing) -> tuple[float, float, float]:
    s = np.broadcast_to(np.asarray(spacing, float), (3,))
    if not np.all(s > 0):
        raise ConfigError(f"spacing must be positive mm, got {spacing}")
    return tuple(float(v) for v in s)


def make_subject(rng: np.random.Generator, shape: Sequence[int] = (64, 64, 64),
                 spacing: float | Sequence[float] = 3.0, age: float | None = None,
                 sex: str | None = None, tumour: str | bool | None = None,
                 modalities: Sequence[str] = ("T1",), head: bool = True,
                 skull_strip: bool = False, scanner: Scanner | Mapping | None = None,
                 centre: Sequence[float] | None = None) -> Subject:
    """Draw and render one subject on a ``shape`` grid of ``spacing`` mm voxels.

    Args:
        rng: the only source of randomness (same generator state, same subject).
        age, sex: years and "M"/"F"; drawn (20-85 years, 50/50) when None.
        tumour: None/False, "high" (or True) or "low" grade.
        modalities: any of "T1", "T1gd", "T2", "FLAIR", "PD", "DWI".
        head: render scalp, skull and face (False: background outside the brain).
        skull_strip: images are zero outside the brain mask (BraTS-style).
        scanner: a :class:`Scanner`, or keyword arguments of ``sample_scanner``.
        centre: world position (mm) of the brain centre; default fits a full head in the grid.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"shape must be three positive sizes, got {shape}")
    spacing = _spacing3(spacing)
    if tumour is True:
        tumour = "high"
    if tumour and tumour not in GRADES:
        raise ConfigError(f"tumour must be one of {GRADES} or None, not {tumour!r}")
    if age is None:
        age = float(rng.uniform(20, 85))
    if sex is None:
        sex = "M" if rng.random() < 0.5 else "F"
    if centre is None:
        fov = [n * s for n, s in zip(shape, spacing)]
        centre = head_centre(fov) if head and not skull_strip else (0.0, 0.0, 0.0)
    phantom = sample_phantom(rng, age, sex, tumour or None, scanner, centre)
    axes = grid_axes(shape, spacing)
    out = render_phantom(phantom, axes, modalities, rng, head=head, skull_strip=skull_strip)
    return Subject(images=out["images"], labels=out["labels"], tissue=out["tissue"],
                   hippocampus=out["hippocampus"],
                   tumour=out["tumour"], mask=out["mask"], affine=affine_from_axes(axes, spacing),
                   age=float(age), sex=sex, phantom=phantom)
