"""Quality of every task's ``small`` preset on its synthetic twin (prints figures).

    python bench/task_quality.py [--tasks tumor-segmentation age-regression:features ...]
                                 [--subjects N] [--out DIR] [--json FILE]

For each task: write the synthetic twin of the task's default dataset layout,
train the ``small`` preset on it (patient-level split), evaluate on the test
split and print the test metrics with the wall time. The layout is the preset's
data spec name (``camcan``). ``TASK:PRESET`` runs another preset than ``small``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from brain_tf.data.synthetic import synthesize
from brain_tf.tasks import TASKS
from brain_tf.tasks.base import SCHEMAS

# Subjects (patients) written per layout: enough for a useful test split.
SUBJECTS = {"msd_brats": 10, "camcan": 40, "ixi": 60, "adni_hippocampus": 30,
            "kaggle_lgg": 40, "tcga_gbm_slices": 40}
DEFAULT_RUNS = [*TASKS, "age-regression:features"]


def _flat(metrics: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)):
            out[f"{prefix}{key}"] = value
    return out


def run_task(name: str, out: Path, subjects: int | None) -> dict:
    name, _, preset = name.partition(":")
    preset = preset or "small"
    task = TASKS[name]
    layout = Path(task.config(preset).data.spec).stem
    count = subjects or SUBJECTS.get(layout, 20)
    data = out / layout
    if not (data / "spec.toml").exists():
        synthesize(layout, data, subjects=count, seed=0)
    overrides = {"data": {"spec": str(data / "spec.toml")}}
    if "training" in SCHEMAS[task.family_of(preset)]:  # the features approach has none
        overrides["training"] = {"verbose": 0}
    config = task.config(preset, overrides)
    start = time.perf_counter()
    run = task.train(config, run_dir=str(out / "runs" / f"{name}-{preset}"))
    minutes = (time.perf_counter() - start) / 60
    metrics = run.load_json("metrics.json")
    epochs = len(run.history) if (run / "history.csv").exists() else 0
    print(f"\n== {name}: {preset} preset, synthetic {layout} ({count} subjects), "
          f"train+evaluate {minutes:.1f} min, {epochs} epochs", flush=True)
    for key, value in _flat(metrics).items():
        print(f"   {key:<40} {value:.4g}" if isinstance(value, float) else
              f"   {key:<40} {value}")
    return {"task": name, "preset": preset, "minutes": minutes, **_flat(metrics)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=DEFAULT_RUNS, metavar="TASK[:PRESET]",
                        help=f"tasks to run (default: all); tasks: {', '.join(TASKS)}")
    parser.add_argument("--subjects", type=int, help="subjects per layout (default: per layout)")
    parser.add_argument("--out", help="working folder (default: a temporary one)")
    parser.add_argument("--json", help="also write all figures to this JSON file")
    args = parser.parse_args()
    unknown = [t for t in args.tasks if t.partition(":")[0] not in TASKS]
    if unknown:
        parser.error(f"unknown task(s) {unknown}; choose from {list(TASKS)}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        results = [run_task(name, out, args.subjects) for name in args.tasks]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
