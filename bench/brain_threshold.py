"""The brain-extraction threshold, chosen on held-out full-head phantoms.

    python bench/brain_threshold.py --phantoms DIR [--model pretrained:brain]
                                    [--subjects N] [--cache DIR]

DIR is a ``brain-tf synth phantoms`` folder the model never saw (e.g. ``--seed 99
--spacing 1.5``). For every subject's T1w, T2w, PDw and FLAIR scan the model's brain
probability is computed once on the scan's grid (the predict path) and cached; printed:
the mask Dice per contrast (mean and worst) for each ``[inference]
foreground_threshold`` (a voxel is brain when p(brain) reaches it; 0.5 is the argmax),
with the largest connected component kept as the model's config asks; and the same for
each subject's T1w with a field of view that cuts through the brain
(:func:`brain_tf.evaluation.mni.cropped`: 25 mm off the top, 35 mm off the bottom).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import numpy as np

from brain_tf.evaluation import dice
from brain_tf.inference.postprocess import largest_components
from brain_tf.io import load_volume

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_cache import cache_key  # noqa: E402

CONTRASTS = ("T1w", "T2w", "PDw", "FLAIR")
#: every contrast, and the T1w with a field of view that cuts through the brain
CASES = (*CONTRASTS, "T1w_cropped")
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def cached(model: str, folder: Path, cache: Path, subjects: int | None) -> list[dict]:
    from brain_tf.evaluation.mni import Reference, cropped
    from brain_tf.inference.segment import Segmenter
    from brain_tf.preprocess.inverse import probabilities_on_grid
    from brain_tf.tasks import TASKS
    from brain_tf.training.runner import Context, model_run

    cache.mkdir(parents=True, exist_ok=True)
    net, cases = None, []
    for mask_path in sorted((folder / "masks").glob("sub-*_brain_mask.nii.gz"))[:subjects]:
        subject = mask_path.name.split("_")[0]
        truth = np.asarray(load_volume(mask_path, dtype=None).array) > 0
        for contrast in CASES:
            path = cache / f"{subject}_{contrast}_brain.npz"
            if not path.exists():
                if net is None:
                    task = TASKS["brain-extraction"]
                    run, weights = model_run(model)
                    ctx = Context(task, task.load_config(run), learned=run.load_learned())
                    family = task.family(ctx.config.preset)
                    net = ctx, family, family.load_predictor(ctx, weights)
                ctx, family, predictor = net
                name = contrast.removesuffix("_cropped")
                scan = load_volume(folder / "images" / f"{subject}_{name}.nii.gz")
                scan_truth = truth
                if contrast.endswith("_cropped"):  # a field of view that cuts the brain
                    ref = cropped(Reference(dataclasses.replace(scan, source=None),
                                            truth.astype(np.uint8), truth))
                    scan, scan_truth = ref.image, ref.brain
                volume, _, pre = family.prepare_scan(ctx, scan)
                grid = volume.file_grid
                segmenter = Segmenter.from_config(ctx.config, 2)
                probs = probabilities_on_grid(segmenter.probabilities(predictor, pre.image),
                                              pre.affine, grid)
                np.savez_compressed(path, brain=probs[..., 1].astype(np.float16),
                                    truth=grid.to_file(scan_truth))
            data = dict(np.load(path))
            data["contrast"] = contrast
            cases.append(data)
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phantoms", required=True)
    parser.add_argument("--model", default="pretrained:brain")
    parser.add_argument("--subjects", type=int)
    parser.add_argument("--cache", help="keep the model's outputs here (default DIR/.brain; "
                        "one subfolder per model and version)")
    args = parser.parse_args()
    folder = Path(args.phantoms)
    print(f"load average {os.getloadavg()[0]:.2f}")
    cache = Path(args.cache or folder / ".brain") / cache_key(args.model)
    cases = cached(args.model, folder, cache, args.subjects)
    print(f"{len(cases)} held-out full-head scans; mask Dice mean (worst) per contrast, and "
          "the T1w with a field of view cut 25 mm above and 35 mm below (through the brain)")
    print(f"  {'threshold':<10} " + " ".join(f"{c.replace('_', ' '):>15}" for c in CASES))
    for t in THRESHOLDS:
        cells = []
        for contrast in CASES:
            scores = [dice(largest_components((c["brain"] >= t).astype(np.uint8), [1]) > 0,
                           c["truth"]) for c in cases if c["contrast"] == contrast]
            cells.append(f"{np.mean(scores):.3f} ({np.min(scores):.3f})")
        print(f"  {t:<10} " + " ".join(f"{c:>15}" for c in cells), flush=True)
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
