"""Shipped models: a finished run reduced to what prediction needs, small enough for the
package (``brain_tf/pretrained/NAME/``), and named on the command line as ``pretrained:NAME``.

A bundle folder holds the run's ``config.toml``, ``learned.json`` and ``complete.json``,
the weights as float16 arrays (``weights.npz``: half the size of float32, with no
measurable change in the predicted labels), and ``MODEL_CARD.md``. The model is rebuilt
from the config and the weights are loaded back as float32.

A bundle carries nothing of the machine that trained it: the config's paths to data
and other runs (which prediction never reads) are left out, and a path left anywhere
in its config or learned.json stops the export.
"""

from __future__ import annotations

import copy
import io
import os
import shutil
from pathlib import Path

import numpy as np

from brain_tf.errors import ModelError
from brain_tf.io.atomic import atomic_path, write_text

PREFIX = "pretrained:"
WEIGHTS = "weights.npz"

#: (table, key) of a run's config.toml and learned.json that name files or folders of
#: the training machine; prediction never reads them, so a bundle leaves them out.
MACHINE_KEYS = {"config.toml": (("data", "spec"), ("data", "root"), ("data", "splits_csv"),
                                ("data", "shards"), ("training", "init_weights"),
                                ("features", "tissue_run"),
                                ("fewshot", "classifier_run")),
                "learned.json": (("classifier", "run"),)}


def pretrained_folder() -> Path:
    """Where the shipped models live (package data)."""
    return Path(__file__).resolve().parents[1] / "pretrained"


def shipped_models() -> list[str]:
    folder = pretrained_folder()
    return sorted(p.name for p in folder.iterdir() if (p / WEIGHTS).exists()) \
        if folder.is_dir() else []


def resolve(model: str | os.PathLike) -> Path:
    """A model path, with ``pretrained:NAME`` turned into its bundle folder."""
    text = str(model)
    if not text.startswith(PREFIX):
        return Path(model)
    name = text[len(PREFIX):]
    path = pretrained_folder() / name
    if not (path / WEIGHTS).exists():
        raise ModelError(f"{text}: no such shipped model; brain_tf ships "
                         f"{', '.join(PREFIX + n for n in shipped_models()) or 'none'}")
    return path


def is_bundle(path: Path) -> bool:
    return (Path(path) / WEIGHTS).exists()


def model_shape(model) -> dict:
    """What rebuilds ``model`` from its config: input shape and outputs (per head)."""
    out = model.output
    outputs = ({k: int(v.shape[-1]) for k, v in out.items()} if isinstance(out, dict)
               else int(out.shape[-1]))
    from brain_tf.distribute.precision import model_precision

    return {"input_shape": [int(n) for n in model.input_shape[1:]], "num_outputs": outputs,
            "precision": model_precision(model)}


def _strings(value, where: str):
    """``(where, text)`` of every string in nested dicts and lists."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{where}[{i}]")


def portable(name: str, table: dict) -> dict:
    """``table`` (a run's config or learned.json, by file ``name``) without the paths of
    the training machine: :data:`MACHINE_KEYS` left out (a shipped data spec's name and
    a ``pretrained:NAME`` starting point stay), a brain-extraction model given as a path
    replaced by none (prediction then asks for a mask per input). A path anywhere else is
    a :class:`ModelError`."""
    from brain_tf.data.spec import shipped_specs

    table = copy.deepcopy(table)
    for section, key in MACHINE_KEYS[name]:
        values = table.get(section)
        if isinstance(values, dict) and key in values:
            shipped = (values[key] in shipped_specs() if (section, key) == ("data", "spec")
                       else str(values[key]).startswith(PREFIX))
            if not shipped:
                del values[key]
    preprocess = table.get("preprocess") if name == "config.toml" else None
    model = isinstance(preprocess, dict) and preprocess.get("mask_model")
    if model and not model.startswith(PREFIX):
        print(f"{name}: preprocess.mask_model {model!r} is a run of this machine; the bundle "
              "has none, so its predictions need a --mask per input")
        preprocess["mask_model"] = ""
    paths = [f"{where} = {text!r}" for where, text in _strings(table, "")
             if os.path.isabs(text) or text.startswith("~")]
    if paths:
        raise ModelError(f"{name}: {', '.join(paths)} name files of this machine, which a "
                         "bundle must not carry; train the run without them to export it")
    return table


def write_bundle(run, out: str | os.PathLike, model, card: str) -> Path:
    """Write the bundle of ``run`` (a complete run folder) and its ``model`` to ``out``."""
    import json

    from brain_tf.config import dumps_toml

    run.require_complete()
    out = Path(out)
    config = portable("config.toml", run.load_config())
    learned = portable("learned.json", {**run.load_learned(), "model": model_shape(model)})
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        shutil.copy2(run / "complete.json", tmp / "complete.json")
        write_text(tmp / "config.toml", dumps_toml(config))
        (tmp / "learned.json").write_text(json.dumps(learned, indent=2) + "\n")
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **{f"w{i:03d}": w.astype(np.float16)
                                       for i, w in enumerate(model.get_weights())})
        (tmp / WEIGHTS).write_bytes(buffer.getvalue())
        write_text(tmp / "MODEL_CARD.md", card)
    return out


def stored_weights(path: Path) -> list[np.ndarray]:
    """The float32 weights of a bundle, in the model's order."""
    with np.load(Path(path) / WEIGHTS) as stored:
        return [stored[k].astype(np.float32) for k in sorted(stored.files)]


def mismatch(model, weights: list[np.ndarray]) -> int | None:
    """Index of the first array of ``weights`` whose shape is not ``model``'s (the shorter
    list's length when only their counts differ); None when they fit."""
    expected = [w.shape for w in model.get_weights()]
    found = [w.shape for w in weights]
    if found == expected:
        return None
    return next((i for i, (a, b) in enumerate(zip(found, expected)) if a != b),
                min(len(found), len(expected)))


def load_bundle(path: Path, build):
    """The model of a bundle: ``build()`` makes it from the config, then the weights load."""
    model = build()
    weights = stored_weights(path)
    if mismatch(model, weights) is not None:
        raise ModelError(f"{path}: the stored weights do not fit the model its config "
                         "builds; the bundle and this brain_tf version disagree")
    model.set_weights(weights)
    return model
