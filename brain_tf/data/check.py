"""Check every file of a manifest before training starts.

:func:`check_manifest` reads every image, label and mask file of a manifest
once, to the last byte (a ``.gz`` file is decompressed whole, so a truncated
or bit-flipped file fails its CRC check), and reports every problem at once,
one line per problem naming the subject and the file:

- the file is not a readable volume (or 2D image, for slice manifests);
- NaN/Inf voxels;
- image, label and mask do not share one grid (shape and affine, after
  reorientation to RAS+, with the tolerance the loaders use);
- label values outside the spec's ``[labels]`` set;
- a subject whose images have another number of channels than the others.

By default problems raise one :class:`DataError` listing them all; with
``on_error="skip"`` the report says which samples are bad, and
:meth:`CheckReport.keep` drops them from the manifest.

Files are read in parallel threads (decompression releases the GIL). A file
that passed is remembered by (path, size, modification time), in memory and,
with ``cache=PATH``, in a JSON file, so checking unchanged files again takes
no reading.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
import pandas as pd

from brain_tf.errors import BrainTFError, DataError
from brain_tf.io import load_image
from brain_tf.io.atomic import write_text
from brain_tf.io.nifti import _check_exists, _read_errors, _read_image

#: the affine tolerance of :func:`brain_tf.io.check_aligned` and preprocess_subject
ATOL = 1e-3
CACHE_FORMAT = "brain_tf.checked/1"
ROLES = ("image", "label", "mask")
_MEMORY: dict[str, dict] = {}  # files that passed, by cache key
_MEMORY_LOCK = threading.Lock()


def default_cache_path() -> Path:
    """``$XDG_CACHE_HOME/brain_tf/checked_files.json`` (``~/.cache`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "brain_tf" / "checked_files.json"


@dataclasses.dataclass(frozen=True)
class Problem:
    """One problem of one file of one sample."""

    sample: str
    subject: str
    path: str
    message: str

    def line(self) -> str:
        who = (f"subject {self.subject}" if self.sample == self.subject
               else f"sample {self.sample} (subject {self.subject})")
        return f"{who}: {self.path}: {self.message}"


@dataclasses.dataclass
class CheckReport:
    """What :func:`check_manifest` found."""

    samples: int
    files: int
    cached: int  # files not read again: unchanged since they passed
    seconds: float
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def bad_samples(self) -> list[str]:
        return sorted({p.sample for p in self.problems})

    @property
    def bad_subjects(self) -> list[str]:
        return sorted({p.subject for p in self.problems})

    def text(self, where: str = "dataset", limit: int = 50) -> str:
        """The problems, one line each (at most ``limit``), under a summary line."""
        lines = [p.line() for p in self.problems]
        more = f"\n  ... and {len(lines) - limit} more" if len(lines) > limit else ""
        return (f"{where}: {len(lines)} problem(s) in {len(self.bad_samples)} of "
                f"{self.samples} samples:\n  " + "\n  ".join(lines[:limit]) + more)

    def keep(self, manifest: pd.DataFrame) -> pd.DataFrame:
        """The rows of ``manifest`` whose samples had no problem."""
        bad = manifest["sample"].astype(str).isin(self.bad_samples)
        return manifest[~bad].reset_index(drop=True)


# ------------------------------------------------------------- one file
def _message(path: str, exc: BrainTFError) -> str:
    text = str(exc)
    return text[len(path) + 2:] if text.startswith(f"{path}: ") else text


def _canonical_grid(img) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape (x, y, z) and affine after the RAS+ reorientation load_volume applies."""
    shape = tuple(int(n) for n in img.shape[:3])
    affine = np.asarray(img.affine, float)
    try:
        ornt = nib.io_orientation(affine)
        moved = nib.apply_orientation(np.broadcast_to(np.uint8(0), shape), ornt)
        return tuple(moved.shape), affine @ nib.orientations.inv_ornt_aff(ornt, shape)
    except (ValueError, AttributeError):  # no orientation: load_volume keeps it as stored
        return shape, affine


def _volume_data(img, path: Path) -> np.ndarray:
    """Every voxel of ``img``; a gzip data file is decompressed whole (CRC checked)."""
    proxy = img.dataobj
    with _read_errors(path, "image data"):
        if isinstance(proxy, nib.arrayproxy.ArrayProxy) and str(proxy.file_like).endswith(".gz"):
            raw = gzip.decompress(Path(proxy.file_like).read_bytes())
            proxy = nib.arrayproxy.ArrayProxy(
                io.BytesIO(raw), (proxy.shape, proxy.dtype, proxy.offset, proxy.slope,
                                  proxy.inter), order=proxy.order)
        return np.asanyarray(proxy)


def _nonfinite(array: np.ndarray) -> int:
    if array.dtype.kind not in "fc" or np.isfinite(array).all():
        return 0
    return int(np.count_nonzero(~np.isfinite(array)))


def _label_problem(array: np.ndarray, allowed: Sequence[int] | None) -> str | None:
    """What :func:`brain_tf.io.load_label` would reject in a label array."""
    if array.dtype.kind == "f":
        if _nonfinite(array):
            return "label map has NaN/Inf voxels; labels must be integers"
        rounded = np.rint(array)
        if np.abs(array - rounded).max(initial=0) > 1e-3:
            return "label map has non-integer values; is it an image?"
        array = rounded.astype(np.int64)
    if allowed is None:
        return None
    values = sorted(set(int(v) for v in allowed))
    if not array.size:
        return None
    if values == list(range(values[0], values[-1] + 1)) and (
            values[0] <= array.min() and array.max() <= values[-1]):
        return None  # a range of values (0..K-1) holds every voxel: no need to list them
    if array.dtype.kind in "ui" and array.dtype.itemsize <= 2:
        # a lookup table over every value of the type: much faster than np.unique
        bits = 8 * array.dtype.itemsize
        table = np.zeros(1 << bits, bool)
        table[[v % (1 << bits) for v in values if -(1 << bits) < v < (1 << bits)]] = True
        inside = table[array.view(f"u{array.dtype.itemsize}")]
        found = np.unique(array[~inside]) if not inside.all() else np.array([], int)
    else:
        found = np.unique(array)
    extra = np.setdiff1d(found, np.asarray(values))
    if extra.size:
        return (f"label values {extra.astype(int).tolist()} are outside the declared label set "
                f"{values}; fix the labels or the spec's [labels] table")
    return None


def _check_volume(path: Path, role: str, allowed, nonfinite: str) -> tuple[dict, list[str]]:
    _check_exists(path)
    img = _read_image(path)
    ndim = len(img.shape)
    if role == "image" and ndim == 5 and img.shape[3] == 1:
        ndim = 4
    wanted = (3, 4) if role == "image" else (3,)
    if ndim not in wanted:
        return {}, [f"has {ndim} dimensions {tuple(img.shape)}, expected "
                    f"{' or '.join(map(str, wanted))}"]
    shape, affine = _canonical_grid(img)
    facts = {"shape": list(shape), "affine": affine.ravel().tolist(),
             "channels": int(img.shape[-1]) if ndim == 4 else 1}
    array = _volume_data(img, path)
    if role == "label":
        problem = _label_problem(array, allowed)
        return facts, [problem] if problem else []
    count = _nonfinite(array)
    if count and (nonfinite == "raise" or role == "mask"):
        return facts, [f"{count} NaN/Inf voxels; fix the file"
                       + (" or load with nonfinite='zero'" if role == "image" else "")]
    return facts, []


def _check_slice(path: Path, role: str, allowed, nonfinite: str) -> tuple[dict, list[str]]:
    array = load_image(path)
    channels = 1 if array.ndim == 2 else min(int(array.shape[2]), 3)
    facts = {"shape": list(array.shape[:2]), "affine": None, "channels": channels}
    if role == "label":
        problem = _label_problem(array if array.ndim == 2 else array[..., 0], allowed)
        return facts, [problem] if problem else []
    count = _nonfinite(array)
    if count and nonfinite == "raise":
        return facts, [f"{count} NaN/Inf pixels; fix the file"]
    return facts, []


# ------------------------------------------------------------------ cache
def _key(path: Path, role: str, allowed, nonfinite: str) -> str | None:
    """What a passed check depends on: the file's identity and the rules applied."""
    try:
        stat = path.stat()
    except OSError:
        return None
    rule = (sorted(int(v) for v in allowed) if allowed is not None else None) \
        if role == "label" else nonfinite
    return json.dumps([str(path.resolve()), stat.st_size, stat.st_mtime_ns, role, rule])


def _load_cache(path: Path | None) -> dict[str, dict]:
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # a damaged cache only costs a full check
    return data.get("files", {}) if data.get("format") == CACHE_FORMAT else {}


def _save_cache(path: Path, stored: dict[str, dict], passed: dict[str, dict]) -> None:
    fresh = {json.loads(k)[0] for k in passed}
    kept = {k: v for k, v in stored.items() if json.loads(k)[0] not in fresh}
    kept.update(passed)
    write_text(path, json.dumps({"format": CACHE_FORMAT, "files": kept}))


# ------------------------------------------------------------------- rows
def _aligned(what: str, facts: dict, first: dict, first_path: str) -> str | None:
    if facts["shape"][:3] != first["shape"][:3]:
        return (f"{what} shape {tuple(facts['shape'])} differs from image {first_path} "
                f"{tuple(first['shape'])}; resample them onto one grid")
    if facts["affine"] is not None and not np.allclose(facts["affine"], first["affine"],
                                                       atol=ATOL):
        return (f"{what} affine differs from image {first_path}; they are not on the same "
                "voxel grid (register or resample them first)")
    return None


def _row_files(row, image_columns: list[str]) -> list[tuple[str, str]]:
    files = [(str(row[c]), "image") for c in image_columns if _present(row[c])]
    files += [(str(row[r]), r) for r in ("label", "mask") if r in row and _present(row[r])]
    return files


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and pd.isna(value))


Results = dict[tuple[str, str], tuple[dict | None, list[str]]]


def _read_files(wanted, check_file, label_values, nonfinite: str, cache_path: Path | None,
                threads: int | None) -> tuple[Results, int]:
    """``{(path, role): (facts or None, problems)}`` for every file, and how many were
    known to have passed already (not read)."""
    stored = _load_cache(cache_path)
    results: Results = {}
    todo, passed, cached = [], {}, 0
    for path, role in wanted:
        key = _key(Path(path), role, label_values, nonfinite)
        with _MEMORY_LOCK:
            known = _MEMORY.get(key) if key else None
        known = known or (stored.get(key) if key else None)
        if known is not None:
            results[(path, role)] = (known, [])
            cached += 1
        else:
            todo.append((path, role, key))

    def run(job):
        path, role, key = job
        try:
            facts, problems = check_file(Path(path), role, label_values, nonfinite)
        except BrainTFError as exc:
            return job, None, [_message(path, exc)]
        return job, facts, problems

    workers = max(1, min(threads or min(8, os.cpu_count() or 1), len(todo) or 1))
    with ThreadPoolExecutor(workers) as pool:
        for (path, role, key), facts, problems in pool.map(run, todo):
            results[(path, role)] = (facts, problems)
            if not problems and facts and key:
                passed[key] = facts
    with _MEMORY_LOCK:
        _MEMORY.update(passed)
    if cache_path is not None and passed:
        _save_cache(cache_path, stored, passed)
    return results, cached


def _row_problems(rows: pd.DataFrame, image_columns: list[str], results: Results
                  ) -> list[Problem]:
    """The files' own problems, then each row's grids, then channel counts across rows."""
    problems: list[Problem] = []
    channels: dict[str, int] = {}
    for _, row in rows.iterrows():
        sample, subject = str(row["sample"]), str(row.get("subject", row["sample"]))
        files = _row_files(row, image_columns)
        for path, role in files:
            problems += [Problem(sample, subject, path, m) for m in results[(path, role)][1]]
        images = [(p, results[(p, r)][0]) for p, r in files if r == "image"]
        if not images or any(f is None for _, f in images):
            continue
        first_path, first = images[0]
        for path, role in files[1:]:
            facts = results[(path, role)][0]
            problem = None if facts is None else _aligned(
                "modality" if role == "image" else role, facts, first, first_path)
            if problem:
                problems.append(Problem(sample, subject, path, problem))
        channels[sample] = sum(f["channels"] for _, f in images)
    if channels:
        usual = Counter(channels.values()).most_common(1)[0][0]
        for _, row in rows.iterrows():
            sample = str(row["sample"])
            if channels.get(sample, usual) != usual:
                problems.append(Problem(sample, str(row.get("subject", sample)),
                                        str(row[image_columns[0]]),
                                        f"{channels[sample]} image channels where the other "
                                        f"samples have {usual}; give every sample the same "
                                        "modalities"))
    return problems


def check_manifest(
    manifest: pd.DataFrame,
    spec=None,
    *,
    label_values: Sequence[int] | None = None,
    kind: str | None = None,
    on_error: str = "raise",
    nonfinite: str = "raise",
    cache: str | os.PathLike | None = None,
    threads: int | None = None,
) -> CheckReport:
    """Check every file of every row of ``manifest``; see the module docstring.

    Args:
        manifest: a data spec manifest (``sample``, ``subject``, ``image_<name>``,
            optionally ``label`` and ``mask``).
        spec: its :class:`DataSpec`: gives ``label_values`` and ``kind`` and names
            the dataset in the error.
        label_values: the allowed label values (default: the spec's; None: any).
        kind: ``"volume"`` (NIfTI) or ``"slice"`` (2D images); default the spec's.
        on_error: ``"raise"`` a :class:`DataError` listing every problem, or
            ``"skip"``: return the report (drop the bad rows with ``report.keep``).
            With nothing left to keep, it raises in both cases.
        nonfinite: ``"zero"`` accepts NaN/Inf image voxels (the loaders zero them).
        cache: a JSON file remembering the files that passed (see
            :func:`default_cache_path`); files are always remembered in memory.
        threads: files read at once (default: the CPU count, at most 8).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    start = time.perf_counter()
    if spec is not None:
        label_values = (spec.label_values or None) if label_values is None else label_values
        kind = kind or spec.kind
    where = str(spec.path) if spec is not None and spec.path else "manifest"
    check_file = _check_slice if (kind or "volume") == "slice" else _check_volume
    image_columns = [c for c in manifest.columns if str(c).startswith("image_")]
    rows = manifest.reset_index(drop=True)
    wanted = sorted({f for _, row in rows.iterrows() for f in _row_files(row, image_columns)})
    results, cached = _read_files(wanted, check_file, label_values, nonfinite,
                                  Path(cache) if cache is not None else None, threads)
    problems = _row_problems(rows, image_columns, results)
    report = CheckReport(samples=len(rows), files=len(wanted), cached=cached,
                         seconds=time.perf_counter() - start, problems=problems)
    if problems and (on_error == "raise" or len(report.bad_samples) == len(rows)):
        raise DataError(report.text(where))
    return report
