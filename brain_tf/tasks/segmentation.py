"""The 3D segmentation family: tumour (system C), tissue (A), hippocampus (B).

Training cuts patches from preprocessed subjects (``[sampler]``, ``[augment]``); the
test subjects are segmented whole with Gaussian-blended sliding windows
(``[inference]``) and scored per label and region on the preprocessed grid (Dice,
sensitivity, specificity, HD95 in mm; ``[evaluation] volumes`` adds predicted and
reference volumes). New scans are predicted on their own grid: probabilities are resampled
back through the inverse of the preprocessing, so the label map has the input file's
shape, affine and voxel order whatever its orientation.

A run whose preprocessing uses a brain mask labels nothing outside it, in evaluation and
in prediction alike, and predicts with the kind of mask it was trained and evaluated
with: the mask given with the scan, else (for a run trained on mask files) the one
``preprocess.mask_model`` computes, else (``mask = "auto"`` on data without mask files)
the threshold mask computed from the image. A given mask restricts the labels on the
input's grid; a computed threshold mask the probabilities on the preprocessed grid.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd

from brain_tf.augment_presets import augment_config
from brain_tf.data.shards import subject_loader
from brain_tf.errors import ConfigError, DataError
from brain_tf.evaluation import segmentation_metrics
from brain_tf.evaluation.summaries import segmentation_lines, segmentation_summary
from brain_tf.evaluation.volumes import predicted_and_reference, volume_errors
from brain_tf.inference.cohort import run_cohort
from brain_tf.inference.segment import Segmenter
from brain_tf.inference.probseg import probseg_paths, write_probseg
from brain_tf.io import Volume, load_modalities, load_volume, read_shape, save_volume
from brain_tf.io.atomic import write_text
from brain_tf.io.tables import input_name
from brain_tf.pipeline.datasets import patch_dataset
from brain_tf.pipeline.sampling import PatchSampler
from brain_tf.preprocess.inverse import restrict_to_mask
from brain_tf.preprocess.labels import indices_to_values
from brain_tf.preprocess.subject import preprocess_subject
from brain_tf.training import plots
from brain_tf.training.fit import compiled_model
from brain_tf.training.runner import Family, Prepared


def _sigmoid(config) -> bool:
    return config.model.get("output_activation", "softmax") == "sigmoid"


def _uses_mask(pre) -> bool:
    """Whether the preprocessing uses a brain mask (zero outside it, or normalise in it)."""
    return pre.mask != "none" and (pre.apply_mask or pre.normalise == "zscore_mask")


def _needs_mask(ctx) -> bool:
    """Whether predicting a scan needs a brain mask given or computed by a brain-extraction
    model: the preprocessing uses one, and the run was trained on mask files (``mask =
    "given"``, or ``"auto"`` with masks in the data: a threshold mask of the image, which
    takes in the whole head, is not the mask it was trained and evaluated with)."""
    pre = ctx.config.preprocess
    return _uses_mask(pre) and (pre.mask == "given" or ctx.learned.get("mask_files", True))


def _mask_files(ctx) -> bool:
    """Whether the training subjects come with brain-mask files for the preprocessing."""
    rows = ctx.rows("train")
    return (ctx.config.classes.source != "mask" and "mask" in rows
            and bool(rows["mask"].notna().any()))


def model_input(config, channels) -> dict:
    """What the exported model expects (saved in learned.json)."""
    pre = config.preprocess
    grid = ("the scan's own voxel grid, reoriented to RAS+" if pre.spacing is None and
            pre.shape is None else f"resampled to {pre.spacing} mm / {pre.shape} voxels, "
            "centres aligned, RAS+")
    return {"layout": "(batch, x, y, z, channels) float32 tiles of a preprocessed volume",
            "channels": list(channels), "grid": grid, "normalise": pre.normalise,
            "brain_mask": "applied (zero outside)" if pre.apply_mask else "not applied",
            "tile": config.inference.patch_size, "outputs": config.model.get(
                "output_activation", "softmax")}


def classes(config, spec) -> tuple[dict[str, int], list]:
    """``(labels, sources)``: class name -> the value predictions are written with, and
    per class the file value(s) it is read from (see :class:`brain_tf.schema.Classes`)."""
    groups = config.classes.groups
    if groups:
        return ({name: i for i, name in enumerate(groups)},
                [v if isinstance(v, list) else [v] for v in groups.values()])
    if config.classes.source == "mask":
        return {"background": 0, "brain": 1}, [0, 1]
    if not spec.labels:
        raise ConfigError(f"{spec.path}: the spec has no [labels] table; list the label "
                          "values, or set [classes] groups")
    return dict(spec.labels), list(spec.labels.values())


class Segmentation(Family):
    per_item_csv = "test_items.csv"

    def learn(self, ctx):
        labels, sources = classes(ctx.config, ctx.spec)
        return {"labels": labels, "label_sources": sources,
                "channels": list(ctx.spec.channel_names), "mask_files": _mask_files(ctx),
                "input": model_input(ctx.config, ctx.spec.channel_names)}

    def _loader(self, ctx, rows, raw_labels: bool = False):
        """Preprocessed subjects of ``rows``; their labels as classes or, with
        ``raw_labels``, as stored (for images generated from fine label maps)."""
        if ctx.config.classes.source == "mask":
            if "mask" not in rows:
                raise ConfigError(f"{ctx.spec.path}: [classes] source = \"mask\" needs brain "
                                  "masks; the spec has no [files] mask pattern")
            rows = rows.assign(label=rows["mask"]).drop(columns=["mask"])
        return subject_loader(rows, ctx.config,
                              None if raw_labels else ctx.learned["label_sources"])

    def prepare(self, ctx):
        """Patch datasets and the model. With a generating augmentation (``[augment]
        synth = true``) every training and validation patch is an image generated from the
        subject's label map (validation with fixed seeds), whose values map to the classes
        through ``learned["label_sources"]``; the model then takes one channel."""
        cfg, tr = ctx.config, ctx.config.training
        generate = augment_config(cfg.augment)[1]["synth"]
        sampler = cfg.sampler.to_dict()
        patch = tuple(sampler.pop("patch_size"))
        train_rows = ctx.rows("train")
        loader = self._loader(ctx, train_rows, raw_labels=generate)
        first = loader(0)
        common = dict(num_classes=len(ctx.learned["labels"]), drop_background=_sigmoid(cfg),
                      batch_size=tr.batch_size, spacing=first.spacing,
                      label_lookup=ctx.learned["label_sources"] if generate else None)
        train = patch_dataset(loader, PatchSampler(patch, **sampler), augment=cfg.augment,
                              seed=cfg.data.seed, repeat=True, **common)
        val = patch_dataset(self._loader(ctx, ctx.rows("val"), raw_labels=generate),
                            PatchSampler(patch, **{**sampler, "patches_per_subject":
                                                   tr.val_patches}),
                            augment=cfg.augment if generate else None, shuffle=False,
                            seed=cfg.data.seed + 1, **common)
        steps = tr.steps_per_epoch or -(-len(train_rows) * cfg.sampler.patches_per_subject
                                        // tr.batch_size)
        outputs = common["num_classes"] - 1 if _sigmoid(cfg) else common["num_classes"]
        channels = 1 if generate else first.image.shape[-1]
        model = compiled_model(cfg, patch + (channels,), outputs, total_steps=steps * tr.epochs)
        return Prepared(model, train, val.cache(), steps)

    def score(self, ctx, model, rows, run):
        cfg, labels = ctx.config, ctx.learned["labels"]
        classes = {name: i for i, name in enumerate(labels) if i > 0}
        segment = Segmenter.from_config(cfg, len(labels))
        loader = self._loader(ctx, rows)
        masked = _uses_mask(cfg.preprocess)
        tables = []
        for i in range(len(loader)):
            subject = loader(i)
            pred = segment(model, subject.image, subject.mask if masked else None)
            table = segmentation_metrics(pred, subject.label, {**classes, **cfg.evaluation.regions},
                                         spacing=subject.spacing)
            table.insert(0, "subject", str(rows.at[i, "subject"]))
            table.insert(0, "item", subject.subject)
            tables.append(table)
            if i == 0:
                plots.segmentation_overlay(subject.image[..., 0], pred, run / "overlay.png",
                                           reference=subject.label, title=subject.subject)
        per_item = pd.concat(tables, ignore_index=True)
        metrics = segmentation_summary(per_item, list(classes))
        lines = segmentation_lines(metrics, len(rows))
        if cfg.evaluation.volumes:
            volumes = predicted_and_reference(per_item, list(classes))
            run.save_table("test_volumes.csv", volumes)
            metrics.update(volume_errors(volumes, list(classes)))
            lines.append("  volume error (mean |predicted - reference|): " + ", ".join(
                f"{n} {metrics[f'volume_mae_ml_{n}']:.1f} ml" for n in classes))
        return per_item, metrics, lines

    def inputs(self, ctx, inputs, options):
        masks = options.masks
        if options.uncertainty:
            raise ConfigError("--uncertainty needs a model with MC dropout; the segmentation "
                              "networks have none")
        masks = list(masks) if masks else [None] * len(inputs)
        if len(masks) != len(inputs):
            raise ConfigError(f"got {len(masks)} masks for {len(inputs)} inputs; give one "
                              "per input, in the same order")
        channels = ctx.learned["channels"]
        items = []
        for item, mask in zip(inputs, masks):
            paths = str(item).split(",")
            found = sum(int(np.prod(read_shape(p)[3:])) for p in paths)
            if found != len(channels):
                raise DataError(f"{paths[0]}: {found} channel(s) found; this model expects "
                                f"{len(channels)} ({', '.join(channels)}): give one 4D file or "
                                f"{len(channels)} comma-separated 3D files in that order")
            if mask:
                read_shape(mask)
            elif _needs_mask(ctx):
                check_mask_model(ctx.config.preprocess, paths[0])
            items.append((paths, mask))
        return items

    def prepare_scan(self, ctx, volume, mask=None):
        """``(volume, mask, preprocessed)``: a needed brain mask that is not given comes
        from ``preprocess.mask_model`` (see the module docstring)."""
        if mask is None and _needs_mask(ctx):
            mask = brain_mask(volume, ctx.config.preprocess.mask_model)
        pre = preprocess_subject(volume, None, mask, ctx.config.preprocess.to_dict(),
                                 subject=volume.path or "")
        return volume, mask, pre

    def scan_segmentation(self, ctx, model, prepared, probseg: bool = False):
        """A prepared scan's :class:`~brain_tf.inference.segment.ScanSegmentation` on its
        file's grid: refined inside the brain mask when ``[inference] refine`` asks for it;
        ``probseg`` keeps each class's probability map."""
        volume, mask, pre = prepared
        grid = volume.file_grid
        inside = (None if mask is None else
                  restrict_to_mask(np.ones(grid.shape, np.uint8), mask, grid) > 0)
        # no mask given: the one the preprocessing computed bounds the labels
        computed = pre.mask if mask is None and _uses_mask(ctx.config.preprocess) else None
        return Segmenter.from_config(ctx.config, len(ctx.learned["labels"])).scan_on_input_grid(
            model, pre.image, pre.affine, grid, grid.to_file(volume.array), inside, probseg,
            mask=computed)

    def segment_prepared(self, ctx, model, prepared) -> np.ndarray:
        """Class indices of a prepared scan on its file's grid: inside its mask, the given
        one on that grid, or the one the preprocessing computed on its own."""
        volume, mask, pre = prepared
        indices = self.scan_segmentation(ctx, model, prepared).indices
        return indices if mask is None else restrict_to_mask(indices, mask, volume.file_grid)

    def segment(self, ctx, model, volume, mask=None) -> np.ndarray:
        """Class indices of a loaded scan on its own grid."""
        return self.segment_prepared(ctx, model, self.prepare_scan(ctx, volume, mask))

    def predict(self, ctx, model, items, out, options):
        """The outputs of every scan, as a pipeline: the next scans are read and
        preprocessed while one is predicted, and outputs are written behind it
        (:func:`brain_tf.inference.cohort.run_cohort`; ``skip_existing`` continues a
        cohort)."""
        values = list(ctx.learned["labels"].values())
        kinds = list(dict.fromkeys([*ctx.config.inference.write, *options.write]))
        names = list(ctx.learned["labels"])
        refined = ctx.config.inference.refine != "none"

        def stem(item):
            return out / input_name(item[0][0])

        def prepare(item):
            paths, mask_path = item
            mask = load_volume(mask_path, ndim=3) if mask_path else None
            return self.prepare_scan(ctx, load_modalities(paths), mask)

        def segment(prepared):
            scan = self.scan_segmentation(ctx, model, prepared, probseg="probseg" in kinds)
            volume, mask = prepared[:2]
            if mask is not None:
                scan.indices = restrict_to_mask(scan.indices, mask, volume.file_grid)
            return volume, scan

        def write(item, result):
            volume, scan = result
            _write_outputs([k for k in kinds if k != "probseg"], scan.indices, values, volume,
                           volume.file_grid, stem(item))
            if "probseg" in kinds:
                write_probseg(scan.probability, names, volume.file_grid, stem(item))
            if scan.qc is not None:
                write_text(f"{stem(item)}_qc.json", json.dumps(scan.qc, indent=1) + "\n")

        def outputs(item):
            paths = [Path(f"{stem(item)}_{kind}.nii.gz") for kind in kinds if kind != "probseg"]
            if "probseg" in kinds:
                paths += probseg_paths(names, stem(item))
            return paths + ([Path(f"{stem(item)}_qc.json")] if refined else [])

        result = run_cohort(items, prepare, segment, write,
                            outputs, skip_existing=options.skip_existing,
                            name=lambda item: item[0][0])
        print(f"{len(result.done)} scans predicted into {out} in {result.seconds:.1f} s"
              + (f" ({len(result.skipped)} done before, left out)" if result.skipped else ""))
        return [path for item in items for path in outputs(item)]


def check_mask_model(pre, where: str) -> None:
    """ConfigError unless ``pre.mask_model`` names a brain-extraction model that exists."""
    from brain_tf.training.runner import model_run

    if not pre.mask_model:
        raise ConfigError(f"{where}: this model's preprocessing needs a brain mask; pass one "
                          "per input (or set preprocess.mask_model to a brain-extraction model)")
    model_run(pre.mask_model)


@functools.lru_cache(maxsize=2)
def _brain_model(name: str):
    """``(context, model)`` of a brain-extraction model (a run folder or pretrained:NAME)."""
    from brain_tf.tasks import TASKS
    from brain_tf.training.runner import Context, model_run

    task = TASKS["brain-extraction"]
    run, path = model_run(name)
    ctx = Context(task, task.load_config(run), learned=run.load_learned())
    return ctx, FAMILY.load_predictor(ctx, path)


def brain_mask(volume, model: str):
    """The brain mask of a loaded scan from a brain-extraction model, as a volume on the
    scan's grid (loaded, RAS+; ``source`` the scan's file grid)."""
    ctx, net = _brain_model(str(model))
    indices = FAMILY.segment(ctx, net, volume)
    grid = volume.file_grid
    return Volume(grid.from_file((indices > 0).astype(np.uint8)), volume.affine,
                  path=f"brain mask of {volume.path} by {model}", source=grid)


def _write_outputs(kinds, indices, values, volume, grid, stem) -> list:
    """The outputs ``kinds`` of one scan on its own grid (see ``inference.write``)."""
    written = []
    for kind in kinds:
        if kind == "seg":
            array = indices_to_values(indices, values)
        elif kind == "mask":
            array = (indices > 0).astype(np.uint8)
        else:  # the input image (every channel) inside the predicted brain
            image = grid.to_file(volume.array)
            image = image[..., 0] if image.ndim == 4 and image.shape[-1] == 1 else image
            array = image * ((indices > 0)[..., None] if image.ndim == 4 else indices > 0)
        written.append(save_volume(array, f"{stem}_{kind}.nii.gz", affine=grid.affine,
                                   header=grid.header,
                                   dtype=np.float32 if kind == "brain" else None))
    return written


FAMILY = Segmentation()
