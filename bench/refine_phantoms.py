"""The refinement's defaults, chosen on held-out phantoms (never on the MNI template).

    python bench/refine_phantoms.py --phantoms DIR [--unbiased DIR2 --seed 99]
                                    [--partial-volume DIR3 --partial-volume-unbiased DIR4]
                                    [--model pretrained:tissue] [--cache DIR] [--subjects N]
                                    [--grid [--only PREFIX]] [--set NAME=VALUE] [--qc]
                                    [--also DIR5 ...] [--leave-out bias ...]

DIR is a ``brain-tf synth phantoms`` folder the network never saw (e.g. ``--seed 99
--subjects 3 --spacing 1.5``); ``--unbiased DIR2`` adds the same subjects rendered with
no bias field (as a bias-corrected scan; written there first when absent, from
``--seed``, which must be DIR's, and DIR's grid); ``--partial-volume DIR3`` the same
subjects with true partial volume (drawn on a grid twice as fine and averaged over each
voxel, the reference the tissue covering most of it), ``--partial-volume-unbiased DIR4``
those with no bias field. ``--also`` adds held-out folders written before (by this
bench, e.g. at another voxel size: ``--seed 98 --spacing 1``), used as they are; with
several voxel sizes the columns are per voxel size. Every subject's T1w, T2w, PDw and
FLAIR scans are used as they are and degraded with the template's fixed transforms
(:mod:`brain_tf.evaluation.mni`: a bias field, Rician noise, 5 mm slices; one per
subject in turn; ``--leave-out bias`` drops the cases degraded with the bias field, so
that the unbiased folders alone are bias-free scans, as bias-corrected ones). Each case
goes through the predict path (the brain mask from the model's
``preprocess.mask_model``, the network, its probabilities on the scan's grid); the
network's output is cached, then refined with each setting. Printed: mean Dice of CSF,
GM and WM per contrast and overall for the network alone and each setting (``--grid``:
prior weight, components, bias order, MRF strength, iterations around the defaults), and
with ``--qc`` the range of the QC values at the defaults (what
:data:`brain_tf.inference.refine_qc.QC_RANGES` holds).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from brain_tf.evaluation import dice
from brain_tf.evaluation.mni import Reference, bias_field, noise, thick_slices
from brain_tf.inference.refine import RefineOptions, refine
from brain_tf.io import load_volume

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_cache import cache_key  # noqa: E402
from refine_options import parse_overrides  # noqa: E402

CONTRASTS = ("T1w", "T2w", "PDw", "FLAIR")
DEGRADE = {"bias": bias_field, "noise": noise, "thick_5mm": lambda r: thick_slices(r, 5.0)}


def _cases(folder: Path, subjects: int | None = None):
    masks = sorted((folder / "masks").glob("sub-*_brain_mask.nii.gz"))[:subjects]
    for k, mask_path in enumerate(masks):
        subject = mask_path.name.split("_")[0]
        brain = np.asarray(load_volume(mask_path, dtype=None).array) > 0
        tissue = np.asarray(load_volume(folder / "segs" / f"{subject}_seg.nii.gz",
                                        dtype=None).array).astype(np.uint8)
        name, degrade = list(DEGRADE.items())[k % len(DEGRADE)]
        for contrast in CONTRASTS:
            image = load_volume(folder / "images" / f"{subject}_{contrast}.nii.gz")
            image = dataclasses.replace(image, source=None)
            ref = Reference(image, tissue, brain)
            yield f"{subject}_{contrast}", contrast, "", ref
            yield f"{subject}_{contrast}_{name}", contrast, name, degrade(ref)


def write_unbiased(folder: Path, like: Path, seed: int) -> None:
    """The subjects of ``like`` (written with ``seed``) again with no bias field."""
    from brain_tf.data.synthetic.write_volumes import PHANTOM_SCANNER, write_phantoms

    masks = sorted((like / "masks").glob("sub-*_brain_mask.nii.gz"))
    grid = load_volume(masks[0], dtype=None)
    write_phantoms(folder, len(masks), seed, grid.array.shape, tuple(grid.spacing),
                   lambda *a: None, scanner={**PHANTOM_SCANNER, "bias": 0.0})


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    x, y, z = (n // f for n in a.shape)
    return a[:x * f, :y * f, :z * f].reshape(x, f, y, f, z, f).mean(axis=(1, 3, 5))


def _block_majority(labels: np.ndarray, f: int, classes: int) -> np.ndarray:
    """Per block of f**3 voxels, the class covering most of it (ties to the lower index)."""
    counts = np.stack([_block_mean(labels == c, f) for c in range(classes)], axis=-1)
    return np.argmax(counts, axis=-1).astype(np.uint8)


def write_partial_volume(folder: Path, like: Path, seed: int, bias: bool = True,
                         factor: int = 2) -> None:
    """The subjects of ``like`` (written with ``seed``) with true partial volume: drawn on a
    grid ``factor`` times finer and averaged over each voxel; the reference tissue and mask
    are the class that covers most of each voxel (as the MNI template's argmax of
    fractions). Noise is added after the averaging, at the phantoms' level; ``bias=False``:
    no bias field."""
    from brain_tf.data.synthetic.cohort import balanced_sexes, cohort_rng, subject_rng
    from brain_tf.data.synthetic.fields import rician
    from brain_tf.data.synthetic.subject import make_subject
    from brain_tf.data.synthetic.write_volumes import PHANTOM_IMAGES, PHANTOM_SCANNER
    from brain_tf.io import save_volume

    masks = sorted((like / "masks").glob("sub-*_brain_mask.nii.gz"))
    grid = load_volume(masks[0], dtype=None)
    rng = cohort_rng(seed)
    ages = rng.uniform(18, 88, len(masks))
    sexes = balanced_sexes(rng, len(masks))
    fine = tuple(n * factor for n in grid.array.shape)
    spacing = tuple(s / factor for s in grid.spacing)
    for i, (age, sex) in enumerate(zip(ages, sexes)):
        sid = f"{i + 1:04d}"
        s = make_subject(subject_rng(seed, i), fine, spacing, age=float(age), sex=sex,
                         modalities=tuple(PHANTOM_IMAGES),
                         scanner={**PHANTOM_SCANNER, "noise": 0.0,
                                  **({} if bias else {"bias": 0.0})})
        affine = grid.affine
        noise_rng = np.random.default_rng([seed, i, factor])
        scale = s.phantom.scanner.scale
        for modality, suffix in PHANTOM_IMAGES.items():
            image = _block_mean(s.images[modality], factor) / scale
            image = rician(noise_rng, image.astype(np.float32), PHANTOM_SCANNER["noise"])
            save_volume(image * np.float32(scale), folder / f"images/sub-{sid}_{suffix}.nii.gz",
                        affine)
        tissue = _block_majority(s.tissue, factor, 4)
        save_volume(tissue, folder / f"segs/sub-{sid}_seg.nii.gz", affine)
        save_volume((tissue > 0).astype(np.uint8), folder / f"masks/sub-{sid}_brain_mask.nii.gz",
                    affine)


def _network(model: str):
    from brain_tf.tasks import TASKS
    from brain_tf.training.runner import Context, model_run

    task = TASKS["tissue-segmentation"]
    run, path = model_run(model)
    config = task.load_config(run)
    ctx = Context(task, config, learned=run.load_learned())
    family = task.family(config.preset)
    return ctx, family, family.load_predictor(ctx, path)


def mask_model(model: str) -> str:
    """The brain-extraction model whose mask ``model``'s predict path uses."""
    from brain_tf.tasks import TASKS
    from brain_tf.training.runner import model_run

    run, _ = model_run(model)
    return TASKS["tissue-segmentation"].load_config(run).preprocess.mask_model


def cached(model: str, folder: Path, cache: Path, subjects: int | None = None) -> list[dict]:
    """Per case: the scan, the network's probabilities and the brain mask on its grid,
    the reference tissue (cropped to the mask's box); computed once into ``cache``."""
    from brain_tf.inference.segment import Segmenter
    from brain_tf.preprocess.inverse import probabilities_on_grid, restrict_to_mask

    cache.mkdir(parents=True, exist_ok=True)
    size = _size(load_volume(next((folder / "masks").glob("*.nii.gz")), dtype=None).spacing)
    net = None
    cases = []
    for name, contrast, degradation, ref in _cases(folder, subjects):
        path = cache / f"{name}.npz"
        if not path.exists():
            if net is None:
                net = _network(model)
            ctx, family, predictor = net
            volume, mask, pre = family.prepare_scan(ctx, ref.image)
            grid = volume.file_grid
            segmenter = Segmenter.from_config(ctx.config, len(ctx.learned["labels"]))
            probs = probabilities_on_grid(segmenter.probabilities(predictor, pre.image),
                                          pre.affine, grid)
            inside = restrict_to_mask(np.ones(grid.shape, np.uint8), mask, grid) > 0
            box = tuple(slice(a.min(), a.max() + 1) for a in np.nonzero(inside | ref.brain))
            np.savez(path, scan=grid.to_file(volume.array)[box], probs=probs[box].astype(
                np.float16), inside=inside[box], tissue=ref.tissue[box], brain=ref.brain[box],
                spacing=np.asarray(volume.spacing))
        data = dict(np.load(path))
        data.update(name=name, contrast=contrast, group=folder.name, size=size,
                    degradation=degradation)
        cases.append(data)
    return cases


def without(cases: list[dict], degradations) -> list[dict]:
    """The cases not degraded with any of ``degradations`` (names of :data:`DEGRADE`)."""
    return [c for c in cases if c["degradation"] not in degradations]


def _size(spacing) -> str:
    """A held-out folder's voxel size as a column name: '1.5 mm' (the largest side)."""
    return f"{float(np.max(spacing)):g} mm"


def scores(labels, tissue) -> np.ndarray:
    return np.array([dice(labels == c, tissue == c) for c in (1, 2, 3)])


def evaluate(cases, options: RefineOptions | None) -> tuple[dict, float, list]:
    """Mean Dice per contrast (and 'all'), seconds per case, QC dicts."""
    per: dict[str, list] = {}
    qcs, seconds = [], 0.0
    for case in cases:
        probs = case["probs"].astype(np.float32)
        if options is None:
            labels = np.argmax(probs, axis=-1) * case["inside"]
        else:
            start = time.perf_counter()
            result = refine(case["scan"], probs, case["inside"], case["spacing"], options)
            seconds += time.perf_counter() - start
            labels = result.labels()
            qcs.append(result.qc)
        s = scores(labels, case["tissue"])
        for key in {case["contrast"], case["group"], case["size"], "all"}:
            per.setdefault(key, []).append(s)
    return {k: np.mean(v, axis=0) for k, v in per.items()}, seconds / len(cases), qcs


def _line(label: str, table: dict, seconds: float, groups=()) -> str:
    cells = " ".join(f"{table[c][1]:.3f}/{table[c][2]:.3f}" for c in CONTRASTS + groups)
    a = table["all"]
    return (f"  {label:<34} {cells}  all {a[0]:.3f}/{a[1]:.3f}/{a[2]:.3f}  {seconds:5.2f} s")


#: The values each option takes in ``--grid``, one option at a time, around the base.
GRID = {"prior_weight": (0.25, 0.5, 0.75, 1.0), "components": (1, 2, 3),
        "bias_order": (0, 1, 2, 3, 4), "bias_smoothness": (0.0, 0.01, 0.1, 1.0, 10.0),
        "mrf": (0.0, 0.1, 0.2, 0.3, 0.4, 0.6), "iterations": (15, 30, 50),
        "partial_volume": (False, True)}


def grid_settings(base: RefineOptions):
    yield "defaults", base
    for name, values in GRID.items():
        for value in values:
            if value != getattr(base, name):
                yield f"{name} {value}", dataclasses.replace(base, **{name: value})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phantoms", required=True, help="held-out phantoms folder")
    parser.add_argument("--unbiased", help="the same phantoms with no bias field (written "
                        "here when absent)")
    parser.add_argument("--seed", type=int, default=99, help="the held-out phantoms' seed")
    parser.add_argument("--model", default="pretrained:tissue")
    parser.add_argument("--cache", help="keep the network's outputs here (default DIR/.refine; "
                        "one subfolder per phantoms folder and per version of the model and "
                        "of its mask model)")
    parser.add_argument("--subjects", type=int, help="only the first N subjects")
    parser.add_argument("--grid", action="store_true", help="settings around the defaults")
    parser.add_argument("--qc", action="store_true", help="QC ranges at the defaults")
    parser.add_argument("--only", default="", help="only the grid's settings whose label "
                        "starts so (e.g. 'bias'; several: 'mrf,components')")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="start from these options instead of the defaults (mrf=0.2)")
    parser.add_argument("--part", default="1/1", help="I/N: only the I-th of N shares of the "
                        "grid's settings (run the shares side by side)")
    parser.add_argument("--partial-volume", help="the same phantoms with true partial volume "
                        "(drawn twice as fine and averaged; written here when absent)")
    parser.add_argument("--partial-volume-unbiased", help="the same again with no bias field")
    parser.add_argument("--also", nargs="+", default=[], metavar="DIR",
                        help="more held-out folders, written before (another voxel size)")
    parser.add_argument("--leave-out", nargs="+", default=[], choices=list(DEGRADE),
                        help="leave out the cases degraded so ('bias': with --unbiased "
                        "folders alone, bias-free scans only)")
    args = parser.parse_args()
    for extra in args.also:
        if not (Path(extra) / "masks").is_dir():
            parser.error(f"--also {extra}: not a phantoms folder (no masks/); write it first "
                         "with this bench's --phantoms and its share flags")
    folders = [Path(args.phantoms)]
    shares = [(args.unbiased, lambda f: write_unbiased(f, folders[0], args.seed)),
              (args.partial_volume, lambda f: write_partial_volume(f, folders[0], args.seed)),
              (args.partial_volume_unbiased, lambda f: write_partial_volume(
                  f, folders[0], args.seed, bias=False))]
    for folder, write in shares:
        if folder:
            folders.append(Path(folder))
            if not folders[-1].exists():  # written whole under another name, then renamed
                partial = folders[-1].with_name(folders[-1].name + ".writing")
                shutil.rmtree(partial, ignore_errors=True)
                write(partial)
                partial.rename(folders[-1])
    folders += [Path(extra) for extra in args.also]
    part, parts = (int(v) for v in args.part.split("/"))
    print(f"load average {os.getloadavg()[0]:.2f}")
    cases = []
    masker = mask_model(args.model)
    for folder in folders:
        cache = Path(args.cache) / folder.name if args.cache else folder / ".refine"
        cases += cached(args.model, folder, cache / cache_key(args.model, masker),
                        args.subjects)
    cases = without(cases, args.leave_out)
    sizes = sorted({c["size"] for c in cases}, key=lambda v: float(v.split()[0]))
    groups = (tuple(sizes) if len(sizes) > 1 else
              tuple(f.name for f in folders) if len(folders) > 1 else ())
    print(f"{len(cases)} held-out cases from {', '.join(map(str, folders))}; mean Dice GM/WM "
          f"per contrast ({', '.join(CONTRASTS + groups)}), then CSF/GM/WM over all, seconds "
          "per refinement")
    if part == 1:
        table, _, _ = evaluate(cases, None)
        print(_line("network alone", table, 0.0, groups), flush=True)
    base = dataclasses.replace(RefineOptions(), **parse_overrides(args.set, "--set"))
    settings = list(grid_settings(base)) if args.grid else [("defaults", base)]
    settings = [s for s in settings if s[0].startswith(tuple(args.only.split(",")))]
    for label, options in settings[part - 1::parts]:
        table, seconds, qcs = evaluate(cases, options)
        print(_line(label, table, seconds, groups), flush=True)
        if args.qc and label == "defaults":
            for key in ("separation", "max_separation", "changed", "mean_entropy"):
                values = [q[key] for q in qcs]
                print(f"    QC {key}: min {min(values):.3f}, max {max(values):.3f}")
            print(f"    flagged: {sum(q['flag'] for q in qcs)} of {len(qcs)}")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
