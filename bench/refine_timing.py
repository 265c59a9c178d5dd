"""Whole ``predict`` time of pretrained:tissue on the 1 mm MNI T1, network alone against
refined, interleaved on one machine.

    python bench/refine_timing.py [--rounds 2]

Both run the command's whole path (brain extraction by pretrained:brain, the network,
writing; the refined one adds the EM refinement): the network alone is a copy of the
shipped model with ``[inference] refine = "none"``. One warm-up prediction first; then
each round predicts with both, printing seconds and the load average.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from brain_tf.evaluation.mni import mni_reference
from brain_tf.io import save_volume
from brain_tf.tasks import TASKS
from brain_tf.training.runner import model_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    task = TASKS["tissue-segmentation"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        scan = save_volume(mni_reference(1).image, work / "T1.nii.gz")
        run, _ = model_run("pretrained:tissue")
        alone = work / "network_alone"
        shutil.copytree(run.path, alone)
        config = (alone / "config.toml").read_text()
        (alone / "config.toml").write_text(config.replace('refine = "em"', 'refine = "none"'))
        task.predict(str(alone), [str(scan)], work / "warm-up")
        for r in range(args.rounds):
            for name, model in (("network alone", str(alone)), ("refined", "pretrained:tissue")):
                start = time.perf_counter()
                task.predict(model, [str(scan)], work / f"{r}_{name.split()[0]}")
                print(f"round {r}: {name}: whole predict {time.perf_counter() - start:.1f} s, "
                      f"load average {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
