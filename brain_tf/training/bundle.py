"""Shipped models: a finished run reduced to what prediction needs, small enough for the
package (``brain_tf/pretrained/NAME/``), and named on the command line as ``pretrained:NAME``.

A bundle folder holds the run's ``config.toml``, ``learned.json`` and ``complete.json``,
the weights as float16 arrays (``weights.npz``: half the size of float32, with no
measurable change in the predicted labels), and ``MODEL_CARD.md``. The model is rebuilt
from the config and the weights are loaded back as float32.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np

from brain_tf.errors import ModelError
from brain_tf.io.atomic import atomic_path, write_text

PREFIX = "pretrained:"
WEIGHTS = "weights.npz"
KEPT = ("config.toml", "complete.json")


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


def write_bundle(run, out: str | os.PathLike, model, card: str) -> Path:
    """Write the bundle of ``run`` (a complete run folder) and its ``model`` to ``out``."""
    import json

    from brain_tf.training.runner import model_shape

    run.require_complete()
    out = Path(out)
    learned = {**run.load_learned(), "model": model_shape(model)}
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        for name in KEPT:
            shutil.copy2(run / name, tmp / name)
        (tmp / "learned.json").write_text(json.dumps(learned, indent=2) + "\n")
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **{f"w{i:03d}": w.astype(np.float16)
                                       for i, w in enumerate(model.get_weights())})
        (tmp / WEIGHTS).write_bytes(buffer.getvalue())
        write_text(tmp / "MODEL_CARD.md", card)
    return out


def load_bundle(path: Path, build):
    """The model of a bundle: ``build()`` makes it from the config, then the weights load."""
    model = build()
    with np.load(Path(path) / WEIGHTS) as stored:
        weights = [stored[k].astype(np.float32) for k in sorted(stored.files)]
    expected = [w.shape for w in model.get_weights()]
    if [w.shape for w in weights] != expected:
        raise ModelError(f"{path}: the stored weights do not fit the model its config "
                         "builds; the bundle and this brain_tf version disagree")
    model.set_weights(weights)
    return model
