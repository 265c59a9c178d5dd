"""What the BIDS App asks of the models, in one place: a brain mask and tissue
probabilities of one scan on the scan's own grid (:func:`predict_tissue`), and the
outputs of any other trained run (:func:`predict_extra`).

The brain mask, the class indices, the per-class probabilities and the QC values come
from the task's own prediction path (:meth:`brain_tf.tasks.segmentation.Segmentation.
scan_segmentation`: refined on the scan when the model's ``[inference] refine`` asks for
it). :meth:`TissueResult.from_files` reads the ``{stem}_label-{CLASS}_probseg.nii.gz``
and ``{stem}_qc.json`` files of ``brain-tf tissue-segmentation predict --write probseg``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from brain_tf.errors import ConfigError
from brain_tf.io import Volume, load_modalities, load_volume
from brain_tf.io.tables import input_name

#: Tissue classes of the tissue model, in its class order after the background.
TISSUE_CLASSES = ("CSF", "GM", "WM")


@dataclasses.dataclass
class Loaded:
    """A loaded model: its name, task, run context, family and network."""

    name: str
    task: object
    ctx: object
    family: object
    net: object


def load_model(name: str, spacing: float | None = None) -> Loaded:
    """A run folder or ``pretrained:NAME``, loaded once; ``spacing`` (mm) runs it on a
    coarser or finer grid than it was trained on (faster, less exact)."""
    from brain_tf.training.runner import Context, model_run

    run, path = model_run(name)
    task = model_task(name)
    config = task.load_config(run)
    if spacing is not None and "preprocess" in config and hasattr(config.preprocess, "spacing"):
        config = config.replace(preprocess={"spacing": [float(spacing)] * 3})
    ctx = Context(task, config, learned=run.load_learned())
    family = task.family(config.preset)
    return Loaded(str(name), task, ctx, family, family.load_predictor(ctx, path))


def model_task(name: str):
    """The task of a run folder or ``pretrained:NAME`` (from its config.toml)."""
    from brain_tf.config import load_toml
    from brain_tf.tasks import TASKS
    from brain_tf.training.runner import model_run

    run, _ = model_run(name)
    task_name = load_toml(Path(run.path) / "config.toml").get("task")
    if task_name not in TASKS:
        raise ConfigError(f"{name}: unknown task {task_name!r} in its config.toml")
    return TASKS[task_name]


@dataclasses.dataclass
class TissueResult:
    """One scan's outputs on its own grid: the loaded scan, the brain mask (uint8), the
    tissue labels (0 background, 1 CSF, 2 GM, 3 WM), one probability map per class in
    :data:`TISSUE_CLASSES` (float32, 0 outside the mask) and QC values."""

    volume: Volume
    mask: np.ndarray
    labels: np.ndarray
    probabilities: dict
    qc: dict

    @classmethod
    def from_files(cls, volume: Volume, mask: np.ndarray, labels: np.ndarray,
                   stem: str | Path) -> "TissueResult | None":
        """The probability maps ``{stem}_label-{CLASS}_probseg.nii.gz`` and the QC values
        ``{stem}_qc.json`` a tissue prediction wrote, or None when it wrote no maps."""
        paths = {c: Path(f"{stem}_label-{c}_probseg.nii.gz") for c in TISSUE_CLASSES}
        if not all(p.exists() for p in paths.values()):
            return None
        probabilities = {}
        for name, path in paths.items():
            loaded = load_volume(path, ndim=3)
            probabilities[name] = loaded.file_grid.to_file(loaded.array).astype(np.float32)
        qc_path = Path(f"{stem}_qc.json")
        qc = json.loads(qc_path.read_text()) if qc_path.exists() else {}
        return cls(volume, mask, labels, probabilities, qc)


def brain_mask_on_grid(brain: Loaded, volume: Volume) -> np.ndarray:
    """The brain mask (uint8) of a loaded scan, in its file's voxel order."""
    return (brain.family.segment(brain.ctx, brain.net, volume) > 0).astype(np.uint8)


def _entropy(probabilities: np.ndarray, inside: np.ndarray) -> float:
    """Mean normalised entropy (0: certain, 1: uniform) of the classes' probabilities
    (renormalised to sum 1) of voxels inside the mask."""
    p = probabilities[inside]
    p = np.clip(p / np.maximum(p.sum(axis=-1, keepdims=True), 1e-12), 1e-7, 1.0)
    return float((-(p * np.log(p)).sum(axis=-1) / np.log(p.shape[-1])).mean())


def load_scan(path: str | Path) -> Volume:
    """The image file ``path``, loaded as the prediction needs it."""
    return load_modalities([str(path)])


def predict_tissue(brain: Loaded, tissue: Loaded, volume: Volume) -> TissueResult:
    """Brain mask, tissue labels and probabilities of a scan (:func:`load_scan`), through
    the tissue task's own prediction (refined on the scan when its config asks for it)."""
    grid = volume.file_grid
    mask = brain_mask_on_grid(brain, volume)
    mask_volume = Volume(grid.from_file(mask), volume.affine, path=f"brain mask of {volume.path}",
                         source=grid)
    prepared = tissue.family.prepare_scan(tissue.ctx, volume, mask_volume)
    names = list(tissue.ctx.learned["labels"])
    if len(names) != 1 + len(TISSUE_CLASSES) or tissue.ctx.config.model.get(
            "output_activation", "softmax") != "softmax":
        raise ConfigError(f"{tissue.name}: a tissue model with softmax outputs for background, "
                          f"CSF, GM and WM is needed (this one has {names})")
    scan = tissue.family.scan_segmentation(tissue.ctx, tissue.net, prepared, probseg=True)
    inside = mask > 0
    labels = np.where(inside, scan.indices, 0).astype(np.uint8)
    probabilities = {c: np.where(inside, scan.probability(k + 1), 0).astype(np.float32)
                     for k, c in enumerate(TISSUE_CLASSES)}
    qc = dict(scan.qc) if scan.qc else {}
    for key in ("class_means", "class_sd"):  # per class (one value each for one channel)
        if key in qc and len(qc[key]) == len(TISSUE_CLASSES):
            qc[key] = {c: v[0] if len(v) == 1 else v for c, v in zip(TISSUE_CLASSES, qc[key])}
    if "outside_range" in qc:
        qc["outside_range"] = " ".join(qc["outside_range"])
    if "mean_entropy" not in qc and inside.any():  # not refined: the network's own
        stacked = np.stack([probabilities[c] for c in TISSUE_CLASSES], axis=-1)
        qc["mean_entropy"] = _entropy(stacked, inside)
    return TissueResult(prepared[0], mask, labels, probabilities, qc)


def predict_extra(name: str, images: list, masks: list, dsegs: list, out: Path) -> dict:
    """Outputs of another trained run on ``images`` by the task's own predict command:
    per image, ``{"dseg": path}`` for a segmentation run (the label map, written in the
    work folder ``out``) or the ``predicted_*`` values of a regression or classification
    run. A run that takes brain masks gets ``masks``; a volume run gets ``IMAGE,MASK``
    (its brain-extracted input); a tissue-volume (``features``) run gets the tissue
    label maps ``dsegs``."""
    from brain_tf.training.runner import model_run

    task = model_task(name)
    family = task.family_of(task.load_config(model_run(name)[0]).preset)
    inputs, given = [str(p) for p in images], None
    if task.takes_masks:
        given = [str(m) for m in masks]
    elif family == "volume":
        inputs = [f"{i},{m}" for i, m in zip(images, masks)]
    elif family == "features":
        inputs = [str(d) for d in dsegs]
    task.predict(name, inputs, out, masks=given)
    results = {}
    table = pd.read_csv(out / "predictions.csv") if (out / "predictions.csv").exists() else None
    for i, (image, item) in enumerate(zip(images, inputs)):
        seg = out / f"{input_name(item.split(',')[0])}_seg.nii.gz"
        if seg.exists():
            results[str(image)] = {"dseg": seg}
        elif table is not None:
            row = table.iloc[i]
            results[str(image)] = {str(k): v.item() if isinstance(v, np.generic) else v
                                   for k, v in row.items() if str(k).startswith("predicted_")}
        else:
            results[str(image)] = {}
    return results
