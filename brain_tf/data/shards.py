"""Preprocessed subjects in compressed TFRecord shards, for large cohorts.

``brain-tf shard`` (:func:`write_shards`) preprocesses every subject of a data
spec once and writes it to GZIP-compressed TFRecord files, ``subjects_per_shard``
subjects each, in a new shard set folder ``set-HOST-PID-XXXXXXXX/``, plus
``index.json``::

    {"format": "brain_tf.shards/1", "compression": "GZIP",
     "preprocess": {...full preprocessing config...}, "config_hash": "...",
     "label_values": [...], "spec": "...",
     "shards": [{"file": "set-.../shard-00000-of-00002.tfrecord.gz", "subjects": [...],
                 "bytes": 123456, "sha256": "..."}, ...],
     "subjects": {"ID": {"shard": 0, "position": 0, "image_shape": [...],
                         "label": true, "mask": false, "metadata": {...}}, ...},
     "dtypes": {"image": "float32", "label": "uint8", "mask": "uint8"}}

Each record is a ``tf.train.Example`` with ``subject``, ``image`` (raw float32
bytes) and ``image_shape``, optionally ``label``/``mask`` (raw uint8, on the
image grid), ``affine`` (16) and ``spacing`` (3) as raw float64 bytes, and ``metadata``
(JSON of the manifest's other columns, e.g. age and sex).

Rewriting a shard folder never mixes two sets: the new set is written beside
the old one, and writing ``index.json`` (atomically, last) switches readers
over at once; then the old set is removed. A run killed before that leaves
the old set readable and a new set nobody refers to, removed by the next run.
Readers check every shard's size against the index, and :class:`ShardLoader`
its SHA-256 too, so a shard changed or cut short since is an error.

Two ways to read them:

* :class:`ShardLoader` - ``len`` and ``loader(i) -> Preprocessed`` like
  :class:`brain_tf.preprocess.ManifestLoader`, so every pipeline and task can
  use it (``data.shards = DIR`` in a task config). A subject is found by
  decompressing its shard up to it, so small shards make random access cheap.
* :func:`shard_dataset` - a ``tf.data.Dataset`` of subject dicts read with
  ``TFRecordDataset(num_parallel_reads=...)`` (shards interleaved in parallel),
  for streaming whole cohorts.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from brain_tf.errors import ConfigError, DataError
from brain_tf.io.atomic import write_text, writer_gone, writer_tag
from brain_tf.preprocess.aligned import as_aligned
from brain_tf.preprocess.loader import ManifestLoader
from brain_tf.preprocess.subject import Preprocessed, check_config, config_hash
from brain_tf.progress import Progress

FORMAT = "brain_tf.shards/1"
INDEX = "index.json"
COMPRESSION = "GZIP"
SET_PREFIX = "set-"
_SKIP_COLUMNS = {"sample", "label", "mask", "split"}


# ----------------------------------------------------------------- encoding
def _jsonable(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def row_metadata(row: Mapping[str, Any]) -> dict:
    """The manifest columns of a row that are not file paths (subject, age, sex, ...)."""
    return {str(k): _jsonable(v) for k, v in row.items()
            if k not in _SKIP_COLUMNS and not str(k).startswith("image_")}


def encode_subject(item: Preprocessed, metadata: Mapping[str, Any] | None = None) -> bytes:
    """One preprocessed subject as a serialised ``tf.train.Example``."""
    import tensorflow as tf

    def raw(array, dtype):
        return tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[np.ascontiguousarray(array, dtype=dtype).tobytes()]))

    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))

    features = {
        "subject": tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[str(item.subject).encode()])),
        "image": raw(item.image, np.float32),
        "image_shape": ints(item.image.shape),
        "affine": raw(item.affine, np.float64),  # float64 bytes: exact round trip
        "spacing": raw(item.spacing, np.float64),
        "metadata": tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[json.dumps(dict(metadata or {}), sort_keys=True).encode()])),
    }
    if item.label is not None:
        features["label"] = raw(item.label, np.uint8)
    if item.mask is not None:
        features["mask"] = raw(item.mask, np.uint8)
    example = tf.train.Example(features=tf.train.Features(feature=features))
    return example.SerializeToString()


def decode_subject(record: bytes, where: str = "shard") -> tuple[Preprocessed, dict]:
    """``(Preprocessed, metadata)`` from a record written by :func:`encode_subject`."""
    import tensorflow as tf

    try:
        feature = tf.train.Example.FromString(record).features.feature
        shape = tuple(int(n) for n in feature["image_shape"].int64_list.value)
        subject = feature["subject"].bytes_list.value[0].decode()

        def array(key, dtype, shape):
            data = np.frombuffer(feature[key].bytes_list.value[0], dtype=dtype)
            return as_aligned(data.reshape(shape), dtype)

        image = array("image", np.float32, shape)
        label = array("label", np.uint8, shape[:3]) if "label" in feature else None
        mask = array("mask", np.uint8, shape[:3]).astype(bool) if "mask" in feature else None
        affine = np.frombuffer(feature["affine"].bytes_list.value[0], np.float64).reshape(4, 4)
        spacing = tuple(float(s) for s in np.frombuffer(feature["spacing"].bytes_list.value[0],
                                                        np.float64))
        metadata = json.loads(feature["metadata"].bytes_list.value[0].decode())
    except (KeyError, IndexError, ValueError) as exc:
        raise DataError(f"{where}: damaged shard record ({type(exc).__name__}: {exc}); "
                        "write the shards again with 'brain-tf shard'") from None
    return Preprocessed(image, label, mask, affine, spacing, subject), metadata


# ------------------------------------------------------------------ writing
def write_shards(spec, out, preprocess: Mapping[str, Any] | None = None, root=None,
                 subjects_per_shard: int = 8, source: str = "", progress: bool = True) -> dict:
    """Preprocess every subject of ``spec`` (a DataSpec or its TOML path) into ``out``.

    Returns the index (also written to ``out/index.json``).
    """
    from brain_tf.data import load_spec

    if subjects_per_shard < 1:
        raise ConfigError(f"subjects_per_shard must be >= 1, not {subjects_per_shard}")
    if not hasattr(spec, "manifest"):
        spec = load_spec(spec, root=root)
    manifest = spec.manifest()
    config = check_config(preprocess)
    label_values = spec.label_values or None
    loader = ManifestLoader(manifest, config, label_values=label_values)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    previous = _indexed_files(out)
    _remove_unused_sets(out, previous)
    bar = Progress(len(loader), "subject") if progress else None
    set_name = f"{SET_PREFIX}{writer_tag()}"
    (out / set_name).mkdir()
    try:
        shards, subjects = _write_set(out, set_name, loader, manifest, subjects_per_shard, bar)
    except BaseException:
        shutil.rmtree(out / set_name, ignore_errors=True)
        raise
    count = len(loader)
    index = {"format": FORMAT, "compression": COMPRESSION, "preprocess": config,
             "config_hash": config_hash(config, label_values),
             "label_values": label_values, "spec": str(getattr(spec, "path", "")),
             "source": source, "num_subjects": count, "shards": shards, "subjects": subjects,
             "dtypes": {"image": "float32", "label": "uint8", "mask": "uint8"}}
    write_text(out / INDEX, json.dumps(index, indent=1, default=str) + "\n")  # the switch
    _remove_files(out, previous - {s["file"] for s in shards})
    return index


def _write_set(out: Path, set_name: str, loader, manifest: pd.DataFrame,
               subjects_per_shard: int, bar) -> tuple[list, dict]:
    """Write every subject into shard files in ``out/set_name``; the index entries."""
    import tensorflow as tf

    count = len(loader)
    num_shards = math.ceil(count / subjects_per_shard)
    shards, subjects = [], {}
    options = tf.io.TFRecordOptions(compression_type=COMPRESSION)
    for s in range(num_shards):
        name = f"{set_name}/shard-{s:05d}-of-{num_shards:05d}.tfrecord.gz"
        members = range(s * subjects_per_shard, min(count, (s + 1) * subjects_per_shard))
        ids = []
        with tf.io.TFRecordWriter(str(out / name), options) as writer:
            for position, i in enumerate(members):
                item = loader(i)
                metadata = row_metadata(manifest.iloc[i])
                writer.write(encode_subject(item, metadata))
                sid = loader.subject_id(i)
                ids.append(sid)
                subjects[sid] = {"shard": s, "position": position,
                                 "image_shape": list(item.image.shape),
                                 "label": item.label is not None, "mask": item.mask is not None,
                                 "metadata": metadata}
                if bar is not None:
                    bar.add()
        data = (out / name).read_bytes()
        shards.append({"file": name, "subjects": ids, "bytes": len(data),
                       "sha256": hashlib.sha256(data).hexdigest()})
    return shards, subjects


def _indexed_files(folder: Path) -> set[str]:
    """The shard files the folder's current index refers to (none without a readable one)."""
    try:
        return {s["file"] for s in json.loads((folder / INDEX).read_text())["shards"]}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def _remove_files(folder: Path, files: set[str]) -> None:
    """Remove the shard files of a replaced set: its set folder (or, in folders written
    before sets had folders, the shard files themselves)."""
    for name in files:
        path = folder / name
        if path.parent.parent == folder and path.parent.name.startswith(SET_PREFIX):
            shutil.rmtree(path.parent, ignore_errors=True)
        elif path.parent == folder:
            path.unlink(missing_ok=True)


def _remove_unused_sets(folder: Path, used: set[str]) -> None:
    """Remove the set folders no index refers to whose writer has ended (killed runs)."""
    used_sets = {name.split("/", 1)[0] for name in used}
    for entry in folder.iterdir():
        if (entry.is_dir() and entry.name.startswith(SET_PREFIX) and entry.name not in used_sets
                and writer_gone(entry.name[len(SET_PREFIX):])):
            shutil.rmtree(entry, ignore_errors=True)


# ------------------------------------------------------------------ reading
def load_index(folder: str | os.PathLike) -> dict:
    """The ``index.json`` of a shard folder (DataError when missing or not ours)."""
    path = Path(folder) / INDEX
    if not path.exists():
        raise DataError(f"{folder}: no {INDEX}; not a shard folder (write one with "
                        "'brain-tf shard --spec SPEC --out DIR')")
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: unreadable index ({exc.msg}); write the shards again") from None
    if index.get("format") != FORMAT:
        raise DataError(f"{path}: format {index.get('format')!r} is not {FORMAT!r}; write the "
                        "shards again with this version of brain_tf")
    for shard in index["shards"]:
        _check_size(Path(folder) / shard["file"], shard.get("bytes"))
    return index


def _check_size(path: Path, expected: int | None) -> None:
    if not path.exists():
        raise DataError(f"{path}: shard file missing; write the shards again")
    size = path.stat().st_size
    if expected is not None and size != expected:
        raise DataError(f"{path}: {size} bytes where {INDEX} says {expected}; the shard set is "
                        "incomplete or was changed, write the shards again")


def _records(path: Path):
    """The raw records of one shard file, in order."""
    import tensorflow as tf
    from tensorflow.python.util import deprecation

    options = tf.io.TFRecordOptions(compression_type=COMPRESSION)
    with deprecation.silence():
        yield from tf.compat.v1.io.tf_record_iterator(str(path), options)


def _config_mismatch(stored: Mapping, wanted: Mapping) -> str:
    keys = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
    return ", ".join(f"{k}: shards {stored.get(k)!r} vs config {wanted.get(k)!r}" for k in keys)


class ShardLoader:
    """``loader(i) -> Preprocessed`` for subjects stored in a shard folder.

    Args:
        folder: a folder written by :func:`write_shards`.
        subjects: subject ids in loader order (default: every subject, index order).
        config: the preprocessing config the caller expects; with ``label_values``
            it must match the one the shards were written with (ConfigError if not).
        label_values: the label values in class order the caller expects.
        cached_shards: how many decompressed shards to keep in memory (each holds
            ``subjects_per_shard`` preprocessed subjects).
    """

    def __init__(self, folder: str | os.PathLike, subjects: Sequence[str] | None = None,
                 config: Mapping[str, Any] | None = None,
                 label_values: Sequence[int] | None = None, cached_shards: int = 2):
        self.folder = Path(folder)
        # the decompressed records of the last shards read: a GZIP stream has no random
        # access, so without them every subject would re-read its shard from the start
        self.cached_shards = max(1, int(cached_shards))
        self._records: OrderedDict[Path, list[bytes]] = OrderedDict()
        self._lock = threading.Lock()
        self.index = load_index(self.folder)
        if config is not None:
            wanted = config_hash(config, label_values)
            if wanted != self.index["config_hash"]:
                full = check_config(config)
                if full["labels"] is None and label_values is not None:
                    full["labels"] = [int(v) for v in label_values]
                stored = dict(self.index["preprocess"])
                if stored.get("labels") is None and self.index.get("label_values") is not None:
                    stored["labels"] = self.index["label_values"]
                diff = _config_mismatch(stored, full) or "preprocessing code version"
                raise ConfigError(f"{self.folder}: shards were preprocessed differently ({diff}); "
                                  "write them again with this task's config (brain-tf shard "
                                  "--config) or drop data.shards")
        known = self.index["subjects"]
        self.subjects = [str(s) for s in (subjects if subjects is not None else list(known))]
        missing = [s for s in self.subjects if s not in known]
        if missing:
            raise DataError(f"{self.folder}: {len(missing)} subject(s) are not in the shards "
                            f"(e.g. {missing[:3]}); write the shards again from the same spec")
        if not self.subjects:
            raise DataError(f"{self.folder}: no subjects to load")
        self.manifest = pd.DataFrame({"sample": self.subjects})

    @classmethod
    def for_rows(cls, folder, rows: pd.DataFrame, config=None, label_values=None) -> "ShardLoader":
        """A loader over the ``sample`` ids of some manifest rows, in their order."""
        loader = cls(folder, [str(s) for s in rows["sample"]], config, label_values)
        loader.manifest = rows.reset_index(drop=True)
        return loader

    def __len__(self) -> int:
        return len(self.subjects)

    def subject_id(self, index: int) -> str:
        return self.subjects[int(index)]

    def metadata(self, index: int) -> dict:
        """The manifest metadata stored with subject ``index`` (age, sex, ...)."""
        return dict(self.index["subjects"][self.subject_id(index)]["metadata"])

    def __call__(self, index: int) -> Preprocessed:
        sid = self.subject_id(index)
        entry = self.index["subjects"][sid]
        shard = self.index["shards"][entry["shard"]]
        path = self.folder / shard["file"]
        _check_size(path, shard.get("bytes"))
        try:
            records = self._shard_records(path, shard.get("sha256"))
        except DataError:
            raise
        except Exception as exc:  # a truncated or corrupt GZIP stream
            raise DataError(f"{path}: cannot read the shard ({type(exc).__name__}: {exc}); "
                            "write the shards again") from None
        if entry["position"] < len(records):
            item, _ = decode_subject(records[entry["position"]], where=str(path))
            if item.subject == sid:
                return item
        raise DataError(f"{path}: subject {sid!r} is not where {INDEX} says; write the "
                        "shards again")

    def _shard_records(self, path: Path, sha256: str | None = None) -> list[bytes]:
        with self._lock:
            if path in self._records:
                self._records.move_to_end(path)
                return self._records[path]
        # read outside the lock: other shards stay readable
        if sha256 is not None and hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
            raise DataError(f"{path}: contents differ from the checksum in {INDEX}; the shard "
                            "was changed or damaged since it was written, write the shards again")
        records = list(_records(path))
        with self._lock:
            self._records[path] = records
            while len(self._records) > self.cached_shards:
                self._records.popitem(last=False)
        return records


def shard_dataset(folder: str | os.PathLike, num_parallel_reads: int | None = None,
                  num_parallel_calls: int | None = None):
    """A ``tf.data.Dataset`` of every subject in ``folder``, shards read in parallel.

    Elements are dicts: ``subject`` (string), ``image`` float32 (x, y, z, c),
    ``label`` uint8 (x, y, z) when every subject has one, ``affine`` float64
    (4, 4), ``spacing`` float64 (3,). The order interleaves the shards.
    """
    import tensorflow as tf

    index = load_index(folder)
    autotune = tf.data.AUTOTUNE
    files = [str(Path(folder) / s["file"]) for s in index["shards"]]
    with_label = all(e["label"] for e in index["subjects"].values())
    spec = {"subject": tf.io.FixedLenFeature([], tf.string),
            "image": tf.io.FixedLenFeature([], tf.string),
            "image_shape": tf.io.FixedLenFeature([4], tf.int64),
            "affine": tf.io.FixedLenFeature([], tf.string),
            "spacing": tf.io.FixedLenFeature([], tf.string)}
    if with_label:
        spec["label"] = tf.io.FixedLenFeature([], tf.string)

    def parse(record):
        f = tf.io.parse_single_example(record, spec)
        shape = tf.cast(f["image_shape"], tf.int32)
        out = {"subject": f["subject"],
               "image": tf.reshape(tf.io.decode_raw(f["image"], tf.float32), shape),
               "affine": tf.reshape(tf.io.decode_raw(f["affine"], tf.float64), [4, 4]),
               "spacing": tf.io.decode_raw(f["spacing"], tf.float64)}
        if with_label:
            out["label"] = tf.reshape(tf.io.decode_raw(f["label"], tf.uint8), shape[:3])
        return out

    ds = tf.data.TFRecordDataset(files, compression_type=index["compression"],
                                 num_parallel_reads=num_parallel_reads or autotune)
    return ds.map(parse, num_parallel_calls=num_parallel_calls or autotune)


def subject_loader(rows: pd.DataFrame, config, label_values=None, use_labels: bool = True):
    """The preprocessed subjects of some manifest rows of a run (``len``, ``loader(i)``).

    With ``config.data.shards`` set (a folder written by ``brain-tf shard``) they are read
    from its TFRecord shards, after checking that those were preprocessed with this
    config; otherwise from the manifest's files.
    """
    preprocess = config.preprocess.to_dict()
    if config.data.shards:
        return ShardLoader.for_rows(config.data.shards, rows, preprocess, label_values)
    return ManifestLoader(rows, preprocess, label_values=label_values, use_labels=use_labels)
