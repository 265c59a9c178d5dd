"""Throughput of the segmentation patch pipeline in the system C (BraTS) setting.

Subjects: synthetic 240x240x155x4 float32 volumes with a tumour-like label
(three nested ellipsoids inside an ellipsoidal "brain"), held in memory.
Patches: 160x160x16x4 with background rejection (threshold 0.95), several
patches per loaded subject, batches of 2. Augmentation: the "brats" preset
(flips, rotation +-5 deg and scale 0.9-1.1 from a margin, gamma, noise), and
the same with every transform applied to every patch ("all on").

Prints patches per second and CPU milliseconds per patch for each setting;
the last line is one JSON object. Run it alone for stable rates: the pipeline
uses every core, and other programs on the machine lower the rate (not the
CPU time per patch). TF_CPU_ALLOCATOR_USE_BFC=true (TensorFlow's pooling CPU
allocator) avoids page faults on the large per-patch buffers.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from brain_tf.pipeline import PatchSampler, patch_dataset  # noqa: E402
from brain_tf.preprocess.aligned import as_aligned  # noqa: E402

SHAPE = (240, 240, 155)
PATCH = (160, 160, 16)


def synthetic_subject(rng: np.random.Generator):
    """A BraTS-sized subject: 4 channels, labels 0..3 in a tumour near the brain's centre."""
    axes = np.ogrid[tuple(slice(0, n) for n in SHAPE)]
    middle = np.array(SHAPE) / 2

    def ellipsoid(centre, radii):
        return sum(((a - c) / r) ** 2 for a, c, r in zip(axes, centre, radii)) < 1

    centre = middle + rng.uniform(-10, 10, 3)
    brain = ellipsoid(middle, (90, 105, 70))
    label = np.zeros(SHAPE, np.uint8)
    for value, radii in ((1, (38, 32, 26)), (2, (24, 20, 16)), (3, (14, 12, 10))):
        label[ellipsoid(centre, radii)] = value
    image = rng.standard_normal(SHAPE + (4,), dtype=np.float32)
    image *= 0.3
    image += brain[..., None] * np.array([1.0, 0.8, 0.6, 1.2], np.float32)
    image += (label[..., None] > 0) * np.array([1.5, 0.2, 0.9, 1.1], np.float32)
    # aligned like preprocess_subject's output, so TF wraps the arrays without copying
    return as_aligned(image), as_aligned(label)


def measure(subjects, augment, patches: int, patches_per_subject: int, batch: int):
    """(patches per second, CPU ms per patch) after the first batches (compilation excluded).

    CPU time counts every thread of this process, so it stays meaningful when
    other programs share the cores; cores / (CPU s per patch) is the rate the
    pipeline would reach with the machine to itself.
    """
    sampler = PatchSampler(PATCH, mode="rejection", patches_per_subject=patches_per_subject,
                           max_background=0.95, max_tries=1000)
    ds = patch_dataset(subjects, sampler, num_classes=4, augment=augment, drop_background=True,
                       batch_size=batch, shuffle_buffer=8, seed=0, repeat=True)
    it = iter(ds)
    for _ in range(2):
        next(it)
    start, cpu = time.perf_counter(), time.process_time()
    seen = 0
    while seen < patches:
        x, y = next(it)
        seen += int(x.shape[0])
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    stats = sampler.stats.as_dict()
    print(f"    sampler: {stats['subjects']} subjects, {stats['patches']} patches, "
          f"{stats['fallbacks']} fallbacks")
    return seen / elapsed, 1000.0 * cpu / seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--patches", type=int, default=80, help="patches timed per setting")
    parser.add_argument("--patches-per-subject", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--nojit", action="store_true", help="also time without XLA (slow)")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    subjects = [synthetic_subject(rng) for _ in range(args.subjects)]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    allocator = "bfc" if os.environ.get("TF_CPU_ALLOCATOR_USE_BFC", "").lower() in (
        "1", "true") else "default"
    print(f"{args.subjects} synthetic subjects {SHAPE + (4,)} made in "
          f"{time.perf_counter() - t0:.1f} s; patches {PATCH + (4,)}, "
          f"{args.patches_per_subject} per subject, batch {args.batch}, {cores} CPU cores, "
          f"TF {tf.__version__}, {allocator} CPU allocator, load average "
          f"{os.getloadavg()[0]:.1f}")
    all_on = {"preset": "brats", "affine_p": 1.0, "gamma_p": 1.0, "noise_p": 1.0}
    settings = {"noaug": None, "aug": "brats", "aug_all_on": all_on}
    if args.nojit:
        settings["aug_all_on_nojit"] = {**all_on, "jit": False}
    results = {}
    for name, augment in settings.items():
        rate, cpu_ms = measure(subjects, augment, args.patches, args.patches_per_subject,
                               args.batch)
        results[name] = (rate, cpu_ms)
        print(f"  {name:18s} {rate:6.1f} patches/s   {cpu_ms:5.1f} CPU ms/patch   "
              f"({1000.0 * cores / cpu_ms:5.1f}/s if the {cores} cores were free)")
    summary = {
        "patches_per_s_aug": round(results["aug"][0], 2),
        "patches_per_s_noaug": round(results["noaug"][0], 2),
    }
    for name, (rate, cpu_ms) in results.items():
        if name not in ("aug", "noaug"):
            summary[f"patches_per_s_{name}"] = round(rate, 2)
        summary[f"cpu_ms_per_patch_{name}"] = round(cpu_ms, 1)
    summary.update({"patch": list(PATCH) + [4], "subject": list(SHAPE) + [4],
                    "patches_per_subject": args.patches_per_subject, "batch": args.batch,
                    "cpu_cores": cores, "allocator": allocator,
                    "load_average_1min": round(os.getloadavg()[0], 2)})
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
