"""Writers of the 2D slice layouts: Kaggle LGG (.tif) and TCGA-GBM (.jpg)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from brain_tf.data.synthetic.cohort import (
    balanced_sexes, cohort_rng, save_csv, subject_rng, unique_ids)
from brain_tf.data.synthetic.geometry import grid_axes
from brain_tf.data.synthetic.slices import (
    NORMAL_AXIS, PERSPECTIVES, axial_display, render_slice, to_uint8)
from brain_tf.data.synthetic.subject import render_phantom, sample_phantom
from brain_tf.io import save_image

Tick = Callable[[], None]

#: Kaggle LGG channels (pre-contrast, FLAIR, post-contrast) as phantom modalities.
LGG_CHANNELS = ("T1", "FLAIR", "T1gd")
LGG_SCANNER = {"scale": 1000.0, "noise": 0.03, "bias": 0.10}
#: TCGA-GBM file-name sequence -> phantom modality.
TCGA_SEQUENCES = {"DWI": "DWI", "T1": "T1", "T1C": "T1gd", "T2": "T2"}
TCGA_SCANNER = {"scale": 1000.0, "noise": 0.03, "bias": 0.12}
#: Half-range (mm) around the brain centre where TCGA slices are taken, per perspective.
TCGA_REACH = {"AX": 35.0, "COR": 50.0, "SAG": 40.0}
TCGA_FOV = 240.0
HEAD_CENTRE = np.array([0.0, -8.0, 0.0])  # brain centre in the slice grids (face fits in front)


def write_lgg(out: Path, n: int, seed: int, shape: Sequence[int],
              spacing: Sequence[float], tick: Tick) -> dict:
    """Kaggle kaggle_3m: per patient, axial RGB .tif slices (pre-contrast, FLAIR,
    post-contrast) and 0/255 mask .tif files; every patient has a low-grade glioma,
    most slices do not show it.

    ``shape`` is (rows, cols, slices) and ``spacing`` (row, col, slice) in mm.
    """
    rng = cohort_rng(seed)
    sites = ("CS", "DU", "EZ", "FG", "HT")
    ids = unique_ids(rng, n, lambda r: "TCGA_{}_{:04d}_{}{:02d}{:02d}".format(
        sites[int(r.integers(0, len(sites)))], r.integers(4000, 9000), r.integers(1995, 2003),
        r.integers(1, 13), r.integers(1, 29)))
    sexes = balanced_sexes(rng, n)
    rows, cols, count = shape
    axes = grid_axes((cols, rows, count), (spacing[1], spacing[0], spacing[2]))
    for i, (pid, sex) in enumerate(zip(ids, sexes)):
        r = subject_rng(seed, i)
        phantom = sample_phantom(r, float(rng.uniform(20, 75)), sex, "low", LGG_SCANNER,
                                 HEAD_CENTRE)
        vol = render_phantom(phantom, axes, LGG_CHANNELS, r)
        head = vol["images"]["FLAIR"] > 0
        rgb = np.stack([to_uint8(vol["images"][m], np.percentile(vol["images"][m][head], 99.5))
                        for m in LGG_CHANNELS], axis=-1)
        mask = np.where(vol["tumour"] > 0, 255, 0).astype(np.uint8)
        for k in range(count):
            save_image(axial_display(rgb, k), out / f"kaggle_3m/{pid}/{pid}_{k + 1}.tif")
            save_image(axial_display(mask, k), out / f"kaggle_3m/{pid}/{pid}_{k + 1}_mask.tif")
        tick()
    return {}


def write_tcga(out: Path, n: int, seed: int, shape: Sequence[int],
               spacing: Sequence[float], tick: Tick, per_series: int = 2) -> dict:
    """TCGA-GBM slices: ``per_series`` JPGs per perspective (AX/COR/SAG) and sequence
    (DWI/T1/T1C/T2) per patient, each a different plane through the brain of a
    glioblastoma patient, plus index.csv (patient, perspective, sequence, label, file).

    ``shape`` is (rows, cols); ``spacing`` the pixel size in mm.
    """
    rng = cohort_rng(seed)
    ids = unique_ids(rng, n, lambda r: "TCGA-{}-{:04d}".format(
        ("02", "06", "08", "12", "14", "19", "76")[int(r.integers(0, 7))], r.integers(1, 9999)))
    sexes = balanced_sexes(rng, n)
    fov = float(max(shape[0] * spacing[0], shape[1] * spacing[1]))
    index = []
    for i, (pid, sex) in enumerate(zip(ids, sexes)):
        r = subject_rng(seed, i)
        phantom = sample_phantom(r, float(rng.uniform(40, 85)), sex, "high", TCGA_SCANNER,
                                 HEAD_CENTRE)
        for perspective in PERSPECTIVES:
            axis = NORMAL_AXIS[perspective]
            for sequence, modality in TCGA_SEQUENCES.items():
                for k in range(1, per_series + 1):
                    where = HEAD_CENTRE[axis] + r.uniform(-1, 1) * TCGA_REACH[perspective]
                    image = render_slice(phantom, perspective, where, shape, fov, (modality,),
                                         r)["images"][modality]
                    gray = to_uint8(image, np.percentile(image, 99.5))
                    name = f"{perspective}_{sequence}_Glioma_GBM_{pid}_{k}.jpg"
                    save_image(np.repeat(gray[..., None], 3, axis=-1), out / name)
                    index.append({"patient": pid, "perspective": perspective,
                                  "sequence": sequence, "label": f"{perspective}_{sequence}",
                                  "file": name})
        tick()
    save_csv(pd.DataFrame(index), out / "index.csv")
    return {}
