"""Training-step time of each model builder and the cost of whole-volume evaluation
(prints figures; asserts nothing).

    python bench/models_and_evaluation.py [--steps 3] [--skip-models] [--models NAME ...]
                                          [--skip-conv] [--skip-eval]

1. For every registered model at its task's input size (or a CPU-sized one,
   printed): parameter count and seconds per training step (graph mode, no
   XLA, after one warm-up step), median of ``--steps`` steps.
2. Grouped 3^3 convolution (128 channels, 32 groups, batch 1), forward and
   backward: Keras' ``Conv3D(groups=32)`` (XLA-compiled by Keras on
   TensorFlow) versus brain_tf's ``GroupedConv3D`` (one convolution per group).
3. ``segmentation_metrics`` on a 240x240x155 BraTS-sized label map with three
   labels, and HD95 of a small structure with and without cropping to the
   masks' bounding box (what ``surface_distances`` does).

Run alone for stable figures: TensorFlow uses every core. The last line is
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from scipy import ndimage  # noqa: E402

from brain_tf.evaluation import hd95, segmentation_metrics  # noqa: E402
from brain_tf.losses import DiceCELoss, SoftDiceLoss  # noqa: E402
from brain_tf.models import build_model  # noqa: E402
from brain_tf.models.layers import GroupedConv3D  # noqa: E402

CASES = [
    # name, config, batch size, loss
    ("unet3d", {"input_shape": (64, 64, 16, 4)}, 2, SoftDiceLoss(squared_pred=True)),
    ("unet3d", {"input_shape": (64, 64, 16, 4), "base_filters": 16, "second_conv_factor": 1},
     2, SoftDiceLoss(squared_pred=True)),
    ("resunet3d", {"input_shape": (64, 64, 64, 1)}, 2, DiceCELoss()),
    ("resnext3d_50", {"input_shape": (64, 64, 64, 1)}, 4, "mse"),
    ("resnext3d_small", {"input_shape": (64, 64, 64, 1)}, 4, "mse"),
    ("cnn3d", {"input_shape": (128, 128, 128, 1)}, 1, "mse"),
    ("resnet_classifier", {"input_shape": (224, 224, 3),
                           "num_outputs": {"perspective": 3, "sequence": 4}}, 8,
     "categorical_crossentropy"),
    ("unet2d_resnet", {"input_shape": (256, 256, 3)}, 16, DiceCELoss()),
]


def _targets(model, batch, rng):
    def one(shape):
        classes = shape[-1]
        if classes == 1:
            return rng.normal(size=(batch, 1)).astype("float32")
        labels = rng.integers(0, classes, size=(batch,) + tuple(shape[1:-1]))
        return np.eye(classes, dtype="float32")[labels]

    if isinstance(model.output, dict):
        return {k: one(v.shape) for k, v in model.output.items()}
    return one(model.output.shape)


def time_models(steps: int, only: list[str] | None = None) -> dict:
    rng = np.random.default_rng(0)
    figures = {}
    for name, config, batch, loss in CASES:
        if only and name not in only:
            continue
        model = build_model(name, **config)
        x = rng.normal(size=(batch,) + model.input_shape[1:]).astype("float32")
        y = _targets(model, batch, rng)
        model.compile(optimizer="adam", loss=loss, jit_compile=False)
        model.train_on_batch(x, y)  # trace and build the optimizer
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            model.train_on_batch(x, y)
            times.append(time.perf_counter() - start)
        key = f"{name} {config['input_shape']} x{batch}"
        if name == "unet3d" and config.get("base_filters") == 16:
            key += " base16"
        figures[key] = {"params": model.count_params(), "s_per_step": statistics.median(times)}
        print(f"{key:52s} {model.count_params():>11,d} params "
              f"{statistics.median(times):7.2f} s/step", flush=True)
        keras.backend.clear_session()
    return figures


def time_grouped_conv(repeats: int = 3) -> dict:
    figures = {}
    for size in (16, 32):
        x = tf.random.normal((1, size, size, size, 128))
        for label, layer in (("keras Conv3D(groups=32)", keras.layers.Conv3D(128, 3, padding="same",
                                                                             groups=32)),
                             ("GroupedConv3D", GroupedConv3D(128, 3, padding="same", groups=32))):
            layer.build(x.shape)

            @tf.function
            def step(x, layer=layer):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = tf.reduce_sum(tf.square(layer(x)))
                return tape.gradient(y, [x] + layer.trainable_weights)

            step(x)
            start = time.perf_counter()
            for _ in range(repeats):
                step(x)
            seconds = (time.perf_counter() - start) / repeats
            figures[f"{label} {size}^3"] = seconds
            print(f"{label:26s} {size}^3 x 128 ch: {seconds * 1000:7.0f} ms forward+backward",
                  flush=True)
    return figures


def _ellipsoid(shape, centre, radii):
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1


def time_evaluation() -> dict:
    shape, spacing = (240, 240, 155), (1.0, 1.0, 1.0)
    ref = np.zeros(shape, np.uint8)
    ref[_ellipsoid(shape, (120, 110, 80), (40, 35, 30))] = 1
    ref[_ellipsoid(shape, (120, 110, 80), (25, 22, 18))] = 2
    ref[_ellipsoid(shape, (118, 112, 78), (12, 10, 9))] = 3
    pred = ndimage.shift(ref, (2, -1, 1), order=0)
    start = time.perf_counter()
    table = segmentation_metrics(pred, ref, labels=[1, 2, 3], spacing=spacing)
    full = time.perf_counter() - start
    print(f"segmentation_metrics 240x240x155, 3 labels: {full:.2f} s "
          f"(HD95 {', '.join(f'{v:.2f}' for v in table['hd95_mm'])} mm)")

    small_ref = _ellipsoid(shape, (120, 110, 80), (6, 8, 5))
    small_pred = _ellipsoid(shape, (121, 110, 81), (6, 7, 5))
    start = time.perf_counter()
    cropped_value = hd95(small_pred, small_ref, spacing)
    cropped = time.perf_counter() - start
    start = time.perf_counter()
    structure = ndimage.generate_binary_structure(3, 1)
    surfaces = [m & ~ndimage.binary_erosion(m, structure) for m in (small_pred, small_ref)]
    to_ref = ndimage.distance_transform_edt(~surfaces[1], sampling=spacing)[surfaces[0]]
    to_pred = ndimage.distance_transform_edt(~surfaces[0], sampling=spacing)[surfaces[1]]
    uncropped_value = max(np.percentile(to_ref, 95), np.percentile(to_pred, 95))
    uncropped = time.perf_counter() - start
    print(f"hd95 of a hippocampus-sized structure in 240x240x155: {cropped * 1000:.1f} ms "
          f"cropped to its box, {uncropped * 1000:.1f} ms on the whole grid "
          f"(values {cropped_value:.3f} / {uncropped_value:.3f} mm)")
    return {"segmentation_metrics_s": full, "hd95_small_cropped_s": cropped,
            "hd95_small_whole_grid_s": uncropped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--skip-models", action="store_true")
    parser.add_argument("--models", nargs="*", help="time only these model names")
    parser.add_argument("--skip-conv", action="store_true")
    parser.add_argument("--skip-eval", action="store_true")
    args = parser.parse_args()
    figures = {}
    if not args.skip_eval:
        figures["evaluation"] = time_evaluation()
    if not args.skip_conv:
        figures["grouped_conv"] = time_grouped_conv()
    if not args.skip_models:
        figures["models"] = time_models(args.steps, args.models)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
