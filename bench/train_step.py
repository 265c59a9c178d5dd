"""Seconds per training step in float32 and in bfloat16, side by side.

Networks (``--networks``, all by default):

- ``twin``: the Keras twin of MONAI's UNet (bench/monai_twin.py), 160x160x16x4
  tiles, batch 2, a sigmoid Dice + cross-entropy loss on its 3 outputs, Adam;
- ``tumour``: the tumour ``default`` U-Net (depth 4, 32..512 filters, sigmoid heads)
  with the preset's loss, optimizer, patch 160x160x16x4 and batch 2;
- ``tissue``: the tissue ``synth`` ResUNet (the shipped pretrained:tissue) with its
  preset's loss, optimizer, patch and batch;
- ``brain``: the brain-extraction ``synth`` network (the shipped pretrained:brain)
  likewise.

Each network is built twice with the same initial weights, once per precision
(:func:`brain_tf.training.fit.compiled_model` with ``training.precision``), and
compiled as training compiles it; inputs are random normal, targets random labels.
After one warm-up step each (tracing, optimizer state), the two precisions' steps
are timed interleaved (float32, bfloat16, bfloat16, float32, ...) so that they see
the same load; the median of ``--steps`` steps is printed, with the ratio and the
load average. Read the ratios: the seconds move with the machine's load.

Usage: python bench/train_step.py [--steps N] [--networks twin tumour tissue brain]
The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from monai_twin import monai_unet_twin  # noqa: E402

from brain_tf.distribute import precision_policy  # noqa: E402
from brain_tf.distribute.precision import bfloat16_supported  # noqa: E402
from brain_tf.losses import DiceCELoss  # noqa: E402
from brain_tf.tasks import TASKS  # noqa: E402
from brain_tf.training.fit import compiled_model  # noqa: E402

PRECISIONS = ("float32", "bfloat16")
# network: (task, preset, input channels, outputs); twin: built here
PRESETS = {"tumour": ("tumor-segmentation", "default", 4, 3),
           "tissue": ("tissue-segmentation", "synth", 1, 4),
           "brain": ("brain-extraction", "synth", 1, 2)}


def load() -> float:
    return os.getloadavg()[0]


def twin(precision: str):
    """MONAI's UNet twin with a float32 sigmoid head, compiled with Adam."""
    with precision_policy(precision):
        net = monai_unet_twin()
        out = keras.layers.Activation("sigmoid", dtype="float32", name="head")(net.output)
        model = keras.Model(net.input, out)
    model.compile(optimizer=keras.optimizers.Adam(1e-4),
                  loss=DiceCELoss(output_activation="sigmoid"))
    return model, (2, 160, 160, 16, 4)


def preset_model(name: str, precision: str):
    task, preset, channels, outputs = PRESETS[name]
    config = TASKS[task].config(preset, {"training": {"precision": precision}})
    patch = tuple(config.sampler.patch_size)
    model = compiled_model(config, patch + (channels,), outputs, total_steps=1000)
    return model, (config.training.batch_size, *patch, channels)


def build(name: str, precision: str):
    keras.utils.set_random_seed(0)  # the same initial weights in both precisions
    return twin(precision) if name == "twin" else preset_model(name, precision)


def targets(model, shape, rng):
    classes = int(model.output.shape[-1])
    labels = rng.integers(0, classes, size=shape[:-1])
    return np.eye(classes, dtype="float32")[labels]


def time_network(name: str, steps: int) -> dict:
    rng = np.random.default_rng(0)
    models = {}
    for precision in PRECISIONS:
        models[precision], shape = build(name, precision)
    x = rng.standard_normal(shape).astype(np.float32)
    y = targets(models["float32"], shape, rng)
    first = {}
    for precision, model in models.items():
        loss = model.train_on_batch(x, y)  # warm-up: trace, build the optimizer
        first[precision] = round(float(np.ravel(loss)[0]), 5)
    times = {p: [] for p in PRECISIONS}
    for step in range(steps):
        order = PRECISIONS if step % 2 == 0 else PRECISIONS[::-1]
        for precision in order:
            start = time.perf_counter()
            models[precision].train_on_batch(x, y)
            times[precision].append(time.perf_counter() - start)
    f32, b16 = (float(np.median(times[p])) for p in PRECISIONS)
    row = dict(network=name, batch=list(shape), params=models["float32"].count_params(),
               float32_s=round(f32, 3), bfloat16_s=round(b16, 3), speedup=round(f32 / b16, 2),
               first_loss=first, load=round(load(), 2))
    print(f"{name:>7} | {'x'.join(map(str, shape[1:]))} x{shape[0]} | "
          f"{row['params']:>10,d} | {f32:7.3f} s | {b16:7.3f} s | {f32 / b16:5.2f}x | "
          f"{row['load']:.2f}", flush=True)
    keras.backend.clear_session()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per precision")
    parser.add_argument("--networks", nargs="+", default=["twin", "tumour", "tissue", "brain"],
                        choices=["twin", *PRESETS])
    args = parser.parse_args()
    if not bfloat16_supported():
        raise SystemExit("this machine has no bfloat16 (AMX / AVX-512 BF16 or a GPU of compute "
                         "capability 8.0+): nothing to compare")
    print(f"{platform.machine()} {os.cpu_count()} CPUs, TF {tf.__version__}, Keras "
          f"{keras.__version__}; median of {args.steps} steps, interleaved; load average "
          f"{load():.2f}", flush=True)
    print(f"{'network':>7} | input x batch | parameters | float32 | bfloat16 | speed-up | load")
    rows = [time_network(name, args.steps) for name in args.networks]
    print(json.dumps(dict(cpus=os.cpu_count(), rows=rows, load=round(load(), 2))))


if __name__ == "__main__":
    main()
