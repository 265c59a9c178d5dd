"""The synthetic twins of the six dataset layouts, and :func:`synthesize`.

==================  ==========================  =========================  ====================
layout              default grid                field of view (mm)         real size
==================  ==========================  =========================  ====================
camcan              96x112x96 at 2 mm           192x224x192                --spacing 1
ixi                 75x96x96 at 2.4x2.5x2.5 mm  180x240x240                --shape 150 256 256
adni_hippocampus    96x112x96 at 2 mm           192x224x192                --spacing 1
msd_brats           96x96x64 at 2.5x2.5x2.42    240x240x155                --shape 240 240 155
kaggle_lgg          128x128 px, 24 slices       220x220 px, slices 5 mm    --shape 256 256
tcga_gbm_slices     128x128 px                  240x240                    --shape 256 256
phantoms            90x110x100 at 2 mm          180x220x200                --spacing 1
bids                90x110x100 at 2 mm          180x220x200                --spacing 1
==================  ==========================  =========================  ====================

Shapes and spacings of the volume layouts are given in RAS+ array order
(x: left-right, y: back-front, z: up-down). Give a shape alone and the spacing
follows from the field of view (so the head still fits); give a spacing alone
and the shape follows; give both to choose freely. For the slice layouts the
shape is (rows, cols) of each image (kaggle_lgg also takes a third number, the
slices per patient) and the spacing the pixel size in mm (kaggle_lgg also the
slice thickness).

``phantoms`` is no real dataset's twin: full-head subjects with T1w, T2w, PDw
and FLAIR images, the fine label map of every structure, a tissue segmentation
and a brain mask; its spec (written with the data) lists the fine labels.
``bids`` writes phantoms as a BIDS dataset (:mod:`.write_bids`): sessions, T1w and
T2w, participants.tsv, true masks and tissue maps as derivatives.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from brain_tf.config import dump_toml, load_toml
from brain_tf.data.spec import shipped_specs
from brain_tf.data.synthetic import write_bids, write_slices, write_volumes
from brain_tf.errors import ConfigError, DataError
from brain_tf.io.atomic import atomic_path
from brain_tf.progress import Progress

SPEC_FILE = "spec.toml"
MARK = "Synthetic phantom twin of: "


@dataclass(frozen=True)
class Layout:
    """A layout's writer, default grid and field of view; ``spec`` makes the data spec
    of a layout that has no shipped one."""

    name: str
    writer: Callable
    shape: tuple[int, ...]
    fov: tuple[float, ...]
    dims: int = 3
    spec: Callable[[], dict] | None = None


_LAYOUTS = (
    Layout("camcan", write_volumes.write_camcan, (96, 112, 96), (192.0, 224.0, 192.0)),
    Layout("ixi", write_volumes.write_ixi, (75, 96, 96), (180.0, 240.0, 240.0)),
    Layout("adni_hippocampus", write_volumes.write_adni, (96, 112, 96), (192.0, 224.0, 192.0)),
    Layout("msd_brats", write_volumes.write_brats, (96, 96, 64), (240.0, 240.0, 155.0)),
    Layout("kaggle_lgg", write_slices.write_lgg, (128, 128, 24), (220.0, 220.0, 120.0), dims=2),
    Layout("tcga_gbm_slices", write_slices.write_tcga, (128, 128), (240.0, 240.0), dims=2),
    Layout("phantoms", write_volumes.write_phantoms, (90, 110, 100), (180.0, 220.0, 200.0),
           spec=write_volumes.phantoms_spec),
    Layout("bids", write_bids.write_bids, (90, 110, 100), (180.0, 220.0, 200.0),
           spec=write_bids.bids_spec),
)
LAYOUT = {layout.name: layout for layout in _LAYOUTS}
#: Names of the synthetic layouts (but for ``phantoms``, the names of the shipped data
#: specs they mirror).
LAYOUTS = tuple(LAYOUT)


def _numbers(value, what: str, layout: Layout, kind) -> tuple:
    try:
        values = tuple(kind(v) for v in np.atleast_1d(np.asarray(value, float)))
    except (TypeError, ValueError):
        raise ConfigError(f"{layout.name}: {what} must be numbers, got {value!r}") from None
    if not values or min(values) <= 0:
        raise ConfigError(f"{layout.name}: {what} must be positive, got {value!r}")
    return values


def resolve_grid(layout: str, shape: Sequence[int] | None = None,
                 spacing: float | Sequence[float] | None = None
                 ) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """The (shape, spacing) a layout is written with, from the user's choices and defaults."""
    lay = _layout(layout)
    n = len(lay.fov)
    if shape is not None:
        shape = _numbers(shape, "shape", lay, int)
        if lay.name == "kaggle_lgg" and len(shape) == 2:
            shape = shape + lay.shape[2:]
        if len(shape) != n:
            need = "rows cols [slices]" if lay.name == "kaggle_lgg" else (
                "rows cols" if lay.dims == 2 else "x y z")
            raise ConfigError(f"{lay.name}: shape needs {need}, got {shape}")
        if min(shape) < 4:
            raise ConfigError(f"{lay.name}: shape {shape} is too small (at least 4 per axis)")
    if spacing is not None:
        spacing = _numbers(spacing, "spacing", lay, float)
        if len(spacing) == 1:
            spacing = spacing * n if lay.name != "kaggle_lgg" else (spacing[0],) * 2 + (
                lay.fov[2] / (shape or lay.shape)[2],)
        elif lay.name == "kaggle_lgg" and len(spacing) == 2:
            spacing = spacing + (lay.fov[2] / (shape or lay.shape)[2],)
        if len(spacing) != n:
            raise ConfigError(f"{lay.name}: spacing needs 1 or {n} values, got {spacing}")
    if shape is None and spacing is None:
        shape = lay.shape
    if spacing is None:
        spacing = tuple(round(f / s, 4) for f, s in zip(lay.fov, shape))
    if shape is None:
        shape = tuple(max(4, int(round(f / s))) for f, s in zip(lay.fov, spacing))
    return tuple(shape), tuple(spacing)


def _layout(name: str) -> Layout:
    if name not in LAYOUT:
        raise ConfigError(f"unknown synthetic layout {name!r}; choose one of {', '.join(LAYOUTS)}")
    return LAYOUT[name]


def _is_synthetic(folder: Path) -> bool:
    spec = folder / SPEC_FILE
    try:
        return spec.is_file() and str(load_toml(spec).get("description", "")).startswith(MARK)
    except Exception:
        return False


def _spec(layout: Layout, overrides: dict) -> dict:
    data = layout.spec() if layout.spec else load_toml(shipped_specs()[layout.name])
    data["root"] = "."
    data["description"] = MARK + data.get("description", layout.name)
    for table, values in overrides.items():
        data.setdefault(table, {}).update(values)
    return data


def synthesize(layout: str, out: str | os.PathLike, subjects: int = 10, seed: int = 0,
               shape: Sequence[int] | None = None,
               spacing: float | Sequence[float] | None = None,
               progress: bool = False) -> Path:
    """Write a synthetic dataset in ``layout``'s on-disk layout, with its data spec.

    The dataset is built in a temporary folder beside ``out`` and renamed to
    ``out`` when complete; ``out/spec.toml`` is the shipped spec with
    ``root = "."``. ``out`` must be new, empty, or an earlier synthetic dataset
    (which is replaced). The same arguments always give the same data.

    Returns the path of the written spec.
    """
    lay = _layout(layout)
    if int(subjects) < 1:
        raise ConfigError(f"{layout}: subjects must be at least 1, got {subjects}")
    shape, spacing = resolve_grid(layout, shape, spacing)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: is a file; give a folder for the synthetic dataset")
    if out.is_dir() and any(out.iterdir()) and not _is_synthetic(out):
        raise DataError(f"{out}: folder is not empty and holds no synthetic dataset; "
                        "choose a new or empty folder")
    bar = Progress(int(subjects), "subject") if progress else None

    def tick() -> None:
        if bar is not None:
            bar.add()

    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        overrides = lay.writer(tmp, int(subjects), int(seed), shape, spacing, tick)
        dump_toml(_spec(lay, overrides), tmp / SPEC_FILE)
    return out / SPEC_FILE
