"""Cache folder names for benches that keep a model's outputs between runs.

A name says which model wrote the outputs, and changes when the model does: the model's
name (``pretrained:brain``, a run folder) made safe for a path, and a digest of its
weight and configuration files, so a retrained model (a new shipped bundle under the same
name) never reuses another's outputs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from brain_tf.training import bundle

#: The files of a bundle or run folder that decide its outputs.
MODEL_FILES = ("weights.npz", "model.keras", "best.keras", "config.toml", "learned.json")


def model_digest(model: str) -> str:
    """Twelve hex digits of the SHA-1 of ``model``'s weight and configuration files."""
    path = bundle.resolve(model)
    files = [path] if path.is_file() else [path / n for n in MODEL_FILES if (path / n).exists()]
    if not files:
        raise FileNotFoundError(f"{path}: no model there (none of {', '.join(MODEL_FILES)})")
    digest = hashlib.sha1()
    for file in files:
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


def cache_key(*models: str) -> str:
    """One folder name for outputs that depend on ``models`` (e.g. a network and the brain
    model whose mask it uses)."""
    safe = ("".join(c if c.isalnum() or c in "-." else "_" for c in str(m)) for m in models)
    return "+".join(f"{name}-{model_digest(m)}" for name, m in zip(safe, models))
