"""Few-shot accuracy of the slice-classification ``siamese`` preset on the synthetic
TCGA-GBM twin, beside chance and beside the ``small`` classifier (prints figures).

    python bench/fewshot.py [--subjects 40] [--held-out T2] [--seed 0] [--out DIR]

Writes the twin (64x64 slices), trains the ``small`` classifier, then the ``siamese``
preset twice on the same patient split: on every sequence, and with ``--held-out``
left out of training and validation. For each run: train + evaluate wall time, the load
average around it (the machine may be shared), epochs, and the test patients' few-shot
accuracy at k = 1 and 5 labelled slices per class (seen classes, the held-out class),
against chance (1/4) and the classifier's sequence accuracy on the same test patients.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from brain_tf.data.synthetic import synthesize
from brain_tf.tasks import TASKS

TASK = TASKS["slice-classification"]


def timed_run(preset: str, overrides: dict, run_dir: Path):
    """Train + evaluate one run; its folder, minutes and the load averages around it."""
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    run = TASK.train(TASK.config(preset, overrides), run_dir=str(run_dir))
    minutes = (time.perf_counter() - start) / 60
    return run, minutes, (load_before, os.getloadavg()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=40, help="patients in the twin")
    parser.add_argument("--held-out", default="T2", help="sequence left out of training")
    parser.add_argument("--seed", type=int, default=0, help="split and training seed")
    parser.add_argument("--out", help="working folder (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        start = time.perf_counter()
        spec = synthesize("tcga_gbm_slices", out / "data", subjects=args.subjects, seed=0,
                          shape=(64, 64))
        print(f"twin: {args.subjects} patients of 64x64 slices in "
              f"{time.perf_counter() - start:.0f} s", flush=True)
        common = {"data": {"spec": str(spec), "seed": args.seed}, "training": {"verbose": 0}}
        classifier, minutes, load = timed_run("small", common, out / "classifier")
        metrics = classifier.load_json("metrics.json")
        print(f"small classifier: sequence accuracy {metrics['sequence_accuracy']:.3f}, "
              f"perspective {metrics['perspective_accuracy']:.3f}; {minutes:.1f} min, "
              f"{len(classifier.history)} epochs, load {load[0]:.1f} -> {load[1]:.1f}",
              flush=True)
        rows = []
        for name, target in (("all sequences", {}), (f"{args.held_out} held out",
                                                     {"held_out": [args.held_out]})):
            overrides = {**common, "target": target,
                         "fewshot": {"classifier_run": str(classifier.path)}}
            run, minutes, load = timed_run("siamese", overrides,
                                           out / f"siamese_{len(rows)}")
            rows.append((name, run.load_json("metrics.json"), minutes, len(run.history), load))
            print(f"siamese, {name}: {minutes:.1f} min, {len(run.history)} epochs, load "
                  f"{load[0]:.1f} -> {load[1]:.1f}", flush=True)
    print(f"\nfew-shot nearest-centroid accuracy on the test patients (support and query "
          f"patients disjoint, {rows[0][1]['draws']} draws; seed {args.seed})")
    print(f"{'run':<16} {'k':>2} {'all':>6} {'seen':>6} {'held-out':>9} {'chance':>7} "
          f"{'classifier':>10}")
    for name, m, _, _, _ in rows:
        for k in m["shots"]:
            held = m.get(f"k{k}_held_out_accuracy")
            print(f"{name:<16} {k:>2} {m[f'k{k}_accuracy']:>6.3f} "
                  f"{m[f'k{k}_seen_accuracy']:>6.3f} "
                  f"{'-' if held is None else f'{held:.3f}':>9} {m['baseline_accuracy']:>7.3f} "
                  f"{m['classifier_accuracy']:>10.3f}")
    same = all(m["classifier_same_test_patients"] for _, m, _, _, _ in rows)
    print(f"(classifier: the small preset's sequence accuracy over all test slices, "
          f"{'the same' if same else 'NOT the same'} test patients)")


if __name__ == "__main__":
    main()
