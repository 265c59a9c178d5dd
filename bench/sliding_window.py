"""Speed and memory of sliding-window inference on a BraTS-sized scan.

A 240x240x155 volume with 4 channels is predicted with 160x160x16 tiles at
overlap 0.25 and 0.5, without and with flip TTA (all 8 flips), by

- a model that returns its input: the time is the cost of tiling, flipping
  and blending alone, and the memory is what inference itself adds;
- the system C 3D U-Net (depth 4, conv 3x3x3 + ReLU pairs 32->64 ... 256->512,
  2x2x2 max-pooling, upsampling + concatenation, decoder 256/128/64, 1x1x1
  conv to 3 sigmoid channels), with random weights.

On a CPU the U-Net needs many seconds per tile, so by default its time per
volume is estimated: its measured seconds per tile times the tiles (and flips)
of each configuration, plus the measured tiling/blending time. ``--full``
predicts every whole volume with the U-Net instead (a GPU job).

Memory: ``traced`` is tracemalloc's peak of the numpy allocations made during
the call (output, tile batches, weights); ``rss`` is the process's peak
resident memory (VmHWM, reset before the call) above its resident memory
before the call. Both are given as multiples of the input volume's size.

Usage: python bench/sliding_window.py [--quick] [--full] [--batch-size N]
The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import tracemalloc

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

from brain_tf.inference import sliding_window_predict, tile_grid  # noqa: E402
from brain_tf.inference.calling import predict_batch  # noqa: E402

SHAPE = (240, 240, 155, 4)
PATCH = (160, 160, 16)
CONFIGS = [(0.25, False), (0.5, False), (0.25, True), (0.5, True)]


def system_c_unet(channels: int = 4, classes: int = 3) -> keras.Model:
    """The system C 3D U-Net, built with plain Keras layers."""

    def conv(x, filters, name):
        return layers.Conv3D(filters, 3, padding="same", activation="relu", name=name)(x)

    inputs = keras.Input((None, None, None, channels), name="image")
    x, skips = inputs, []
    for level, (first, second) in enumerate([(32, 64), (64, 128), (128, 256)], start=1):
        x = conv(conv(x, first, f"enc{level}_conv1"), second, f"enc{level}_conv2")
        skips.append(x)
        x = layers.MaxPooling3D(2, name=f"enc{level}_pool")(x)
    x = conv(conv(x, 256, "bottleneck_conv1"), 512, "bottleneck_conv2")
    for level, filters in zip((3, 2, 1), (256, 128, 64)):
        x = layers.UpSampling3D(2, name=f"dec{level}_up")(x)
        x = layers.Concatenate(name=f"dec{level}_concat")([x, skips[level - 1]])
        x = conv(conv(x, filters, f"dec{level}_conv1"), filters, f"dec{level}_conv2")
    outputs = layers.Conv3D(classes, 1, activation="sigmoid", name="head")(x)
    return keras.Model(inputs, outputs, name="unet3d_system_c")


class TimedModel:
    """A callable that forwards to a model and adds up the seconds spent in it."""

    def __init__(self, model):
        self.model, self.seconds, self.calls = model, 0.0, 0

    def __call__(self, batch):
        start = time.perf_counter()
        out = predict_batch(self.model, batch)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


def _status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(fn, trace: bool):
    """Run fn(); return (result, seconds, extra RSS peak bytes, extra traced bytes)."""
    base_rss = _status_bytes("VmRSS")
    can_reset = _reset_peak_rss()
    if trace:
        tracemalloc.start()
        base_traced = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    traced = None
    if trace:
        traced = tracemalloc.get_traced_memory()[1] - base_traced
        tracemalloc.stop()
    peak = _status_bytes("VmHWM") if can_reset else None
    rss = peak - base_rss if peak is not None and base_rss is not None else None
    return result, seconds, rss, traced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="time one U-Net batch instead of three")
    parser.add_argument("--full", action="store_true",
                        help="predict whole volumes with the U-Net (slow on a CPU)")
    parser.add_argument("--batch-size", type=int, default=2)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    volume = rng.standard_normal(SHAPE, dtype=np.float32)
    input_bytes = volume.nbytes
    print(f"volume {SHAPE} float32 = {input_bytes / 2**20:.1f} MiB, tiles {PATCH}, "
          f"batch {args.batch_size}, {platform.machine()} {os.cpu_count()} CPUs")

    identity = {}
    for overlap, tta in CONFIGS:
        tiles = len(tile_grid(SHAPE[:3], PATCH, overlap))
        flips = 8 if tta else 1
        def run(model, overlap=overlap, tta=tta):
            return lambda: sliding_window_predict(model, volume, PATCH, overlap, tta=tta,
                                                  batch_size=args.batch_size)

        model = TimedModel(lambda batch: batch)
        out, seconds, rss, _ = measure(run(model), trace=False)
        assert np.allclose(out, volume, atol=1e-5), "identity model must reproduce the input"
        del out
        _, _, _, traced = measure(run(lambda batch: batch), trace=True)
        identity[(overlap, tta)] = dict(
            overlap=overlap, tta=tta, tiles=tiles, flips=flips, seconds=round(seconds, 3),
            seconds_in_model=round(model.seconds, 3),
            extra_traced_x=round(traced / input_bytes, 3),
            extra_rss_x=None if rss is None else round(rss / input_bytes, 3))
        print(f"identity model  overlap {overlap:<4} tta {flips} flips: {tiles:3d} tiles, "
              f"{seconds:6.2f} s/volume, extra memory {traced / input_bytes:.2f}x input "
              f"(traced), {rss / input_bytes if rss is not None else float('nan'):.2f}x (RSS)")

    unet = system_c_unet()
    tiles_in = np.ascontiguousarray(
        np.stack([volume[i * 40:i * 40 + PATCH[0], 40:200, 60:76] for i in
                  range(args.batch_size)]))
    _, warmup, warm_rss, _ = measure(lambda: unet.predict_on_batch(tiles_in), trace=False)
    reps = 1 if args.quick else 3
    _, seconds, _, _ = measure(lambda: [unet.predict_on_batch(tiles_in) for _ in range(reps)],
                               trace=False)
    per_tile = seconds / (reps * args.batch_size)
    print(f"U-Net ({unet.count_params():,} parameters): {per_tile:.2f} s per tile "
          f"(batch {args.batch_size}, {reps} timed calls after a {warmup:.1f} s first call; "
          f"first call's extra RSS {warm_rss / 2**20 if warm_rss else float('nan'):.0f} MiB)")

    results = []
    for overlap, tta in CONFIGS:
        ident = identity[(overlap, tta)]
        model_seconds = ident["tiles"] * ident["flips"] * per_tile
        row = dict(ident, unet_seconds_per_tile=round(per_tile, 3))
        if args.full:
            timed = TimedModel(unet)
            _, total, rss, _ = measure(
                lambda: sliding_window_predict(timed, volume, PATCH, overlap, tta=tta,
                                               batch_size=args.batch_size), trace=False)
            row.update(unet_seconds=round(total, 2), unet_seconds_in_model=round(timed.seconds, 2),
                       unet_extra_rss_x=None if rss is None else round(rss / input_bytes, 3),
                       unet_measured=True,
                       overhead_fraction=round((total - timed.seconds) / timed.seconds, 4))
        else:
            total = model_seconds + ident["seconds"]
            row.update(unet_seconds=round(total, 1), unet_measured=False,
                       overhead_fraction=round(ident["seconds"] / model_seconds, 4))
        results.append(row)
        print(f"U-Net           overlap {overlap:<4} tta {ident['flips']} flips: "
              f"{row['unet_seconds']:8.1f} s/volume ({'measured' if args.full else 'estimated'}), "
              f"tiling+blending {100 * row['overhead_fraction']:.2f}% of model time")

    print(json.dumps(dict(
        volume_shape=SHAPE, input_bytes=input_bytes, patch=PATCH, batch_size=args.batch_size,
        cpus=os.cpu_count(), unet_parameters=unet.count_params(),
        unet_seconds_per_tile=round(per_tile, 3), unet_first_call_seconds=round(warmup, 2),
        unet_batch_rss_bytes=warm_rss, configs=results,
        max_overhead_fraction=max(r["overhead_fraction"] for r in results),
        max_extra_traced_x=max(r["extra_traced_x"] for r in results))))


if __name__ == "__main__":
    main()
