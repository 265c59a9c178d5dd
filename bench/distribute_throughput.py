"""Throughput of distributed training and of TFRecord shards versus NIfTI input.

1. Training steps per second of a small 3D U-Net (depth 3, base 8 filters,
   sigmoid head, soft Dice) on in-memory 48x48x16x4 patches, global batch 4,
   under MirroredStrategy with one logical CPU device and with two. The two
   logical devices share the same cores, so on a CPU this shows the cost of
   replication, not a speed-up; on a machine with two GPUs use
   ``--strategy mirrored`` to get the speed-up.
2. The tumour task's patch pipeline (48x48x16 patches, 4 per subject, no
   augmentation, batches of 4) fed from NIfTI files (load + preprocess every
   time) and from TFRecord shards written by ``brain-tf shard``; and whole
   subjects per second read by ``shard_dataset`` (parallel interleave) versus
   ``ManifestLoader``.

Run it alone (it uses every core); the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

_CPU = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_CPU, [tf.config.LogicalDeviceConfiguration()] * 2)

import numpy as np  # noqa: E402

from brain_tf.data import load_spec  # noqa: E402
from brain_tf.data.shards import ShardLoader, shard_dataset, write_shards  # noqa: E402
from brain_tf.data.synthetic import synthesize  # noqa: E402
from brain_tf.pipeline import PatchSampler, patch_dataset  # noqa: E402
from brain_tf.preprocess.loader import ManifestLoader  # noqa: E402
from brain_tf.tasks import TASKS  # noqa: E402
from brain_tf.models import build_model  # noqa: E402
from brain_tf.training.fit import make_loss, make_optimizer  # noqa: E402

PATCH = (48, 48, 16)


def train_rate(devices: list[str], steps: int, batch: int) -> float:
    """Training steps per second (after two warm-up steps) under MirroredStrategy(devices)."""
    strategy = tf.distribute.MirroredStrategy(devices)
    config = TASKS["tumor-segmentation"].config("small")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch * 4,) + PATCH + (4,)).astype("float32")
    y = (rng.random((batch * 4,) + PATCH + (3,)) > 0.9).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).repeat()
    model_cfg = dict(config.model)
    with strategy.scope():
        model = build_model(model_cfg.pop("name"), input_shape=PATCH + (4,), num_outputs=3,
                            **model_cfg)
        model.compile(optimizer=make_optimizer(config, steps + 2), loss=make_loss(config.loss))
        model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)
        start = time.perf_counter()
        model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps / (time.perf_counter() - start)


def patch_rate(loader, spacing, batches: int) -> float:
    """Patches per second of the tumour task's patch pipeline fed by ``loader``."""
    ds = patch_dataset(loader, PatchSampler(PATCH, patches_per_subject=4, max_tries=20),
                       num_classes=4, drop_background=True, batch_size=4, repeat=True,
                       spacing=spacing, augment=None)
    it = iter(ds)
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * 4 / (time.perf_counter() - start)


def subject_rate(read, count: int) -> float:
    start = time.perf_counter()
    read()
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--shape", type=int, nargs=3, default=(96, 96, 64))
    parser.add_argument("--batches", type=int, default=24)
    args = parser.parse_args()
    out = {}
    for n in (1, 2):
        rate = train_rate([f"/cpu:{i}" for i in range(n)], args.steps, batch=4)
        out[f"train_steps_per_s_{n}_device"] = round(rate, 3)
        print(f"training, {n} logical CPU device(s): {rate:.2f} steps/s "
              f"({rate * 4:.1f} patches/s, global batch 4)")
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = synthesize("msd_brats", Path(tmp) / "data", subjects=args.subjects, seed=0,
                               shape=tuple(args.shape))
        spec = load_spec(spec_path)
        config = TASKS["tumor-segmentation"].config("small").preprocess.to_dict()
        start = time.perf_counter()
        write_shards(spec, Path(tmp) / "shards", config, progress=False)
        print(f"wrote {args.subjects} subjects of {tuple(args.shape)}x4 to shards in "
              f"{time.perf_counter() - start:.1f} s")
        nifti = ManifestLoader(spec.manifest(), config, label_values=spec.label_values)
        shards = ShardLoader(Path(tmp) / "shards", config=config, label_values=spec.label_values)
        spacing = nifti(0).spacing
        n = len(nifti)
        out["subjects_per_s_nifti"] = round(subject_rate(
            lambda: [nifti(i) for i in range(n)], n), 2)
        out["subjects_per_s_shard_loader"] = round(subject_rate(
            lambda: [shards(i) for i in range(n)], n), 2)
        out["subjects_per_s_shard_dataset"] = round(subject_rate(
            lambda: list(shard_dataset(Path(tmp) / "shards")), n), 2)
        for name, loader in (("nifti", nifti), ("tfrecord", shards)):
            out[f"patches_per_s_{name}"] = round(patch_rate(loader, spacing, args.batches), 2)
    print(f"subjects/s: NIfTI + preprocessing {out['subjects_per_s_nifti']}, "
          f"ShardLoader {out['subjects_per_s_shard_loader']}, "
          f"shard_dataset (parallel) {out['subjects_per_s_shard_dataset']}")
    print(f"patch pipeline: NIfTI {out['patches_per_s_nifti']} patches/s, "
          f"TFRecord shards {out['patches_per_s_tfrecord']} patches/s")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
