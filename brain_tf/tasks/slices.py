"""The 2D slice families: lesion segmentation (system D) and slice classification (E).

Slices are read at their 0-255 pixel scale and resized to ``preprocess.shape``; the
models normalise their inputs themselves (the backbone's own normalisation is their
first layer), so the exported SavedModel takes an image as read from disk. Training may
start with a frozen pretrained encoder (``training.freeze_epochs``). Splits are by
patient; the test patients are scored once, at the end.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd
import skimage.transform

from brain_tf.errors import ConfigError, DataError
from brain_tf.evaluation.segmentation import confusion_counts, dice_from_counts, safe_ratio
from brain_tf.evaluation.summaries import classification_line, classification_summary
from brain_tf.inference import grad_cam, save_cam_overlay
from brain_tf.inference.batches import predict_in_batches
from brain_tf.io import load_image, save_image
from brain_tf.io.image2d import IMAGE_SUFFIXES
from brain_tf.io.tables import write_predictions
from brain_tf.models.resnet_encoder import skip_layers
from brain_tf.pipeline import slice_dataset
from brain_tf.preprocess.loader import SliceLoader
from brain_tf.preprocess.slices import preprocess_slice
from brain_tf.training import plots
from brain_tf.training.fit import compiled_model
from brain_tf.training.runner import Family, Prepared

HEADS = {"perspective": ("perspective", "perspectives"), "sequence": ("sequence", "sequences")}
"""Head -> (manifest column, key of its class list in the spec's [defaults])."""


def expand_inputs(inputs) -> list[Path]:
    """Image files from files and folders (a folder's images, ``*_mask`` files left out)."""
    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                           and not p.stem.endswith("_mask"))
            if not found:
                raise DataError(f"{path}: folder holds no image files "
                                f"({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif not path.exists():
            raise DataError(f"{path}: file not found; give image files or folders of them")
        else:
            files.append(path)
    return files


class Slices(Family):
    """What the two slice families share: loaders, datasets, reading new files."""

    per_item_csv = "test_items.csv"

    def _loader(self, ctx, rows, label_values=None, use_labels=True):
        return SliceLoader(rows, ctx.config.preprocess.to_dict(), label_values=label_values,
                           use_labels=use_labels)

    def _datasets(self, ctx, train_src, val_src, **kwargs):
        tr, seed = ctx.config.training, ctx.config.data.seed
        targets = kwargs.pop("targets", (None, None))
        train = slice_dataset(train_src, targets=targets[0], augment=ctx.config.augment,
                              batch_size=tr.batch_size, shuffle=True, seed=seed, repeat=True,
                              **kwargs)
        val = slice_dataset(val_src, targets=targets[1], augment=None,
                            batch_size=tr.val_batch_size or tr.batch_size, shuffle=False,
                            seed=seed, **kwargs)
        steps = tr.steps_per_epoch or -(-len(train_src) // tr.batch_size)
        return train, val, steps

    def _learned(self, ctx, shape) -> dict:
        return {"input": {"layout": "(batch, rows, cols, channels) float32 pixel values on "
                                    "the 0-255 scale of 8-bit images (the model normalises them)",
                          "shape": [int(n) for n in shape],
                          "resize": ctx.config.preprocess.shape,
                          "rgb": ctx.config.preprocess.rgb}}

    def _freeze_layer(self, ctx, level: int) -> str:
        model = ctx.config.model
        blocks = model.get("encoder_blocks", model.get("blocks"))
        return skip_layers(model.get("backbone", "resnet34"), blocks)[level]

    def inputs(self, ctx, inputs, options):
        return expand_inputs(inputs)

    def _read(self, ctx, paths) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """New image files preprocessed like the training slices, and their sizes."""
        expected = tuple(ctx.learned["input"]["shape"])
        images, sizes = [], []
        for path in paths:
            raw = load_image(path)
            x, _ = preprocess_slice(raw, None, ctx.config.preprocess.to_dict(), where=str(path))
            if x.shape != expected:
                raise DataError(f"{path}: preprocessed to {x.shape}, the model takes {expected}; "
                                "give images like the training ones (or set preprocess.shape)")
            images.append(x)
            sizes.append(tuple(raw.shape[:2]))
        return np.stack(images), sizes


def display_image(image: np.ndarray) -> np.ndarray:
    """A [0, 1] image for plotting from 0-255 pixels: RGB as is, otherwise channel 0."""
    image = np.clip(np.asarray(image, np.float32) / 255.0, 0.0, 1.0)
    return image if image.shape[-1] == 3 else image[..., 0]


class Lesion(Slices):
    """Binary abnormality masks; Dice per patient (over its slices) and pooled."""

    def learn(self, ctx):
        values = ctx.spec.label_values
        if len(values) != 2:
            raise DataError(f"{ctx.spec.path}: lesion segmentation needs two label values "
                            f"(background and abnormality), the spec has {ctx.spec.labels}")
        return {"labels": ctx.spec.labels, "channels": list(ctx.spec.channel_names)}

    def prepare(self, ctx):
        values = list(ctx.learned["labels"].values())
        train_src = self._loader(ctx, ctx.rows("train"), values)
        val_src = self._loader(ctx, ctx.rows("val"), values)
        train, val, steps = self._datasets(ctx, train_src, val_src, num_classes=2)
        image, _ = train_src(0)
        ctx.learned.update(self._learned(ctx, image.shape))
        model = compiled_model(ctx.config, image.shape, 2, steps * ctx.config.training.epochs)
        return Prepared(model, train, val, steps,
                        freeze_layer=self._freeze_layer(ctx, ctx.config.model.get("depth", 5) - 1))

    def _masks(self, ctx, model, images) -> np.ndarray:
        mean, _ = predict_in_batches(model, lambda idx: images[list(idx)], len(images),
                                     ctx.config.inference.batch_size, seed=ctx.config.data.seed)
        return np.argmax(mean[None], axis=-1).astype(np.uint8)

    def score(self, ctx, model, rows, run):
        source = self._loader(ctx, rows, list(ctx.learned["labels"].values()))
        batch, counts = ctx.config.inference.batch_size, []
        for start in range(0, len(rows), batch):
            pairs = [source(i) for i in range(start, min(start + batch, len(rows)))]
            preds = self._masks(ctx, model, np.stack([p[0] for p in pairs]))
            counts += [confusion_counts(pred, ref) for pred, (_, ref) in zip(preds, pairs)]
        table = pd.concat([rows[["sample", "subject"]].rename(columns={"sample": "item"}),
                           pd.DataFrame(counts)], axis=1)
        table["reference_pixels"] = table["tp"] + table["fn"]
        table["predicted_pixels"] = table["tp"] + table["fp"]
        table["dice"] = [dice_from_counts(r) for r in table.to_dict("records")]
        sums = table.groupby("subject", sort=True)[["tp", "fp", "fn", "tn"]].sum()
        patients = sums.reset_index()
        patients.insert(1, "slices", table.groupby("subject", sort=True).size().values)
        patients["dice"] = [dice_from_counts(r) for r in patients.to_dict("records")]
        run.save_table("test_per_patient.csv", patients)
        total = table[["tp", "fp", "fn", "tn"]].sum().to_dict()
        metrics = {"slices_with_abnormality": int((table["reference_pixels"] > 0).sum()),
                   "dice_overall": dice_from_counts(total),
                   "sensitivity_overall": safe_ratio(total["tp"], total["tp"] + total["fn"]),
                   "precision_overall": safe_ratio(total["tp"], total["tp"] + total["fp"]),
                   "dice_per_patient_mean": float(patients["dice"].mean()),
                   "dice_per_patient_median": float(patients["dice"].median())}
        self._overlay(ctx, model, table, source, run)
        return table, metrics, [
            f"test split ({len(patients)} patients, {len(table)} slices): Dice overall "
            f"{metrics['dice_overall']:.3f}, per patient mean "
            f"{metrics['dice_per_patient_mean']:.3f} (median "
            f"{metrics['dice_per_patient_median']:.3f}); sensitivity "
            f"{metrics['sensitivity_overall']:.3f}, precision {metrics['precision_overall']:.3f}"]

    def _overlay(self, ctx, model, table, source, run) -> None:
        """overlay.png: the test slices with the largest reference abnormalities."""
        chosen = table.sort_values(["reference_pixels", "item"], ascending=[False, True]).index[
            :ctx.config.inference.overlay_slices]
        if not len(chosen):
            return
        pairs = [source(i) for i in chosen]
        images = np.stack([p[0] for p in pairs])
        preds = self._masks(ctx, model, images)
        fig_titles = [f"{table.at[i, 'item']}  Dice {table.at[i, 'dice']:.2f}" for i in chosen]
        plots.slice_overlays([display_image(x) for x in images], preds, run / "overlay.png",
                             references=[p[1] for p in pairs], titles=fig_titles)

    def inputs(self, ctx, inputs, options):
        if options.uncertainty:
            raise ConfigError("--uncertainty needs a model with MC dropout; the lesion U-Net "
                              "has none")
        return expand_inputs(inputs)

    def predict(self, ctx, model, items, out, options):
        written, batch = [], ctx.config.inference.batch_size
        for start in range(0, len(items), batch):
            chunk = items[start:start + batch]
            images, sizes = self._read(ctx, chunk)
            for path, mask, size in zip(chunk, self._masks(ctx, model, images), sizes):
                if mask.shape != size:
                    mask = skimage.transform.resize(mask, size, order=0, anti_aliasing=False,
                                                    preserve_range=True).astype(np.uint8)
                suffix = path.suffix.lower() if path.suffix.lower() in (".tif", ".tiff", ".png") \
                    else ".png"
                written.append(save_image((mask > 0).astype(np.uint8) * 255,
                                          out / f"{path.stem}_mask{suffix}"))
                print(f"{path} -> {written[-1]}")
        return written


class SliceClasses(Slices):
    """Perspective and/or sequence of a slice; MC dropout; Grad-CAM."""

    def learn(self, ctx):
        target, classes = ctx.config.target, {}
        for head in (list(HEADS) if target.heads == "dual" else [target.heads]):
            names = target.classes.get(head) or ctx.spec.defaults.get(HEADS[head][1])
            if not names:
                raise DataError(f"{ctx.spec.path}: [defaults] {HEADS[head][1]} must list the "
                                f"{head} classes")
            classes[head] = [str(n) for n in names]
        return {"classes": classes}

    def _targets(self, ctx, rows) -> dict[str, np.ndarray]:
        out = {}
        for head, names in ctx.learned["classes"].items():
            column = HEADS[head][0]
            if column not in rows.columns:
                raise DataError(f"{ctx.spec.path}: the manifest has no {column!r} column; the "
                                f"spec's file pattern must capture {{{column}}}")
            unknown = sorted(set(rows[column].astype(str)) - set(names))
            if unknown:
                raise DataError(f"{ctx.spec.path}: {column} values {unknown} are not among the "
                                f"classes {names}; add them to [defaults] in the spec")
            out[head] = rows[column].astype(str).map({n: i for i, n in enumerate(names)}) \
                .to_numpy(np.int32)
        return out

    def _backbone_output(self, ctx) -> str:
        return self._freeze_layer(ctx, -1)

    def prepare(self, ctx):
        train_rows, val_rows = ctx.rows("train"), ctx.rows("val")
        train_src = self._loader(ctx, train_rows, use_labels=False)
        val_src = self._loader(ctx, val_rows, use_labels=False)
        targets = (self._targets(ctx, train_rows), self._targets(ctx, val_rows))
        train, val, steps = self._datasets(ctx, train_src, val_src, targets=targets)
        ctx.learned.update(self._learned(ctx, train_src(0).shape))
        classes = ctx.learned["classes"]
        metrics = {head: ["accuracy"] for head in classes}
        model = compiled_model(ctx.config, train_src(0).shape,
                               {head: len(names) for head, names in classes.items()},
                               steps * ctx.config.training.epochs, metrics=metrics)
        freeze = self._backbone_output(ctx) if ctx.config.model.get("freeze", "none") == "none" \
            else None
        return Prepared(model, train, val, steps, freeze_layer=freeze, metrics=metrics)

    def _probabilities(self, ctx, model, load, n, uncertainty=False):
        mc = bool(ctx.config.model.get("mc_dropout"))
        mean, std = predict_in_batches(model, load, n, ctx.config.inference.batch_size,
                                       passes=ctx.config.inference.mc_passes if mc else 0,
                                       seed=ctx.config.data.seed)
        heads = list(ctx.learned["classes"])
        if None in mean:
            mean, std = {heads[0]: mean[None]}, None if std is None else {heads[0]: std[None]}
        return mean, std

    def score(self, ctx, model, rows, run):
        classes = ctx.learned["classes"]
        truth, train_truth = self._targets(ctx, rows), self._targets(ctx, ctx.rows("train"))
        source = self._loader(ctx, rows, use_labels=False)
        probs, stds = self._probabilities(ctx, model, lambda idx: np.stack([source(i) for i in idx]),
                                          len(rows))
        table = rows[["sample", "subject"]].rename(columns={"sample": "item"})
        metrics, lines = {"mc_passes": ctx.config.inference.mc_passes
                          if ctx.config.model.get("mc_dropout") else 0}, []
        for head, names in classes.items():
            metrics.update(classification_summary(truth[head], probs[head], names,
                                                  train_truth[head], prefix=f"{head}_"))
            lines.append(classification_line(metrics, f"{head}_"))
            plots.confusion_matrix_plot(np.array(metrics[f"{head}_confusion_matrix"]), names,
                                        run / f"confusion_{head}.png", title=f"{head} (test)")
            table[f"{head}_true"] = [names[i] for i in truth[head]]
            table[f"{head}_pred"] = [names[i] for i in probs[head].argmax(1)]
            for c, name in enumerate(names):
                table[f"{head}_prob_{name}"] = probs[head][:, c]
                if stds is not None:
                    table[f"{head}_std_{name}"] = stds[head][:, c]
        if isinstance(model, keras.Model):
            self._gradcam(ctx, model, source, table, run)
        return table, metrics, [f"test split ({rows['subject'].nunique()} patients, "
                                f"{len(rows)} slices):"] + [f"  {line}" for line in lines]

    def _gradcam(self, ctx, model, source, table, run) -> None:
        """Grad-CAM overlays of a few test slices spread over the table, per head."""
        n = min(ctx.config.inference.gradcam_slices, len(table))
        if n <= 0:
            return
        chosen = sorted({int(i) for i in np.linspace(0, len(table) - 1, n).round()})
        images = np.stack([source(i) for i in chosen])
        layer = ctx.config.inference.gradcam_layer or self._backbone_output(ctx)
        for head in ctx.learned["classes"]:
            for k, (i, cam) in enumerate(zip(chosen, grad_cam(model, images, layer_name=layer,
                                                               output=head))):
                title = f"{head} {table.at[i, f'{head}_pred']} (true {table.at[i, f'{head}_true']})"
                save_cam_overlay(display_image(images[k]), cam,
                                 run / "gradcam" / f"{head}_{table.at[i, 'item']}.png", title=title)

    def inputs(self, ctx, inputs, options):
        if options.uncertainty and not ctx.config.model.get("mc_dropout"):
            raise ConfigError("--uncertainty needs a model trained with MC dropout "
                              "(model.mc_dropout = true)")
        return expand_inputs(inputs)

    def predict(self, ctx, model, items, out, options):
        uncertainty = options.uncertainty
        probs, stds = self._probabilities(ctx, model, lambda idx: self._read(
            ctx, [items[i] for i in idx])[0], len(items))
        table = pd.DataFrame({"file": [str(p) for p in items]})
        kind = "mean" if uncertainty else "prob"
        for head, names in ctx.learned["classes"].items():
            table[f"{head}_pred"] = [names[i] for i in probs[head].argmax(1)]
            for c, name in enumerate(names):
                table[f"{head}_{kind}_{name}"] = probs[head][:, c]
            if uncertainty:
                for c, name in enumerate(names):
                    table[f"{head}_std_{name}"] = stds[head][:, c]
        return [write_predictions(table, out)]


LESION = Lesion()
CLASSES = SliceClasses()
