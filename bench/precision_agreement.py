"""Does bfloat16 keep the results? The figures that decide what ``--precision auto`` picks.

The bar: at most 0.1 % of the predicted voxels change and no Dice moves by more than
0.002 when a model predicts in bfloat16 instead of float32; a small preset trained in
bfloat16 reaches its float32 figures within run-to-run noise.

1. ``--mni``: the shipped models (pretrained:tissue, pretrained:brain, trained in
   float32) on nilearn's MNI ICBM152 T1 (``--step 1``: 1 mm, 2: 2 mm) and, with
   ``--variants``, its contrast remaps: each scan predicted through ``brain-tf TASK
   predict`` with ``--precision float32`` and ``--precision bfloat16``. Printed: the
   voxels whose label changed, as a fraction of the voxels either prediction labels
   as foreground, and each class's Dice against the template's labels in both.
2. ``--small N``: N synthetic BraTS-layout phantoms; the tumour ``small`` preset
   trained in float32 with two seeds (the run-to-run noise) and in bfloat16 with the
   first seed; every run's test-split mean Dice; then the float32 run predicts every
   phantom in both precisions (changed voxels, Dice against the phantoms' labels).

Usage: python bench/precision_agreement.py [--mni] [--step N] [--variants] [--small N]
       [--workdir DIR]
The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from brain_tf.evaluation import dice  # noqa: E402
from brain_tf.io import load_volume, save_volume  # noqa: E402
from brain_tf.tasks import TASKS  # noqa: E402

PRECISIONS = ("float32", "bfloat16")


def load() -> float:
    return os.getloadavg()[0]


def labels_in(task: str, model: str, scans: list, out: Path) -> dict:
    """Label maps of ``scans`` predicted by ``model`` in each precision."""
    result = {}
    for precision in PRECISIONS:
        written = TASKS[task].predict(model, [str(s) for s in scans], out / precision,
                                      precision=precision)
        files = [w for w in written if w.name.endswith(("_seg.nii.gz", "_mask.nii.gz"))]
        result[precision] = [np.asarray(load_volume(f, dtype=None).array) for f in files]
    return result


def compare(name: str, full: np.ndarray, half: np.ndarray, truth: np.ndarray,
            classes) -> dict:
    foreground = int(((full > 0) | (half > 0)).sum())
    changed = int((full != half).sum())
    d32 = [dice(full == c, truth == c) for c in classes]
    d16 = [dice(half == c, truth == c) for c in classes]
    row = dict(case=name, changed=changed, foreground=foreground,
               changed_fraction=changed / max(foreground, 1),
               dice_float32=[round(d, 4) for d in d32], dice_bfloat16=[round(d, 4) for d in d16],
               max_dice_change=round(max(abs(a - b) for a, b in zip(d32, d16)), 5),
               load=round(load(), 2))
    print(f"  {name:<22} {changed:>8,d} of {foreground:>9,d} "
          f"({100 * row['changed_fraction']:.3f} %)"
          f"  Dice f32 {' '.join(f'{d:.4f}' for d in d32)}  bf16 "
          f"{' '.join(f'{d:.4f}' for d in d16)}  max |change| {row['max_dice_change']:.4f}"
          f"  load {row['load']:.2f}", flush=True)
    return row


def mni(step: int, variants: bool, work: Path) -> list[dict]:
    from brain_tf.evaluation.mni import CONTRASTS, contrast, mni_reference

    ref = mni_reference(step)
    cases = {"T1": ref}
    if variants:
        cases.update({n: contrast(ref, n) for n in CONTRASTS if n != "t1"})
    rows = []
    print(f"\nMNI template, {step} mm: changed voxels / foreground, Dice per class vs the "
          "template's labels (float32, bfloat16)")
    for name, case in cases.items():
        scan = save_volume(case.image, work / f"mni_{name}.nii.gz")
        tissue = labels_in("tissue-segmentation", "pretrained:tissue", [scan],
                           work / f"tissue_{name}")
        rows.append(compare(f"tissue {name}", tissue["float32"][0], tissue["bfloat16"][0],
                            case.tissue, (1, 2, 3)))
        brain = labels_in("brain-extraction", "pretrained:brain", [scan], work / f"brain_{name}")
        rows.append(compare(f"brain {name}", brain["float32"][0], brain["bfloat16"][0],
                            case.brain.astype(np.uint8), (1,)))
    return rows


def small(count: int, work: Path) -> dict:
    from brain_tf.data.synthetic import synthesize

    spec = synthesize("msd_brats", work / "phantoms", subjects=count, seed=7,
                      shape=(96, 96, 64))
    task = TASKS["tumor-segmentation"]
    runs, figures = {}, {}
    for name, seed, precision in (("float32 seed 0", 0, "float32"),
                                  ("float32 seed 1", 1, "float32"),
                                  ("bfloat16 seed 0", 0, "bfloat16")):
        config = task.config("small", {"data": {"spec": str(spec), "seed": seed},
                                       "training": {"precision": precision, "verbose": 0}})
        run = task.train(config, run_dir=str(work / name.replace(" ", "_")), force=True)
        metrics = json.loads((run / "metrics.json").read_text())
        history = run.history
        runs[name] = run
        figures[name] = dict(mean_dice=metrics.get("mean_dice"),
                             final_val_dice=float(history["val_dice"].iloc[-1]),
                             load=round(load(), 2))
        print(f"tumour small, {name}: test mean Dice {metrics.get('mean_dice')}, last val Dice "
              f"{figures[name]['final_val_dice']:.4f} (load {load():.2f})", flush=True)
    scans = sorted((work / "phantoms" / "imagesTr").glob("*.nii.gz"))
    predicted = labels_in("tumor-segmentation", str(runs["float32 seed 0"].path), scans,
                          work / "predicted")
    print("\nphantoms predicted by the float32 run: changed voxels / tumour, Dice per class "
          "(edema, non-enhancing, enhancing)")
    rows = []
    for scan, full, half in zip(scans, predicted["float32"], predicted["bfloat16"]):
        truth = np.asarray(load_volume(work / "phantoms" / "labelsTr" / scan.name,
                                       dtype=None).array)
        rows.append(compare(scan.name.split(".")[0], full, half, truth, (1, 2, 3)))
    return dict(training=figures, prediction=rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mni", action="store_true")
    parser.add_argument("--step", type=int, default=1)
    parser.add_argument("--variants", action="store_true")
    parser.add_argument("--small", type=int, default=0, help="phantoms (0: skip)")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="precision_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"load average {load():.2f}; work folder {work}", flush=True)
    out = {}
    if args.mni:
        out["mni"] = mni(args.step, args.variants, work)
    if args.small:
        out["small"] = small(args.small, work)
    print(json.dumps(dict(out, load=round(load(), 2)), default=float))


if __name__ == "__main__":
    main()
