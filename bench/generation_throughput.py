"""Image generation from label maps against the training step it feeds.

Label maps: a phantom-sized head (an ellipsoid of 180 x 216 x 180 mm: scalp,
skull and extra-cerebral CSF shells around a brain cut into 26 regions by
nearest random seed points; 30 labels) on a grid of ``--spacing`` mm, held in
memory. Generation: :func:`brain_tf.pipeline.patch_dataset` with the
``synth`` preset (each artefact with its preset probability) and with every
step applied to every patch ("all on": warp, elastic, partial-volume blur,
thick slices, bias, Rician noise, gamma, field-of-view crop, skull
stripping), the 30 labels looked up to 4 classes. Model: a small 3D U-Net
(``unet3d``, depth 4, ``--filters`` base filters, instance norm, softmax over
the 4 classes), one training step on a fixed batch of the same patch size.

For each patch size it prints generated patches per second and CPU ms per
patch beside the training step's seconds and patches per second, and
``fed/step``: the step time of ``model.fit`` fed by the generating
pipeline against fed by one fixed batch (about 1 when training is limited
by the model step, not by generation). The last line is one JSON
object. Other programs on the machine lower the rates; the load average is
printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402

from brain_tf.models import build_model  # noqa: E402
from brain_tf.pipeline import PatchSampler, patch_dataset  # noqa: E402
from brain_tf.preprocess.aligned import as_aligned  # noqa: E402

HEAD_MM = np.array([180.0, 216.0, 180.0])
REGIONS = 26  # brain regions: labels 4..29
# classes (in order) and their labels: background (0 background, 1 scalp, 2 skull), CSF (3
# extra-cerebral CSF), GM and WM (the brain regions, alternately)
LOOKUP = [[0, 1, 2], [3], list(range(5, 4 + REGIONS, 2)), list(range(4, 4 + REGIONS, 2))]
ALL_ON = {"affine_p": 1.0, "elastic_p": 1.0, "blur_p": 1.0, "bias_p": 1.0, "noise_p": 1.0,
          "gamma_p": 1.0, "synth_slice_p": 1.0, "synth_rician_p": 1.0, "synth_crop_p": 1.0,
          "synth_strip_p": 1.0}


def head_labels(spacing: float, rng: np.random.Generator) -> np.ndarray:
    """A 30-label head phantom (uint8) of HEAD_MM on a ``spacing`` mm grid."""
    shape = tuple(int(n) for n in np.round(HEAD_MM / spacing))
    axes = [(np.arange(n) - (n - 1) / 2) * spacing for n in shape]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    radius = np.sqrt((((grid / (HEAD_MM / 2)) ** 2).sum(-1)))  # 1 on the head's surface
    label = np.zeros(shape, np.uint8)
    for value, r in ((1, 0.97), (2, 0.92), (3, 0.86)):
        label[radius < r] = value
    brain = radius < 0.82
    seeds = rng.uniform(-0.8, 0.8, (REGIONS, 3)) * HEAD_MM / 2 * 0.7
    region = cKDTree(seeds).query(grid[brain])[1]
    label[brain] = 4 + region.astype(np.uint8)
    return as_aligned(label, np.uint8)


def dataset(subjects, spacing, patch: int, augment, batch: int):
    sampler = PatchSampler((patch,) * 3, mode="foreground", patches_per_subject=4,
                           foreground_p=1.0)
    return patch_dataset(subjects, sampler, num_classes=4, augment=augment, batch_size=batch,
                         shuffle_buffer=4, seed=0, spacing=(spacing,) * 3, repeat=True,
                         label_lookup=LOOKUP)


def generation_rate(ds, patches: int):
    """(patches per second, CPU ms per patch) after two batches (compilation excluded)."""
    it = iter(ds)
    for _ in range(2):
        next(it)
    start, cpu, seen = time.perf_counter(), time.process_time(), 0
    while seen < patches:
        seen += int(next(it)[0].shape[0])
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return seen / elapsed, 1000.0 * cpu / seen


def model_step(ds, patch: int, filters: int, steps: int):
    """(s per step on one fixed batch, s per step fed by ``ds``) of a small 3D U-Net.

    Both run through ``model.fit`` (the fixed batch as a repeated dataset), so
    they differ only in where the batches come from.
    """
    model = build_model("unet3d", input_shape=(patch,) * 3 + (1,), num_outputs=4,
                        base_filters=filters, depth=4, norm="instance",
                        output_activation="softmax")
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    fixed = tf.data.Dataset.from_tensors(next(iter(ds))).repeat()

    def seconds_per_step(data):
        model.fit(data, steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)  # warm up
        start = time.perf_counter()
        model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
        return (time.perf_counter() - start) / steps

    return seconds_per_step(fixed), seconds_per_step(ds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spacing", type=float, default=1.5, help="label-map voxel size, mm")
    parser.add_argument("--patches", type=int, nargs="+", default=[96, 128], help="patch sizes")
    parser.add_argument("--subjects", type=int, default=2)
    parser.add_argument("--timed", type=int, default=24, help="patches timed per setting")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--filters", type=int, default=8, help="U-Net base filters")
    parser.add_argument("--steps", type=int, default=3, help="training steps timed")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    start = time.perf_counter()
    labels = [head_labels(args.spacing, rng) for _ in range(args.subjects)]
    # generation ignores the image: one shared dummy keeps memory down
    dummy = as_aligned(np.zeros(labels[0].shape, np.float32))
    subjects = [(dummy, label) for label in labels]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{args.subjects} label maps {labels[0].shape} at {args.spacing} mm, "
          f"{len(np.unique(labels[0]))} labels, made in {time.perf_counter() - start:.1f} s; "
          f"batch {args.batch}, {cores} CPU cores, TF {tf.__version__}, load average "
          f"{os.getloadavg()[0]:.1f}")
    strip = {"synth_strip_labels": [1, 2, 3]}
    settings = {"synth": {"preset": "synth", **strip},
                "synth_all_on": {"preset": "synth", **strip, **ALL_ON}}
    summary: dict = {"label_map": list(labels[0].shape), "spacing_mm": args.spacing,
                     "batch": args.batch, "unet_base_filters": args.filters, "cpu_cores": cores}
    for patch in args.patches:
        print(f"patch {patch}^3")
        for name, augment in settings.items():
            rate, cpu_ms = generation_rate(dataset(subjects, args.spacing, patch, augment,
                                                   args.batch), args.timed)
            summary[f"{name}_{patch}_patches_per_s"] = round(rate, 2)
            summary[f"{name}_{patch}_cpu_ms_per_patch"] = round(cpu_ms, 1)
            print(f"  generate {name:13s} {rate:6.1f} patches/s  {cpu_ms:6.1f} CPU ms/patch  "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
        fixed, fed = model_step(dataset(subjects, args.spacing, patch, "synth", args.batch),
                                patch, args.filters, args.steps)
        summary[f"unet_{patch}_s_per_step"] = round(fixed, 3)
        summary[f"unet_{patch}_fed_over_fixed"] = round(fed / fixed, 3)
        print(f"  train step (unet3d, {args.filters} filters) {fixed:6.2f} s  "
              f"{args.batch / fixed:6.2f} patches/s   fed by the synth pipeline {fed:6.2f} s "
              f"(fed/step {fed / fixed:4.2f})  load {os.getloadavg()[0]:.1f}", flush=True)
    summary["load_average_1min"] = round(os.getloadavg()[0], 2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
