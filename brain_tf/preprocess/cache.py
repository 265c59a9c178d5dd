"""An HDF5 cache of preprocessed subjects, keyed by subject id.

One file holds every subject preprocessed with one config: the datasets
``image`` (float32), ``label`` (uint8) and ``mask`` (bool) when present, and
the attributes ``affine`` and ``spacing``. The file records a hash of the
preprocessing config (:func:`config_hash`); opening it with another config
empties it, so a stale subject is never served.

Each subject is written under a temporary group and then renamed, so an
interrupted write leaves no half subject; a file that cannot be read at all
is rebuilt. Access is serialised with a lock, so one cache can serve the
parallel loaders of a tf.data pipeline.
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import h5py
import numpy as np

from brain_tf.errors import DataError
from brain_tf.io.atomic import atomic_path
from brain_tf.preprocess.aligned import aligned_empty
from brain_tf.preprocess.subject import Preprocessed, check_config, config_hash

FORMAT = "brain_tf.preprocessed/1"


def _key(subject: str) -> str:
    """HDF5-safe group name for a subject id ('/' and '.' would be paths)."""
    return str(subject).replace("%", "%25").replace("/", "%2F").replace(".", "%2E")


def _unkey(name: str) -> str:
    return name.replace("%2E", ".").replace("%2F", "/").replace("%25", "%")


def _read(dataset: h5py.Dataset) -> np.ndarray:
    """Read a dataset into an aligned array (handed to TF without a copy)."""
    out = aligned_empty(dataset.shape, dataset.dtype)
    if out.size:
        dataset.read_direct(out)
    return out


class PreprocessCache:
    """Preprocessed subjects in one HDF5 file, invalidated when the config changes.

    Args:
        path: the ``.h5`` file (created when missing).
        config: the preprocessing config dict the subjects are made with.
        label_values: the spec's label values (part of the config's identity).
        compression: h5py compression for the arrays (``"lzf"`` is fast).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        config: Mapping[str, Any] | None = None,
        label_values: Sequence[int] | None = None,
        compression: str | None = "lzf",
    ):
        self.path = Path(path)
        self.config = check_config(config)
        self.hash = config_hash(config, label_values)
        self.compression = compression
        self._lock = threading.Lock()
        self._prepare()

    # ------------------------------------------------------------------ file
    def _create(self) -> None:
        with atomic_path(self.path) as tmp:
            with h5py.File(tmp, "w") as f:
                f.attrs["format"] = FORMAT
                f.attrs["config_hash"] = self.hash
                f.attrs["config"] = json.dumps(self.config, sort_keys=True, default=str)
                f.create_group("subjects")

    def _prepare(self) -> None:
        if not self.path.exists():
            self._create()
            return
        try:
            with h5py.File(self.path, "a") as f:
                stored = f.attrs.get("config_hash")
                if f.attrs.get("format") != FORMAT or "subjects" not in f:
                    raise OSError("not a brain_tf preprocessing cache")
                if stored == self.hash:
                    if "tmp" in f:
                        del f["tmp"]  # leftovers of an interrupted write
                    return
        except OSError as exc:
            warnings.warn(f"{self.path}: unreadable cache ({exc}); rebuilding it", stacklevel=3)
            self._create()
            return
        warnings.warn(f"{self.path}: preprocessing config changed; emptying the cache",
                      stacklevel=3)
        self._create()

    # ------------------------------------------------------------- mapping
    def keys(self) -> list[str]:
        """Subject ids held in the cache."""
        with self._lock, h5py.File(self.path, "r") as f:
            return [_unkey(k) for k in f["subjects"].keys()]

    def __contains__(self, subject: str) -> bool:
        with self._lock, h5py.File(self.path, "r") as f:
            return _key(subject) in f["subjects"]

    def __len__(self) -> int:
        return len(self.keys())

    def get(self, subject: str) -> Preprocessed | None:
        """The cached subject, or ``None`` when it is not cached."""
        with self._lock, h5py.File(self.path, "r") as f:
            group = f["subjects"].get(_key(subject))
            if group is None:
                return None
            try:
                return Preprocessed(
                    image=_read(group["image"]),
                    label=_read(group["label"]) if "label" in group else None,
                    mask=_read(group["mask"]) if "mask" in group else None,
                    affine=np.asarray(group.attrs["affine"], dtype=float),
                    spacing=tuple(float(s) for s in group.attrs["spacing"]),
                    subject=str(subject),
                )
            except (OSError, KeyError) as exc:
                raise DataError(f"{self.path}: subject {subject!r} is damaged in the cache "
                                f"({exc}); delete the file to rebuild it") from None

    def put(self, item: Preprocessed, subject: str | None = None) -> None:
        """Store ``item`` under ``subject`` (default ``item.subject``), replacing any old one."""
        subject = item.subject if subject is None else subject
        if not subject:
            raise DataError(f"{self.path}: a cached subject needs an id")
        name = _key(subject)
        with self._lock, h5py.File(self.path, "a") as f:
            tmp = f.require_group("tmp")
            if name in tmp:
                del tmp[name]
            group = tmp.create_group(name)
            arrays = {"image": item.image, "label": item.label, "mask": item.mask}
            for key, array in arrays.items():
                if array is not None:
                    group.create_dataset(key, data=array, compression=self.compression)
            group.attrs["affine"] = np.asarray(item.affine, dtype=float)
            group.attrs["spacing"] = np.asarray(item.spacing, dtype=float)
            if name in f["subjects"]:
                del f["subjects"][name]
            f.move(f"tmp/{name}", f"subjects/{name}")

    def get_or_create(self, subject: str, compute: Callable[[], Preprocessed]) -> Preprocessed:
        """The cached subject, or ``compute()`` stored and returned."""
        item = self.get(subject)
        if item is None:
            item = compute()
            item.subject = item.subject or str(subject)
            self.put(item, subject)
        return item
