"""The Siamese slice family: an embedding of 2D slices for few-shot labels (system E).

The embedding (:func:`brain_tf.models.siamese.siamese_embedding`) maps a slice to a unit
vector. It trains on class-balanced batches of the *training patients'* slices
(:func:`brain_tf.pipeline.balanced.class_balanced_dataset`) with a pair or triplet loss
(:class:`brain_tf.losses.ContrastiveLoss`, :class:`brain_tf.losses.TripletSemiHardLoss`);
its classes are the slices' perspective, sequence or both (``target.label``).
``target.held_out`` leaves classes out of training and validation altogether, so the
test shows how the embedding serves classes it never saw.

Evaluation (test patients only, :mod:`brain_tf.evaluation.fewshot`): for each ``k`` of
``fewshot.shots``, ``k`` labelled slices per class from *support* patients give class
centroids, and the slices of the other, *query* patients get the nearest centroid's
class; accuracies are averaged over ``fewshot.draws`` seeded draws and reported beside
chance and, with ``fewshot.classifier_run``, beside a slice classifier's test accuracy.
The run folder gets ``fewshot_draws.csv`` (one row per draw and k) and
``embedding_pca.png`` (the test embeddings on their first two principal axes).

Prediction labels new slices from a small labelled support set
(``brain-tf slice-classification predict --model RUN --support DIR_OR_CSV ...``): a folder
of slices named like the dataset's files (their class is read from the name, new class
names welcome), or a CSV of ``file, class``. ``saved_model/`` serves the embedding under
two names, ``serve`` (what :class:`brain_tf.training.run.SavedModelPredictor` calls) and
``embed``.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd

from brain_tf.data.patterns import Pattern
from brain_tf.errors import ConfigError, DataError
from brain_tf.evaluation.fewshot import (
    centroids, fewshot_draws, fewshot_lines, fewshot_summary, nearest, pca_2d,
)
from brain_tf.inference.batches import predict_in_batches
from brain_tf.io import atomic_path
from brain_tf.io.tables import write_predictions
from brain_tf.pipeline.balanced import class_balanced_dataset
from brain_tf.tasks.slices import HEADS, Slices, expand_inputs
from brain_tf.training import plots
from brain_tf.training.fit import compiled_model
from brain_tf.training.run import RunFolder
from brain_tf.training.runner import Prepared

FIELDS = {"perspective": ("perspective",), "sequence": ("sequence",),
          "both": ("perspective", "sequence")}
"""``target.label`` -> the manifest columns (file-name fields) that make a slice's class."""

EMBEDDING = ("(batch, embedding_dim) float32 L2-normalised embedding; saved_model/ serves "
             "it as 'serve' and 'embed'")


def slice_classes(rows: pd.DataFrame, fields, where: str) -> pd.Series:
    """Each row's class name: its ``fields`` values joined with ``_`` (e.g. ``AX_T2``)."""
    missing = [f for f in fields if f not in rows.columns]
    if missing:
        raise DataError(f"{where}: the manifest has no {missing} column; the spec's file "
                        f"pattern must capture {', '.join('{' + f + '}' for f in missing)}")
    return rows[list(fields)].astype(str).agg("_".join, axis=1)


def relaxed_pattern(text: str, fields) -> Pattern:
    """``text`` with the ``fields`` matching any name (a support set may name new classes,
    e.g. ``SWI`` where the dataset's pattern lists DWI|T1|T1C|T2)."""
    parts = []
    for part in Pattern(text)._parts():
        if part[0] == "lit":
            parts.append(part[1])
        else:
            parts.append(f"{{{part[1]}}}" if part[1] in fields else f"{{{part[1]}:{part[2]}}}")
    return Pattern("".join(parts))


def support_set(learned: dict, support) -> tuple[list[Path], list[str]]:
    """The files and class names of a support set: a CSV of ``file, class`` (relative files
    from the CSV's folder), or a folder of slices named like the dataset's files."""
    path = Path(support)
    if path.suffix.lower() == ".csv" and path.is_file():
        table = pd.read_csv(path)
        if not {"file", "class"} <= set(table.columns):
            raise DataError(f"{path}: a support CSV needs columns file and class, it has "
                            f"{list(table.columns)}")
        files = [Path(f) if Path(f).is_absolute() else path.parent / f for f in table["file"]]
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            raise DataError(f"{path}: support files not found: {missing[:5]}")
        names = table["class"].astype(str).tolist()
    elif path.is_dir():
        pattern = relaxed_pattern(learned["file_pattern"], learned["fields"])
        files, names, unnamed = expand_inputs([path]), [], []
        for file in files:
            fields = pattern.match(file.relative_to(path).as_posix())
            if fields is None:
                unnamed.append(file.name)
            else:
                names.append("_".join(fields[f] for f in learned["fields"]))
        if unnamed:
            raise DataError(f"{path}: support files {unnamed[:5]} are not named like the "
                            f"dataset's files ({learned['file_pattern']}); rename them or give "
                            "a CSV of file,class")
    else:
        raise DataError(f"{path}: --support must be a folder of labelled slices or a CSV of "
                        "file,class")
    if len(set(names)) < 2:
        raise DataError(f"{path}: the support set has {len(set(names))} class(es) "
                        f"{sorted(set(names))}; give slices of at least two classes")
    return files, names


def export_embedding(model: keras.Model, path: Path) -> Path:
    """A SavedModel of ``model`` with the endpoints ``serve`` and ``embed`` (both: 0-255
    slices ``(batch, rows, cols, channels)`` -> embeddings)."""
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = [tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="image")]
    for name in ("serve", "embed"):
        archive.add_endpoint(name, lambda image: model(image, training=False),
                             input_signature=spec)
    with atomic_path(path) as tmp:
        archive.write_out(str(tmp), verbose=False)
    return path


class Siamese(Slices):
    """A slice embedding trained with a metric-learning loss, scored few-shot."""

    takes_support = True

    def learn(self, ctx):
        target, fewshot = ctx.config.target, ctx.config.fewshot
        fields = FIELDS[target.label]
        names = []
        for field in fields:
            found = target.classes.get(field) or ctx.spec.defaults.get(HEADS[field][1])
            if not found:
                raise DataError(f"{ctx.spec.path}: [defaults] {HEADS[field][1]} must list the "
                                f"{field} classes")
            names.append([str(n) for n in found])
        combos = [(n,) for n in names[0]] if len(names) == 1 else \
            [(p, s) for p in names[0] for s in names[1]]
        known = {v for values in names for v in values} | {"_".join(c) for c in combos}
        unknown = sorted(set(target.held_out) - known)
        if unknown:
            raise ConfigError(f"target.held_out {unknown} are not among the classes "
                              f"{sorted(known)}")
        held = [c for c in combos if "_".join(c) in target.held_out
                or set(c) & set(target.held_out)]
        if len(combos) - len(held) < 2:
            raise ConfigError(f"target.held_out {target.held_out} leaves fewer than two "
                              "classes to train on")
        learned = {"label": target.label, "fields": list(fields),
                   "classes": ["_".join(c) for c in combos],
                   "held_out": ["_".join(c) for c in held],
                   "file_pattern": next(iter(ctx.spec.images.values())), "output": EMBEDDING}
        if fewshot.classifier_run:
            learned["classifier"] = self._classifier(fewshot.classifier_run, target.label)
        return learned

    def _classifier(self, path, label: str) -> dict:
        """A slice classifier's test accuracy for ``label`` and its test patients."""
        if label == "both":
            raise ConfigError("fewshot.classifier_run: a classifier reports perspective and "
                              "sequence accuracy; set target.label to one of them")
        run = RunFolder.open(path)
        run.require_complete()
        metrics = run.load_json("metrics.json")
        if f"{label}_accuracy" not in metrics:
            raise ConfigError(f"{run.path}: its metrics.json has no {label}_accuracy; pass a "
                              f"slice-classification run with a {label} head")
        splits = pd.read_csv(run / "splits.csv")
        return {"run": str(run.path), "accuracy": float(metrics[f"{label}_accuracy"]),
                "test_subjects": sorted(splits.loc[splits["split"] == "test", "subject"]
                                        .astype(str).unique())}

    def labelled(self, ctx, rows: pd.DataFrame, trained_only: bool = False
                 ) -> tuple[pd.DataFrame, np.ndarray]:
        """Manifest rows (without the held-out classes when ``trained_only``) and their
        class ids (positions in ``learned["classes"]``)."""
        names = slice_classes(rows, ctx.learned["fields"], str(ctx.spec.path))
        classes = ctx.learned["classes"]
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise DataError(f"{ctx.spec.path}: classes {unknown} are not among {classes}; add "
                            "them to [defaults] in the spec or to target.classes")
        keep = ~names.isin(ctx.learned["held_out"]) if trained_only \
            else pd.Series(True, index=names.index)
        ids = names[keep].map({c: i for i, c in enumerate(classes)}).to_numpy(np.int32)
        return rows[keep.to_numpy()].reset_index(drop=True), ids

    def prepare(self, ctx):
        cfg, tr, target = ctx.config, ctx.config.training, ctx.config.target
        (train_rows, y_train), (val_rows, y_val) = (self.labelled(ctx, ctx.rows(s), True)
                                                    for s in ("train", "val"))
        per_batch = min(len(np.unique(y_train)), tr.batch_size // target.per_class)
        if per_batch < 2:
            raise ConfigError(f"training.batch_size {tr.batch_size} holds fewer than two "
                              f"classes of target.per_class = {target.per_class} slices; raise "
                              "batch_size or lower per_class")
        batch = per_batch * target.per_class
        train_src = self._loader(ctx, train_rows, use_labels=False)
        val_src = self._loader(ctx, val_rows, use_labels=False)
        train = class_balanced_dataset(train_src, y_train, target.per_class, per_batch,
                                       augment=cfg.augment, seed=cfg.data.seed)
        val = class_balanced_dataset(val_src, y_val, target.per_class,
                                     min(per_batch, len(np.unique(y_val))), seed=cfg.data.seed,
                                     batches=max(1, -(-len(val_rows) // batch)))
        steps = tr.steps_per_epoch or max(1, -(-len(train_rows) // batch))
        shape = train_src(0).shape
        ctx.learned.update(self._learned(ctx, shape))
        model = compiled_model(cfg, shape, target.embedding_dim, steps * tr.epochs)
        freeze = self._freeze_layer(ctx, -1) if cfg.model.get("freeze", "none") == "none" \
            else None
        return Prepared(model, train, val, steps, freeze_layer=freeze)

    def save(self, run, model):
        run.save_model(model, export=False)
        export_embedding(model, run / "saved_model")

    def embed(self, ctx, model, load, n: int) -> np.ndarray:
        """Embeddings of ``n`` slices, ``load(indices)`` giving their batches."""
        mean, _ = predict_in_batches(model, load, n, ctx.config.inference.batch_size,
                                     seed=ctx.config.data.seed)
        return next(iter(mean.values()))

    def score(self, ctx, model, rows, run):
        fewshot, classes = ctx.config.fewshot, ctx.learned["classes"]
        rows, truth = self.labelled(ctx, rows)
        source = self._loader(ctx, rows, use_labels=False)
        embeddings = self.embed(ctx, model, lambda idx: np.stack([source(i) for i in idx]),
                                len(rows))
        draws, predictions = fewshot_draws(embeddings, truth, rows["subject"], len(classes),
                                           fewshot.shots, fewshot.draws,
                                           fewshot.support_fraction, seed=ctx.config.data.seed)
        classifier = ctx.learned.get("classifier")
        metrics = {"label": ctx.learned["label"], **fewshot_summary(
            predictions, classes, ctx.learned["held_out"],
            classifier["accuracy"] if classifier else None)}
        if classifier:
            metrics["classifier_run"] = classifier["run"]
            metrics["classifier_same_test_patients"] = classifier["test_subjects"] == sorted(
                rows["subject"].astype(str).unique())
        run.save_table("fewshot_draws.csv", draws)
        points = pca_2d(embeddings)
        plots.embedding_scatter(points, truth, classes, run / "embedding_pca.png",
                                held_out=ctx.learned["held_out"],
                                title=f"test embeddings by {ctx.learned['label']} (PCA)")
        table = rows[["sample", "subject"]].rename(columns={"sample": "item"})
        table["class"] = [classes[i] for i in truth]
        table["held_out"] = table["class"].isin(ctx.learned["held_out"])
        table["pc1"], table["pc2"] = points[:, 0], points[:, 1]
        for k in metrics["shots"]:
            chosen = predictions[predictions["k"] == k]
            hits = (chosen["true"] == chosen["predicted"]).groupby(chosen["index"])
            table[f"k{k}_queried"] = hits.size().reindex(range(len(rows)), fill_value=0).values
            table[f"k{k}_correct"] = hits.mean().reindex(range(len(rows))).values
        return table, metrics, [f"test split ({rows['subject'].nunique()} patients, "
                                f"{len(rows)} slices; classes by {ctx.learned['label']}):"] + \
            [f"  {line}" for line in fewshot_lines(metrics)]

    def inputs(self, ctx, inputs, options):
        """The slices to label and the support set, both checked before the model loads."""
        if options.support is None:
            raise ConfigError("a siamese run labels slices by their nearest classes in a "
                              "support set: pass --support DIR_OR_CSV (labelled slices of "
                              "each class)")
        if options.uncertainty:
            raise ConfigError("--uncertainty needs a model with MC dropout; a siamese "
                              "embedding has none")
        return [expand_inputs(inputs), support_set(ctx.learned, options.support)]

    def predict(self, ctx, model, items, out, options) -> list[Path]:
        """predictions.csv: each slice's nearest support class (by class centroid), its
        distance, and the runner-up class and its distance."""
        items, (files, names) = items
        classes = sorted(set(names))
        centres, _ = centroids(
            self.embed(ctx, model, lambda idx: self._read(ctx, [files[i] for i in idx])[0],
                       len(files)),
            [classes.index(n) for n in names], len(classes))
        order, distances = nearest(
            self.embed(ctx, model, lambda idx: self._read(ctx, [items[i] for i in idx])[0],
                       len(items)), centres)
        print(f"support set: {len(files)} slices of {len(classes)} classes "
              + ", ".join(f"{c} {names.count(c)}" for c in classes))
        table = pd.DataFrame({"file": [str(p) for p in items],
                              "predicted": [classes[i] for i in order[:, 0]],
                              "distance": distances[:, 0],
                              "runner_up": [classes[i] for i in order[:, 1]],
                              "runner_up_distance": distances[:, 1]})
        return [write_predictions(table, out)]


FAMILY = Siamese()

