"""How close the phantoms come to real adult brains (prints figures, writes a PNG).

    python bench/realism.py [--subjects 3] [--spacings 2 1] [--out bench/out/realism.png]

For ``--subjects`` synthetic full-head subjects (men and women, 25 to 80
years, heads aligned with the grid as the template is) on a 180x220x200 mm
grid at 2 mm and at 1 mm, and for the MNI ICBM152 2009a T1 that nilearn ships
(an average of 152 young adults; its labels are the argmax of background /
CSF / GM / WM with CSF = clip(1 - gm - wm) inside T1 > 0.2, the GM and WM
maps read as 0-255 -> 0-1), prints the figures of
:mod:`brain_tf.data.synthetic.realism` (tissue fractions, median T1 ratios,
cortical thickness) and the generator's seconds per subject. The MNI figures
are also given at 2 mm (every other voxel, as a phantom is point-sampled).
Published adult ranges: CSF 0.08-0.15, GM 0.50-0.58, WM 0.33-0.40 of
CSF+GM+WM; median T1 ratio CSF/WM 0.45-0.5 and GM/WM 0.75-0.8 at 1 mm;
cortical thickness 2-4 mm (mean about 2.5-3). Older subjects lie outside the
young-adult ranges, as real ones do (more CSF, less GM).

The PNG shows the three mid-planes through the brain mask's centroid (the
sagittal one 8 mm to the right, through the medial hemisphere): a synthetic
T1 (first subject at the last spacing), its fine labels, the MNI T1 and the
MNI labels. The MNI template is a yardstick only: nothing in the phantoms is
fitted to it.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from brain_tf.data.synthetic import LABELS, grid_axes, render_phantom, sample_phantom
from brain_tf.data.synthetic.subject import head_centre
from brain_tf.data.synthetic.realism import realism_figures

FOV_MM = (180.0, 220.0, 200.0)
COLOURS = {  # fine label -> colour of the label panel
    "background": "#000000", "skin_muscle": "#b07050", "fat": "#f0e060", "skull": "#f8f8f0",
    "marrow": "#d0a040", "eyes": "#60c0f0", "other_head": "#805040", "dura": "#c0c0ff",
    "extracerebral_csf": "#3060d0", "lateral_ventricles": "#7030f0",
    "third_fourth_ventricles": "#c040f0", "cerebral_cortex": "#d05050",
    "cerebral_wm": "#f0f0f0", "corpus_callosum": "#a0ffa0", "cerebellar_cortex": "#e0a040",
    "cerebellar_wm": "#c0e0c0", "brainstem": "#60a060", "thalamus": "#00c0c0",
    "caudate": "#80c0ff", "putamen": "#f080c0", "pallidum": "#40f0f0",
    "right_hippocampus": "#f0f000", "left_hippocampus": "#c0c000", "amygdala": "#70f070",
    "edema": "#ff8000", "non_enhancing": "#ff0000", "necrosis": "#800000",
    "enhancing": "#ffff80",
}
TISSUE_COLOURS = ["#000000", "#3060d0", "#d05050", "#f0f0f0"]
#: The sagittal planes lie this far right of the midline, through the medial cortex
#: rather than along the interhemispheric fissure.
SAGITTAL_OFFSET_MM = 8.0


def mni() -> dict:
    """The MNI ICBM152 2009a T1 (0-1) and its tissue labels, 1 mm."""
    import nibabel as nib
    from nilearn import datasets

    def read(path) -> np.ndarray:
        return np.asarray(nib.load(path).dataobj, np.float32) / 255.0

    t1 = read(datasets.MNI152_FILE_PATH)
    gm, wm = read(datasets.GM_MNI152_FILE_PATH), read(datasets.WM_MNI152_FILE_PATH)
    head = t1 > 0.2
    csf = np.where(head, np.clip(1 - gm - wm, 0, 1), 0)
    tissue = np.argmax(np.stack([~head, csf, gm, wm]), axis=0).astype(np.uint8)
    return {"t1": t1, "tissue": tissue, "mask": tissue > 0}


def synthetic(spacing: float, count: int) -> tuple[list[dict], float, dict]:
    """Figures of ``count`` subjects at ``spacing`` mm, seconds per subject, first subject."""
    shape = tuple(int(round(f / spacing)) for f in FOV_MM)
    ages = np.linspace(25, 80, count) if count > 1 else [40.0]
    rows, seconds, first = [], 0.0, None
    for i, age in enumerate(ages):
        rng = np.random.default_rng(i)
        start = time.perf_counter()
        phantom = sample_phantom(rng, float(age), "MF"[i % 2], centre=head_centre(FOV_MM),
                                 pose=False)
        s = render_phantom(phantom, grid_axes(shape, (spacing,) * 3), ("T1",), rng)
        seconds += time.perf_counter() - start
        rows.append({"age": float(age), "sex": "MF"[i % 2],
                     **realism_figures(s["images"]["T1"], s["tissue"], (spacing,) * 3)})
        if first is None:
            first = {"t1": s["images"]["T1"], "labels": s["labels"], "mask": s["mask"],
                     "spacing": spacing}
    return rows, seconds / count, first


def show(row: dict, name: str) -> None:
    print(f"  {name:24s} CSF {row['csf']:.3f}  GM {row['gm']:.3f}  WM {row['wm']:.3f}   "
          f"T1 CSF/WM {row['csf_wm']:.3f}  GM/WM {row['gm_wm']:.3f}   "
          f"thickness {row['thickness']:.2f} mm")


def planes(volume: np.ndarray, centre, spacing: float) -> list[np.ndarray]:
    """Sagittal (SAGITTAL_OFFSET_MM right of the centre), coronal and axial planes."""
    i, j, k = centre
    i += int(round(SAGITTAL_OFFSET_MM / spacing))
    return [volume[i].T, volume[:, j].T, volume[:, :, k].T]


def figure(phantom: dict, real: dict, path: Path) -> None:
    """Mid-planes of the phantom (its T1 and fine labels) beside the MNI's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    fine = ListedColormap([COLOURS[n] for n in LABELS])
    coarse = ListedColormap(TISSUE_COLOURS)
    columns = [
        ("phantom T1", phantom["t1"], phantom["mask"], "gray", None, phantom["spacing"]),
        ("phantom fine labels", phantom["labels"], phantom["mask"], fine, len(LABELS) - 1,
         phantom["spacing"]),
        ("MNI152 2009a T1", real["t1"], real["mask"], "gray", None, 1.0),
        ("MNI labels (CSF/GM/WM)", real["tissue"], real["mask"], coarse, 3, 1.0),
    ]
    fig, axes = plt.subplots(3, 4, figsize=(16, 12))
    for col, (title, volume, mask, cmap, top, spacing) in enumerate(columns):
        centre = np.round(np.argwhere(mask).mean(0)).astype(int)
        if top is None:
            top = np.percentile(volume[mask], 99.5)
        for row, plane in enumerate(planes(volume, centre, spacing)):
            ax = axes[row, col]
            ax.imshow(plane, origin="lower", cmap=cmap, vmin=0, vmax=top,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=3)
    parser.add_argument("--spacings", type=float, nargs="+", default=[2.0, 1.0])
    parser.add_argument("--out", default="bench/out/realism.png")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}")
    first = None
    for spacing in args.spacings:
        rows, seconds, sample = synthetic(spacing, args.subjects)
        print(f"\nphantoms, full head at {spacing:g} mm: {seconds:.2f} s per subject (T1 only)")
        for row in rows:
            show(row, f"{row['sex']} {row['age']:.0f} y")
        show({k: np.mean([r[k] for r in rows]) for k in rows[0] if k not in ("sex",)}, "mean")
        first = sample
    real = mni()
    print("\nMNI ICBM152 2009a (yardstick)")
    show(realism_figures(real["t1"], real["tissue"], (1.0,) * 3), "1 mm")
    half = (slice(None, None, 2),) * 3
    show(realism_figures(real["t1"][half], real["tissue"][half], (2.0,) * 3), "2 mm")
    figure(first, real, Path(args.out))
    print(f"\nmid-planes written to {args.out}; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
