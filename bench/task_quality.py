"""Quality of every task's ``small`` preset on its synthetic twin (prints figures).

    python bench/task_quality.py [--tasks tumor-segmentation age-regression ...]
                                 [--subjects N] [--out DIR]

For each task: write the synthetic twin of the task's default dataset layout,
train the ``small`` preset on it (patient-level split), evaluate on the test
split and print the test metrics with the wall time. The layout is the stem of
the preset's data spec (``data_specs/camcan.toml`` -> ``camcan``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from brain_tf.data.synthetic import synthesize
from brain_tf.tasks import TASKS

# Subjects (patients) written per layout: enough for a useful test split.
SUBJECTS = {"msd_brats": 10, "camcan": 30, "ixi": 60, "adni_hippocampus": 16,
            "kaggle_lgg": 16, "tcga_gbm_slices": 20}


def _flat(metrics: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)):
            out[f"{prefix}{key}"] = value
    return out


def run_task(name: str, out: Path, subjects: int | None) -> dict:
    task = TASKS[name]
    config = task.config("small")
    layout = Path(config["data"]["spec"]).stem
    count = subjects or SUBJECTS.get(layout, 20)
    data = out / layout
    if not (data / "spec.toml").exists():
        synthesize(layout, data, subjects=count, seed=0)
    config = task.config("small", {"data": {"spec": str(data / "spec.toml")},
                                   "training": {"verbose": 0}})
    start = time.perf_counter()
    run = task.train(config, run_dir=str(out / "runs" / name))
    minutes = (time.perf_counter() - start) / 60
    metrics = run.load_json("metrics.json")
    print(f"\n== {name}: small preset, synthetic {layout} ({count} subjects), "
          f"train+evaluate {minutes:.1f} min, {len(run.history)} epochs")
    for key, value in _flat(metrics).items():
        print(f"   {key:<40} {value:.4g}" if isinstance(value, float) else
              f"   {key:<40} {value}")
    return {"task": name, "minutes": minutes, **_flat(metrics)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--subjects", type=int, help="subjects per layout (default: per layout)")
    parser.add_argument("--out", help="working folder (default: a temporary one)")
    parser.add_argument("--json", help="also write all figures to this JSON file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        results = [run_task(name, out, args.subjects) for name in args.tasks]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
