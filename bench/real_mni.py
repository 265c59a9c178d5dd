"""Tissue segmentation and brain extraction on the real MNI ICBM152 2009a T1 (evaluation only).

    python bench/real_mni.py --tissue RUN [--brain RUN] [--step 1] [--variants]
                             [--phantoms DIR] [--out DIR]

RUN is a run folder (``models/tissue-segmentation/...``) or a shipped model
(``pretrained:tissue``, ``pretrained:brain``). Each scan goes through the same path as
``brain-tf TASK predict`` (a NIfTI file in, a label map on its own grid out). Printed:

- tissue: Dice of CSF, GM and WM against the template's labels (argmax of background /
  CSF / GM / WM, see :mod:`brain_tf.evaluation.mni`) at 1 mm (``--step 2``: every other
  voxel, 2 mm), on the T1 and, with ``--variants``, on fixed contrast remaps (T2-like,
  gamma, V-shaped) and degraded versions (5 mm slices, a bias field, Rician noise, a head
  rotated 15 degrees, a cropped field of view), with the seconds each whole prediction
  took (brain extraction, network, refinement, writing). Each case is predicted by the
  network alone (its argmax inside the brain mask), refined (``[inference] refine_*``
  of the model, or the defaults) and, when antspyx is installed (a
  bench-only tool: ``pip install antspyx``), by ANTs Atropos (K-means 3 classes, MRF
  ``[0.1,1x1x1]``, ``[5,0]`` iterations, as antsAtroposN4 runs it) inside the same brain
  mask (the refined prediction's), its three classes matched to CSF / GM / WM by the
  permutation with the best mean Dice against the reference (an oracle the other two do
  not get), timed alone;
- brain extraction: the fraction of the template's brain (T1 > 0.2) inside the predicted
  mask, the mask's Dice, and the same on the variants; with ``--phantoms DIR`` (a
  ``brain-tf synth phantoms`` folder the model never saw, e.g. ``--seed 99``) also the
  mask Dice on its full-head scans of every contrast (T1w, T2w, PDw, FLAIR).

Nothing is fitted to the template: it is the yardstick.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from brain_tf.evaluation import dice
from brain_tf.evaluation.mni import CONTRASTS, VARIANTS, contrast, mni_reference
from brain_tf.io import load_volume, save_volume
from brain_tf.tasks import TASKS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from refine_options import parse_overrides  # noqa: E402


def _predict(task: str, model: str, ref, work: Path, name: str) -> tuple[np.ndarray, float]:
    scan = save_volume(ref.image, work / f"{name}.nii.gz")
    start = time.perf_counter()
    written = TASKS[task].predict(model, [str(scan)], work / f"{name}_out")
    seconds = time.perf_counter() - start
    return np.asarray(load_volume(written[0], dtype=None).array), seconds


def _cases(ref, variants: bool):
    yield "T1", ref
    if variants:
        for name in CONTRASTS:
            if name != "t1":
                yield name, contrast(ref, name)
        for name, make in VARIANTS.items():
            yield name, make(ref)


def atropos(case, mask: np.ndarray) -> tuple[np.ndarray | None, float]:
    """ANTs Atropos labels (0 outside ``mask``, 1-3 matched to CSF/GM/WM by the best
    permutation) and its seconds; ``(None, 0)`` without antspyx."""
    try:
        import ants
    except ImportError:
        return None, 0.0
    import itertools

    spacing = tuple(float(s) for s in case.image.spacing)
    image = ants.from_numpy(np.asarray(case.image.array, np.float32), spacing=spacing)
    roi = ants.from_numpy(mask.astype(np.float32), spacing=spacing)
    start = time.perf_counter()
    seg = ants.atropos(a=image, x=roi, i="Kmeans[3]", m="[0.1,1x1x1]", c="[5,0]")
    seconds = time.perf_counter() - start
    raw = seg["segmentation"].numpy().astype(np.uint8)
    best, labels = -1.0, raw
    for order in itertools.permutations((1, 2, 3)):
        mapped = np.choose(raw, (0,) + order).astype(np.uint8)
        score = np.mean([dice(mapped == c, case.tissue == c) for c in (1, 2, 3)])
        if score > best:
            best, labels = score, mapped
    return labels, seconds


def _network(model: str):
    from brain_tf.tasks import TASKS
    from brain_tf.training.runner import Context, model_run

    task = TASKS["tissue-segmentation"]
    run, path = model_run(model)
    ctx = Context(task, task.load_config(run), learned=run.load_learned())
    family = task.family(ctx.config.preset)
    return ctx, family, family.load_predictor(ctx, path)


def tissue(model: str, ref, work: Path, variants: bool, reference_mask: bool = False,
           overrides: dict | None = None) -> None:
    """Per case, one pass of the predict path split into its stages: brain extraction and
    preprocessing, the network (its probabilities on the scan's grid: the network alone
    is their argmax inside the mask), the refinement; then Atropos in the same mask. The
    T1 is also predicted whole by the command (``TASKS[...].predict``), timed end to end.
    ``reference_mask``: every method works inside the reference's brain (T1 > 0.2) instead
    of the brain model's mask, which tells the mask's errors from the tissue methods'.
    ``overrides`` replace refinement options (``bias_order=0``) for a diagnosis: the
    defaults are chosen on held-out phantoms, never here."""
    from brain_tf.inference.refine import RefineOptions, refine
    from brain_tf.inference.segment import Segmenter
    from brain_tf.preprocess.inverse import probabilities_on_grid, restrict_to_mask

    ctx, family, net = _network(model)
    options = RefineOptions.from_config(ctx.config.inference) or RefineOptions()
    options = dataclasses.replace(options, **(overrides or {}))
    print(f"\ntissue segmentation on the MNI template ({model}, refinement {options}):")
    print("  Dice CSF / GM / WM; seconds: brain mask + network, refinement, Atropos")
    print(f"  {'case':<14} {'network alone':>20} {'refined':>20} {'ANTs Atropos':>20} "
          f"{'s: mask+net':>11} {'refine':>6} {'ants':>5} {'load':>5}")
    for name, case in _cases(ref, variants):
        start = time.perf_counter()
        volume, mask, pre = family.prepare_scan(ctx, case.image)
        grid = volume.file_grid
        segmenter = Segmenter.from_config(ctx.config, len(ctx.learned["labels"]))
        probs = probabilities_on_grid(segmenter.probabilities(net, pre.image), pre.affine, grid)
        inside = restrict_to_mask(np.ones(grid.shape, np.uint8), mask, grid) > 0
        if reference_mask:
            inside = np.asarray(case.brain, bool)
        network = np.where(inside, np.argmax(probs, axis=-1), 0)
        seconds = [time.perf_counter() - start]
        start = time.perf_counter()
        refined = refine(grid.to_file(volume.array), probs, inside, volume.spacing,
                         options).labels()
        seconds.append(time.perf_counter() - start)
        cells = []
        for labels in (network, refined):
            cells.append(" / ".join(f"{dice(labels == c, case.tissue == c):.3f}"
                                    for c in (1, 2, 3)))
        ants_labels, ants_seconds = atropos(case, inside)
        if ants_labels is not None:
            cells.append(" / ".join(f"{dice(ants_labels == c, case.tissue == c):.3f}"
                                    for c in (1, 2, 3)))
        print(f"  {name:<14} " + " ".join(f"{c:>20}" for c in cells)
              + f" {seconds[0]:11.1f} {seconds[1]:6.1f} {ants_seconds:5.1f} "
              f"{os.getloadavg()[0]:5.1f}", flush=True)
        if name == "T1" and not (reference_mask or overrides):
            labels, whole = _predict("tissue-segmentation", model, case, work, name)
            scores = " / ".join(f"{dice(labels == c, case.tissue == c):.3f}" for c in (1, 2, 3))
            print(f"  T1 by 'tissue-segmentation predict' (brain extraction, network, "
                  f"refinement, writing): {scores} in {whole:.1f} s, load "
                  f"{os.getloadavg()[0]:.1f}", flush=True)


def brain(model: str, ref, work: Path, variants: bool) -> None:
    print(f"\nbrain extraction on the MNI template ({model}):")
    print(f"  {'case':<14} {'kept':>6} {'Dice':>6} {'seconds':>8}")
    for name, case in _cases(ref, variants):
        mask, seconds = _predict("brain-extraction", model, case, work, name)
        kept = float((mask > 0)[case.brain].mean())
        print(f"  {name:<14} {kept:6.3f} {dice(mask > 0, case.brain):6.3f} {seconds:8.1f}",
              flush=True)


def held_out_phantoms(model: str, folder: Path, work: Path) -> None:
    print(f"\nbrain extraction on held-out full-head phantoms ({folder}):")
    scores: dict[str, list[float]] = {}
    for mask_path in sorted((folder / "masks").glob("sub-*_brain_mask.nii.gz")):
        subject = mask_path.name.split("_")[0]
        truth = np.asarray(load_volume(mask_path, dtype=None).array) > 0
        scans = sorted((folder / "images").glob(f"{subject}_*.nii.gz"))
        written = TASKS["brain-extraction"].predict(model, [str(s) for s in scans],
                                                    work / "phantoms")
        masks = [p for p in written if p.name.endswith("_mask.nii.gz")]
        for scan, path in zip(scans, masks):
            contrast_name = scan.name[len(subject) + 1:].split(".")[0]
            mask = np.asarray(load_volume(path, dtype=None).array) > 0
            scores.setdefault(contrast_name, []).append(dice(mask, truth))
    for name, values in scores.items():
        print(f"  {name:<8} mask Dice mean {np.mean(values):.3f}, worst {np.min(values):.3f} "
              f"({len(values)} subjects)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tissue", help="tissue-segmentation run or pretrained:tissue")
    parser.add_argument("--brain", help="brain-extraction run or pretrained:brain")
    parser.add_argument("--step", type=int, default=1, help="2: the template at 2 mm")
    parser.add_argument("--variants", action="store_true",
                        help="also other contrasts and degraded scans")
    parser.add_argument("--phantoms", help="held-out 'brain-tf synth phantoms' folder "
                        "(with --brain)")
    parser.add_argument("--out", help="keep the predictions here (default: a temporary folder)")
    parser.add_argument("--reference-mask", action="store_true",
                        help="tissue methods inside the reference brain (T1 > 0.2), not the "
                             "brain model's mask")
    parser.add_argument("--refine-option", action="append", default=[], metavar="NAME=VALUE",
                        help="replace a refinement option for a diagnosis (bias_order=0)")
    args = parser.parse_args()
    overrides = parse_overrides(args.refine_option)
    if not (args.tissue or args.brain):
        parser.error("give --tissue and/or --brain")
    print(f"load average {os.getloadavg()[0]:.2f}")
    ref = mni_reference(args.step)
    print(f"MNI ICBM152 2009a T1 at {args.step} mm: {ref.image.shape}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.out or tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.tissue:
            tissue(args.tissue, ref, work, args.variants, args.reference_mask, overrides)
        if args.brain:
            brain(args.brain, ref, work, args.variants)
            if args.phantoms:
                held_out_phantoms(args.brain, Path(args.phantoms), work)
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
