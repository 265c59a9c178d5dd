"""Speed and memory of whole-volume prediction on BraTS-sized scans.

The network is the Keras twin of MONAI's strided 3D UNet (bench/monai_twin.py,
488,457 parameters), with random weights; the volume is 240x240x155 with 4
channels, the tiles 160x160x16, Gaussian blending. Printed:

1. The table: overlap 0.25 and 0.5, tile batch 1 and 4, seconds per volume of
   sliding_window_predict's numpy path (``compiled=False``) and of its compiled
   path, side by side, and the tiling and blending overhead of each:
   (volume time - network time) / network time. The network time is the model
   alone, as a compiled function on a tile batch already in memory (the call
   the compiled path makes), called as many times as the volume has batches.
   The three are run interleaved; the median of ``--reps`` runs is shown.
2. Tiling and blending alone: the same with a 1x1x1 convolution as the model.
3. Extra peak memory of one volume (overlap 0.5, batch 4) for each path, as a
   multiple of the input's size: the process's peak resident memory during the
   call (VmHWM, reset before it) minus its resident memory before, measured in
   a fresh process per path after a warm-up on a smaller volume; the compiled
   path with a numpy input and with an input from ``aligned_empty``.
4. ONNX: the network exported with export_onnx (checked against Keras on a
   tile), ONNX Runtime's time per tile batch against TensorFlow's, and a whole
   volume with the ONNX predictor (numpy path).
5. Precision: whole-volume time (overlap 0.5, tile batch 4, compiled path) and the
   network alone, in float32 and in bfloat16 side by side (the same weights, the model
   rebuilt by brain_tf.distribute.in_precision), for the MONAI UNet twin and for the
   tumour ``default`` U-Net (depth 4, 32..512 filters, sigmoid heads, random weights);
   the four timings are run interleaved. The twin's target: at most 0.75 x MONAI's
   float32 2.50 s per volume (measured with MONAI 1.6.1 on this machine class), and
   tiling and blending under 5 % of the network's time. ``--precision-only`` prints
   only this table.
6. Cohort: ``--cohort N`` BraTS-size phantoms (brain_tf.data.synthetic,
   written once under ``--workdir``) read, z-scored, predicted and their label
   maps written by brain_tf.inference.cohort.run_cohort, against N times the
   time of one volume's prediction alone (median of three runs before the
   cohort and three after).

Timings on a shared machine move with its load: the load average is printed
with every figure, and alternatives are run interleaved.

Usage: python bench/sliding_window.py [--reps N] [--cohort N] [--workdir DIR]
       [--skip-onnx] [--skip-memory] [--skip-precision] [--precision-only]
The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from monai_twin import PARAMETERS, monai_unet_twin  # noqa: E402

from brain_tf.distribute import in_precision  # noqa: E402
from brain_tf.distribute.precision import bfloat16_supported  # noqa: E402
from brain_tf.inference import (  # noqa: E402
    aligned_empty,
    sliding_window_predict,
    tile_grid,
    to_label_map,
)

SHAPE = (240, 240, 155, 4)
PATCH = (160, 160, 16)
ROWS = [(0.25, 1), (0.25, 4), (0.5, 1), (0.5, 4)]


def load() -> float:
    return os.getloadavg()[0]


def median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def tile_batch(volume: np.ndarray, batch: int) -> np.ndarray:
    return np.ascontiguousarray(np.stack([volume[20 * i:20 * i + PATCH[0], 40:200, 60:76]
                                          for i in range(batch)]))


def volume_rows(model, volume, reps: int, label: str) -> list[dict]:
    """Whole-volume seconds of both paths and of the network alone, for every row of ROWS.

    The three are run interleaved, in a rotating order, so that they see the
    same machine load. The network alone is the compiled model called on a
    tile batch already in memory as many times as the volume has batches.
    """
    call = tf.function(lambda x: model(x, training=False))
    batches = {b: tf.constant(tile_batch(volume, b)) for b in (1, 4)}
    for tiles in batches.values():
        call(tiles)
        call(tiles)
    rows = []
    for overlap, batch in ROWS:
        tiles = len(tile_grid(SHAPE[:3], PATCH, overlap))
        runs = {
            "numpy": lambda: sliding_window_predict(model, volume, PATCH, overlap,
                                                    batch_size=batch, compiled=False),
            "compiled": lambda: sliding_window_predict(model, volume, PATCH, overlap,
                                                       batch_size=batch),
            "network": lambda: [call(batches[batch]) for _ in range(-(-tiles // batch))],
        }
        for kind in ("numpy", "compiled"):  # warm-up: traces and compiles
            runs[kind]()
        times = {kind: [] for kind in runs}
        order = list(runs)
        for rep in range(reps):
            for kind in order[rep % 3:] + order[:rep % 3]:
                start = time.perf_counter()
                runs[kind]()
                times[kind].append(time.perf_counter() - start)
        network, numpy_s, compiled_s = (float(np.median(times[k]))
                                        for k in ("network", "numpy", "compiled"))
        row = dict(overlap=overlap, batch=batch, tiles=tiles, network_s=round(network, 3),
                   network_ms_per_tile=round(1000 * network / tiles, 2),
                   numpy_s=round(numpy_s, 3), compiled_s=round(compiled_s, 3),
                   numpy_overhead=round((numpy_s - network) / network, 4),
                   compiled_overhead=round((compiled_s - network) / network, 4),
                   load=round(load(), 2))
        rows.append(row)
        print(f"{label:>9} | {overlap:<4} | {batch:^5} | {tiles:3d} | {network:6.2f} s "
              f"({row['network_ms_per_tile']:5.1f} ms/tile) | "
              f"{numpy_s:6.2f} s ({100 * row['numpy_overhead']:+6.1f}%) | "
              f"{compiled_s:6.2f} s ({100 * row['compiled_overhead']:+6.1f}%) | "
              f"{compiled_s / numpy_s:5.2f} | {row['load']:.2f}", flush=True)
    return rows


MONAI_FLOAT32_S = 2.50  # MONAI 1.6.1's whole-volume time for its UNet (overlap 0.5, batch 4)


def tumour_default_unet():
    """The tumour ``default`` preset's U-Net (random weights) on 4-channel tiles."""
    from brain_tf.models import build_model
    from brain_tf.tasks import TASKS

    options = dict(TASKS["tumor-segmentation"].config("default").model)
    return build_model(options.pop("name"), input_shape=(None, None, None, SHAPE[3]),
                       num_outputs=3, **options)


def precision_rows(label: str, model, volume, reps: int, network_calls: int,
                   whole: bool = True) -> list[dict]:
    """Whole-volume seconds (compiled path, overlap 0.5, batch 4) and the network alone,
    in float32 and bfloat16, the four run interleaved in a rotating order. The network
    alone is the median of ``network_calls`` calls on a batch of 4 tiles times the
    volume's number of batches (the warm-up traces on a small crop of the volume: the
    compiled function does not depend on the volume's size). ``whole=False``: the
    network alone only (a network too slow for whole volumes on a busy machine)."""
    overlap, batch = 0.5, 4
    tiles = len(tile_grid(SHAPE[:3], PATCH, overlap))
    batches = -(-tiles // batch)
    tensor = tf.constant(tile_batch(volume, batch))
    crop = np.ascontiguousarray(volume[:, :, :40])
    runs = {}
    for precision in ("float32", "bfloat16"):
        net = in_precision(model, precision)
        call = tf.function(lambda x, net=net: net(x, training=False))
        call(tensor)
        if whole:
            sliding_window_predict(net, crop, PATCH, overlap, batch_size=batch)  # warm-up
            runs[(precision, "volume")] = lambda net=net: sliding_window_predict(
                net, volume, PATCH, overlap, batch_size=batch)
        runs[(precision, "network")] = lambda call=call: [
            call(tensor) for _ in range(network_calls)]
    times = {key: [] for key in runs}
    order = list(runs)
    for rep in range(reps):
        for key in order[rep % len(order):] + order[:rep % len(order)]:
            start = time.perf_counter()
            runs[key]()
            times[key].append(time.perf_counter() - start)
    median = {key: float(np.median(t)) for key, t in times.items()}
    for precision in ("float32", "bfloat16"):
        median[(precision, "network")] *= batches / network_calls
    rows = []
    kind = "volume" if whole else "network"
    for precision in ("float32", "bfloat16"):
        network_s = median[(precision, "network")]
        volume_s = median.get((precision, "volume"), float("nan"))
        row = dict(network=label, precision=precision, tiles=tiles, volume_s=round(volume_s, 3),
                   network_s=round(network_s, 3),
                   overhead=round((volume_s - network_s) / network_s, 4),
                   speedup=round(median[("float32", kind)] / median[(precision, kind)], 2),
                   load=round(load(), 2))
        rows.append(row)
        if whole:
            measured = (f"{volume_s:7.2f} s | {network_s:7.2f} s | {100 * row['overhead']:+6.1f}%"
                        f" | {row['speedup']:5.2f}x | {volume_s / MONAI_FLOAT32_S:5.2f}")
        else:
            measured = f"      - | {network_s:7.2f} s |       - | {row['speedup']:5.2f}x |     -"
        print(f"{label:>14} | {precision:>8} | {measured} | {row['load']:.2f}", flush=True)
    return rows


def precision_table(volume, reps: int, tumour_reps: int = 1, skip_twin: bool = False
                    ) -> list[dict]:
    if not bfloat16_supported():
        print("precision table skipped: this machine has no bfloat16", flush=True)
        return []
    print(f"whole volume {SHAPE}, overlap 0.5, tile batch 4, compiled path; median of {reps}, "
          f"interleaved; load average {load():.2f}")
    print(f"{'network':>14} | {'compute':>8} | volume  | network | tiling+blending | "
          f"vs float32 | / MONAI float32 {MONAI_FLOAT32_S} s | load", flush=True)
    rows = [] if skip_twin else precision_rows("UNet twin", monai_unet_twin(), volume, reps,
                                               network_calls=19)
    rows += precision_rows("tumour default", tumour_default_unet(), volume, max(tumour_reps, 1),
                           network_calls=2, whole=tumour_reps > 0)
    return rows


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_probe(mode: str) -> None:
    """Run in a fresh process: print the extra peak RSS of one volume as JSON."""
    model = monai_unet_twin()
    volume = np.random.default_rng(0).standard_normal(SHAPE, dtype=np.float32)
    if mode == "compiled-aligned":
        aligned = aligned_empty(SHAPE)
        np.copyto(aligned, volume)
        volume = aligned
    compiled = mode != "numpy"
    small = np.ascontiguousarray(volume[:200, :200, :40])
    sliding_window_predict(model, small, PATCH, 0.5, batch_size=4, compiled=compiled)
    base = _status_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    out = sliding_window_predict(model, volume, PATCH, 0.5, batch_size=4, compiled=compiled)
    peak = _status_bytes("VmHWM")
    print(json.dumps(dict(extra_x=round((peak - base) / volume.nbytes, 3),
                          output_x=round(out.nbytes / volume.nbytes, 3))))


MEMORY_MODES = ("numpy", "compiled", "compiled-aligned")


def measure_memory() -> dict:
    out = {}
    for mode in MEMORY_MODES:
        proc = subprocess.run([sys.executable, __file__, "--memory-probe", mode],
                              capture_output=True, text=True, timeout=900)
        if proc.returncode:
            raise RuntimeError(f"memory probe failed:\n{proc.stderr[-2000:]}")
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def onnx_figures(model, volume, compiled_s: float, reps: int, folder: Path) -> dict:
    from brain_tf.inference.onnx_model import OnnxPredictor, export_onnx

    path = folder / "monai_twin.onnx"
    start = time.perf_counter()
    export_onnx(model, path, sample=tile_batch(volume, 1))  # raises unless within 1e-4
    export_s = time.perf_counter() - start
    predictor = OnnxPredictor(path)
    tiles1 = tile_batch(volume, 1)
    diff = float(np.abs(predictor(tiles1) - model.predict_on_batch(tiles1)).max())
    call = tf.function(lambda x: model(x, training=False))
    figures = dict(export_s=round(export_s, 1), max_abs_diff=diff, per_batch={})
    for batch in (1, 4):
        tiles = tile_batch(volume, batch)
        tensor = tf.constant(tiles)
        predictor(tiles)
        ort_s, tf_s = [], []
        for _ in range(max(reps, 5)):
            start = time.perf_counter()
            predictor(tiles)
            ort_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            call(tensor).numpy()
            tf_s.append(time.perf_counter() - start)
        ort, tfs = float(np.median(ort_s)), float(np.median(tf_s))
        figures["per_batch"][batch] = dict(onnxruntime_s=round(ort, 4), tensorflow_s=round(tfs, 4))
        print(f"ONNX Runtime, batch {batch}: {1000 * ort / batch:.1f} ms per tile, TensorFlow "
              f"{1000 * tfs / batch:.1f} ms (load {load():.2f})", flush=True)
    sliding_window_predict(predictor, volume, PATCH, 0.5, batch_size=4)
    whole = median_time(lambda: sliding_window_predict(predictor, volume, PATCH, 0.5,
                                                       batch_size=4), reps)
    figures.update(volume_s=round(whole, 3), keras_compiled_volume_s=compiled_s)
    faster = whole < compiled_s
    print(f"ONNX export {export_s:.1f} s, max |ONNX - Keras| on a tile {diff:.2g}; whole volume "
          f"(overlap 0.5, batch 4) with the ONNX predictor {whole:.2f} s against "
          f"{compiled_s:.2f} s "
          f"for the compiled Keras path: ONNX Runtime is {'faster' if faster else 'slower'} "
          f"here (load {load():.2f})", flush=True)
    return figures


def phantoms(folder: Path, count: int) -> list[Path]:
    """``count`` BraTS-size phantom scans (generated once, kept in ``folder``)."""
    from brain_tf.data.synthetic.write_volumes import write_brats

    paths = [folder / "imagesTr" / f"BRATS_{i + 1:03d}.nii.gz" for i in range(count)]
    if not all(p.exists() for p in paths):
        start = time.perf_counter()
        write_brats(folder, count, 0, SHAPE[:3], (1.0, 1.0, 1.0), lambda: None)
        print(f"wrote {count} phantoms in {time.perf_counter() - start:.0f} s", flush=True)
    return paths


def cohort_figures(model, count: int, folder: Path) -> dict:
    from brain_tf.inference.cohort import run_cohort
    from brain_tf.io import load_volume, save_volume

    paths = phantoms(folder, count)
    out_dir = folder / "predictions"

    def prepare(path):  # z-score per channel, into an array TensorFlow reads without a copy
        vol = load_volume(path)
        mean = vol.array.mean(axis=(0, 1, 2))
        std = vol.array.std(axis=(0, 1, 2))
        image = aligned_empty(vol.array.shape)
        np.subtract(vol.array, mean, out=image, casting="unsafe")
        np.divide(image, np.where(std > 0, std, 1.0), out=image, casting="unsafe")
        return vol.affine, vol.header, image

    def predict(prepared):
        affine, header, array = prepared
        probs = sliding_window_predict(model, array, PATCH, 0.5, batch_size=4)
        return affine, header, to_label_map(probs, "sigmoid", merge="nested")

    def output(path):
        return [out_dir / path.name.replace(".nii.gz", "_seg.nii.gz")]

    def write(path, result):
        affine, header, labels = result
        save_volume(labels, output(path)[0], affine=affine, header=header)

    one = prepare(paths[0])
    predict(one)
    alone = [median_time(lambda: predict(one), 1) for _ in range(3)]
    load_before = load()
    result = run_cohort(paths, prepare, predict, write, output, skip_existing=False,
                        name=lambda p: p.name)
    alone += [median_time(lambda: predict(one), 1) for _ in range(3)]
    one_s = float(np.median(alone))  # three runs before the cohort, three after
    ratio = result.seconds / (count * one_s)
    print(f"cohort of {count}: {result.seconds:.1f} s = {60 * count / result.seconds:.2f} "
          f"scans/min;"
          f" {count} x one volume's prediction alone ({one_s:.2f} s) = {count * one_s:.1f} s; "
          f"ratio {ratio:.3f} (load {load_before:.2f} before, {load():.2f} after)", flush=True)
    return dict(scans=count, seconds=round(result.seconds, 2), one_volume_s=round(one_s, 3),
                ratio=round(ratio, 4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="timed runs per figure (median)")
    parser.add_argument("--cohort", type=int, default=20, help="phantom scans (0: skip)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) /
                        "brain_tf_bench_cohort", help="where the phantoms are written once")
    parser.add_argument("--skip-onnx", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-precision", action="store_true")
    parser.add_argument("--tumour-reps", type=int, default=1,
                        help="timed whole volumes of the tumour default U-Net (minutes each; "
                             "0: its network alone)")
    parser.add_argument("--skip-twin", action="store_true",
                        help="precision table: the tumour default U-Net only")
    parser.add_argument("--precision-only", action="store_true",
                        help="only the float32 / bfloat16 table")
    parser.add_argument("--memory-probe", choices=MEMORY_MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        memory_probe(args.memory_probe)
        return

    model = monai_unet_twin()
    if model.count_params() != PARAMETERS:
        raise SystemExit(f"twin has {model.count_params():,} parameters, MONAI's UNet "
                         f"{PARAMETERS:,}")
    volume = np.random.default_rng(0).standard_normal(SHAPE, dtype=np.float32)
    print(f"volume {SHAPE} float32 = {volume.nbytes / 2**20:.1f} MiB, tiles {PATCH}, "
          f"{platform.machine()} {os.cpu_count()} CPUs, TF {tf.__version__}, "
          f"Keras {keras.__version__}; network: MONAI UNet twin, {model.count_params():,} "
          f"parameters; load average {load():.2f}", flush=True)

    if args.precision_only:
        rows = precision_table(volume, args.reps, args.tumour_reps, args.skip_twin)
        print(json.dumps(dict(volume_shape=SHAPE, patch=PATCH, cpus=os.cpu_count(),
                              precision=rows, load=round(load(), 2))))
        return
    print(f"{'model':>9} | overlap | batch | tiles | network alone | numpy path (overhead) | "
          "compiled path (overhead) | compiled/numpy | load")
    rows = volume_rows(model, volume, args.reps, "UNet twin")
    inputs = keras.Input((None, None, None, SHAPE[3]))
    pointwise = keras.Model(inputs, keras.layers.Conv3D(3, 1)(inputs), name="conv1x1")
    point_rows = volume_rows(pointwise, volume, args.reps, "1x1 conv")
    for row in point_rows:
        row.update(numpy_blend_ms_per_tile=round(
            1000 * (row["numpy_s"] - row["network_s"]) / row["tiles"], 2),
                   compiled_blend_ms_per_tile=round(
            1000 * (row["compiled_s"] - row["network_s"]) / row["tiles"], 2))
        print(f"tiling+blending per tile, overlap {row['overlap']}, batch {row['batch']}: "
              f"numpy {row['numpy_blend_ms_per_tile']:.2f} ms, compiled "
              f"{row['compiled_blend_ms_per_tile']:.2f} ms")

    memory = None
    if not args.skip_memory:
        memory = measure_memory()
        print(f"extra peak memory, one volume at overlap 0.5, batch 4: numpy path "
              f"{memory['numpy']['extra_x']:.2f}x the input, compiled path "
              f"{memory['compiled']['extra_x']:.2f}x (input from numpy, copied for TensorFlow), "
              f"{memory['compiled-aligned']['extra_x']:.2f}x (input from aligned_empty, shared); "
              f"the output alone is {memory['compiled']['output_x']:.2f}x (load {load():.2f})",
              flush=True)

    onnx = None
    if not args.skip_onnx:
        with tempfile.TemporaryDirectory() as folder:
            onnx = onnx_figures(model, volume, rows[-1]["compiled_s"], args.reps, Path(folder))

    precision = None if args.skip_precision else precision_table(volume, args.reps,
                                                                 args.tumour_reps)
    cohort = cohort_figures(model, args.cohort, args.workdir) if args.cohort else None
    print(json.dumps(dict(
        volume_shape=SHAPE, patch=PATCH, cpus=os.cpu_count(), parameters=model.count_params(),
        rows=rows, pointwise_rows=point_rows, memory=memory, precision=precision,
        onnx=onnx, cohort=cohort, load=round(load(), 2))))


if __name__ == "__main__":
    main()
