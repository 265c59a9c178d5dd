"""Atomic writes: write to a temporary name in the target folder, then rename.

A crash (or Ctrl-C) while writing never leaves a half-written file under the
final name, and readers never see one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path


def full_suffix(path: str | os.PathLike) -> str:
    """The suffix that decides a file's format, e.g. ``.nii.gz`` or ``.csv``."""
    name = Path(path).name
    for double in (".nii.gz", ".tar.gz", ".weights.h5"):
        if name.lower().endswith(double):
            return name[-len(double):]
    return Path(name).suffix


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    The temporary name keeps the suffix so that writers choosing a format by
    extension (nibabel, imageio, pandas, Keras) behave as for the real name.
    Works for files and for folders (a folder written under the temporary
    name replaces an existing folder at ``path``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = full_suffix(path)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    tmp = path.with_name(f".{stem}.tmp-{uuid.uuid4().hex[:8]}{suffix}")
    try:
        yield tmp
        if tmp.is_dir():
            if path.exists():
                old = path.with_name(f".{stem}.old-{uuid.uuid4().hex[:8]}")
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        elif tmp.exists():
            os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return Path(path)
