"""NIfTI reading and writing with the affine kept and clear errors.

Volumes are reoriented to RAS+ at load (``nibabel.as_closest_canonical``) so
that array axes mean the same thing for every file: x towards the right, y
anterior, z superior. Arrays are channels-last: (x, y, z) or (x, y, z, c).
Each loaded volume keeps the file's own grid (:class:`brain_tf.io.grid.Grid`)
so that outputs can be written back on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import os
import warnings
import zlib
from pathlib import Path
from typing import Iterable, Sequence

import nibabel as nib
import numpy as np

from brain_tf.errors import DataError
from brain_tf.io.atomic import atomic_path
from brain_tf.io.grid import IDENTITY_ORNT, Grid

NIFTI_SUFFIXES = (".nii", ".nii.gz", ".img", ".hdr", ".img.gz")


@dataclasses.dataclass
class Volume:
    """A voxel array with its voxel-to-world affine (RAS+, mm).

    ``source`` is the grid of the file it was loaded from (set by
    :func:`load_volume`); it stays the same when the array is replaced.
    """

    array: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header | None = None
    path: str | None = None
    source: Grid | None = None

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the three array axes (from the affine)."""
        return spacing_from_affine(self.affine)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def file_grid(self) -> Grid:
        """The grid of the file this volume came from; for a volume made in memory,
        its own grid."""
        if self.source is not None:
            return self.source
        return Grid(self.shape[:3], np.asarray(self.affine, dtype=float), header=self.header,
                    path=self.path)

    def with_array(self, array: np.ndarray, affine: np.ndarray | None = None) -> "Volume":
        """A copy holding ``array`` (and optionally a new affine)."""
        return dataclasses.replace(
            self, array=array, affine=self.affine if affine is None else np.asarray(affine, float)
        )


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along each array axis: the column norms of the affine."""
    a = np.asarray(affine, dtype=float)[:3, :3]
    return tuple(float(s) for s in np.sqrt((a**2).sum(axis=0)))


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: file not found; check the path (or the data spec's root)")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a NIfTI file (.nii or .nii.gz)")


#: nibabel's errors for files it recognises but cannot parse (a bad header or layout)
_HEADER_ERRORS = (nib.spatialimages.HeaderDataError, nib.spatialimages.ImageDataError,
                  nib.parrec.PARRECError, nib.minc1.MincError)
_DATA_ERRORS = (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError)
#: image types nibabel reads that hold no voxel grid, with what they are
_NOT_VOLUMES = {"Cifti2Image": "a CIFTI-2 file (data on surface vertices and grayordinates)",
                "GiftiImage": "a GIFTI surface file"}


def _missing_data_file(path: Path, data_file: Path) -> DataError:
    return DataError(f"{path}: the data file {data_file.name} is missing (looked for "
                     f"{data_file}); copy it next to the header")


@contextlib.contextmanager
def _read_errors(path: Path, what: str):
    """Turn the exceptions of reading ``path`` into :class:`DataError`."""
    try:
        yield
    except FileNotFoundError as exc:  # the path exists: a companion file is missing
        raise _missing_data_file(path, Path(exc.filename or "")) from None
    except _HEADER_ERRORS as exc:
        raise DataError(
            f"{path}: invalid header ({type(exc).__name__}: {exc}); re-export the file "
            "(e.g. as NIfTI)"
        ) from None
    except _DATA_ERRORS as exc:
        raise DataError(
            f"{path}: corrupt or truncated {what} ({type(exc).__name__}: {exc}); "
            "re-copy or re-export it"
        ) from None


def _read_image(path: Path) -> nib.spatialimages.SpatialImage:
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes); re-copy or re-export it")
    try:
        with _read_errors(path, "file"):
            img = nib.load(str(path))
    except nib.filebasedimages.ImageFileError as exc:
        hint = ("is a DICOM file: convert the series to NIfTI first (e.g. with dcm2niix)"
                if path.suffix.lower() == ".dcm" else
                f"not a NIfTI/Analyze image nibabel can read ({exc}); check the file type "
                "and extension")
        raise DataError(f"{path}: {hint}") from None
    kind = _NOT_VOLUMES.get(type(img).__name__)
    if kind is not None or not isinstance(img, nib.spatialimages.SpatialImage):
        kind = kind or f"a {type(img).__name__} file"
        raise DataError(f"{path}: is {kind}, not a volume; give a NIfTI volume (x, y, z[, c])")
    holder = img.file_map.get("image")  # a header-only file (.hdr) names its data file
    data_file = Path(holder.filename) if holder is not None and holder.filename else None
    if data_file is not None and data_file != path and not data_file.exists():
        raise _missing_data_file(path, data_file)
    return img


def _read_data(img, path: Path, dtype) -> np.ndarray:
    with _read_errors(path, "image data"):
        if dtype is None:
            return np.asanyarray(img.dataobj)
        return np.asarray(img.get_fdata(dtype=np.float64) if np.dtype(dtype).kind == "f"
                          else np.asanyarray(img.dataobj)).astype(dtype, copy=False)


def fix_nonfinite(array: np.ndarray, source: str, nonfinite: str = "raise") -> np.ndarray:
    """Reject (``"raise"``) or zero (``"zero"``, with a warning) NaN/Inf voxels."""
    if array.dtype.kind not in "fc":
        return array
    bad = ~np.isfinite(array)
    count = int(bad.sum())
    if count == 0:
        return array
    if nonfinite == "raise":
        raise DataError(
            f"{source}: {count} NaN/Inf voxels; fix the file or load with nonfinite='zero'"
        )
    if nonfinite != "zero":
        raise ValueError(f"nonfinite must be 'raise' or 'zero', not {nonfinite!r}")
    warnings.warn(f"{source}: set {count} NaN/Inf voxels to 0", stacklevel=3)
    array = array.copy()
    array[bad] = 0
    return array


def load_volume(
    path: str | os.PathLike,
    canonical: bool = True,
    dtype=np.float32,
    ndim: int | Sequence[int] | None = None,
    nonfinite: str = "raise",
) -> Volume:
    """Load a NIfTI (or Analyze) file as a :class:`Volume`.

    Args:
        path: ``.nii``, ``.nii.gz`` (3D, or 4D with modalities on the last axis).
        canonical: reorient to RAS+ (closest canonical orientation).
        dtype: array dtype; ``None`` keeps the on-disk type (no scaling applied
            for integer types without a scale factor).
        ndim: accepted number(s) of dimensions, e.g. ``3`` or ``(3, 4)``.
        nonfinite: ``"raise"`` on NaN/Inf voxels, or ``"zero"`` them with a warning.
    """
    path = Path(path)
    _check_exists(path)
    img = _read_image(path)
    stored, to_loaded = img, IDENTITY_ORNT
    if canonical:
        with _read_errors(path, "image data"):  # reorienting reads the data
            try:
                img = nib.as_closest_canonical(img)
                to_loaded = nib.orientations.io_orientation(stored.affine).astype(int)
            except (ValueError, AttributeError):
                pass  # images whose affine has no orientation (e.g. all-zero) stay as stored
    array = _read_data(img, path, dtype)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if array.ndim == 5 and array.shape[3] == 1 and 4 in allowed:
            array = array[:, :, :, 0, :]  # NIfTI stores vectors on the 5th axis
        if array.ndim not in allowed:
            raise DataError(
                f"{path}: has {array.ndim} dimensions {array.shape}, expected "
                f"{' or '.join(map(str, allowed))}"
            )
    array = fix_nonfinite(array, str(path), nonfinite)
    header = img.header.copy() if isinstance(img.header, nib.Nifti1Header) else None
    source = Grid(tuple(int(s) for s in stored.shape[:3]),
                  np.asarray(stored.affine, dtype=float), to_loaded,
                  stored.header.copy() if isinstance(stored.header, nib.Nifti1Header) else None,
                  str(path))
    return Volume(array=array, affine=np.asarray(img.affine, dtype=float), header=header,
                  path=str(path), source=source)


def check_aligned(volumes: Iterable[Volume], what: str = "images", atol: float = 1e-3) -> None:
    """Raise :class:`DataError` unless all volumes share spatial shape and affine."""
    volumes = list(volumes)
    first = volumes[0]
    for other in volumes[1:]:
        if other.shape[:3] != first.shape[:3]:
            raise DataError(
                f"{other.path}: {what} shape {other.shape[:3]} differs from "
                f"{first.path} {first.shape[:3]}; resample them onto one grid"
            )
        if not np.allclose(other.affine, first.affine, atol=atol):
            raise DataError(
                f"{other.path}: {what} affine differs from {first.path}; they are not "
                "on the same voxel grid (register or resample them first)"
            )


def load_modalities(paths: Sequence[str | os.PathLike], **kwargs) -> Volume:
    """Load one 4D file or several 3D files and stack them as channels (last axis).

    Separate files must share shape and affine.
    """
    kwargs.setdefault("ndim", (3, 4))
    volumes = [load_volume(p, **kwargs) for p in paths]
    check_aligned(volumes, "modality")
    arrays = [v.array if v.array.ndim == 4 else v.array[..., None] for v in volumes]
    array = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=-1)
    return Volume(array=array, affine=volumes[0].affine, header=volumes[0].header,
                  path=str(paths[0]), source=volumes[0].source)


def load_label(
    path: str | os.PathLike,
    values: Iterable[int] | None = None,
    canonical: bool = True,
    like: Volume | None = None,
) -> Volume:
    """Load an integer label map; check its values and its grid against ``like``."""
    vol = load_volume(path, canonical=canonical, dtype=None, ndim=3)
    array = vol.array
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            raise DataError(f"{path}: label map has NaN/Inf voxels; labels must be integers")
        rounded = np.rint(array)
        if np.abs(array - rounded).max(initial=0) > 1e-3:
            raise DataError(f"{path}: label map has non-integer values; is it an image?")
        array = rounded
    array = array.astype(np.int16 if array.max(initial=0) > 255 or array.min(initial=0) < 0
                         else np.uint8)
    if values is not None:
        # a value may also be a group of values (one class of a grouped label map)
        allowed = np.unique(np.concatenate([np.atleast_1d(v) for v in values]).astype(int))
        found = np.unique(array)
        extra = np.setdiff1d(found, allowed)
        if extra.size:
            raise DataError(
                f"{path}: label values {extra.tolist()} are outside the declared label set "
                f"{allowed.tolist()}; fix the labels or the spec's [labels] table"
            )
    vol = vol.with_array(array)
    if like is not None:
        check_aligned([like, vol], "label")
    return vol


def _integer_dtype(array: np.ndarray):
    lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
    for dt in (np.uint8, np.int16, np.int32):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return dt
    return np.int64


def _xform_codes(header: nib.Nifti1Header | None) -> tuple[int, int]:
    """(qform, sform) codes for an output: the header's where set, else 1 (scanner)."""
    if header is None:
        return 1, 1
    return int(header["qform_code"]) or 1, int(header["sform_code"]) or 1


def save_volume(
    volume_or_array: Volume | np.ndarray,
    path: str | os.PathLike,
    affine: np.ndarray | None = None,
    dtype=None,
    header: nib.Nifti1Header | None = None,
) -> Path:
    """Write a NIfTI file atomically (temporary name, then rename).

    ``affine``/``header`` default to those of a :class:`Volume` argument; to
    write on an input file's own grid pass ``affine=grid.affine,
    header=grid.header`` (a :class:`Grid`). The qform and sform codes are the
    header's where it sets them (e.g. 4 for MNI space), else 1 (scanner).
    Integer and boolean arrays (label maps) are written with the smallest
    integer type that holds them; ``dtype`` forces a type.
    """
    if isinstance(volume_or_array, Volume):
        array = volume_or_array.array
        affine = volume_or_array.affine if affine is None else affine
        header = volume_or_array.header if header is None else header
    else:
        array = np.asarray(volume_or_array)
    if affine is None:
        raise DataError(f"{path}: no affine given; pass affine= (the input image's affine)")
    if dtype is None:
        dtype = _integer_dtype(array) if array.dtype.kind in "biu" else np.float32
    dtype = np.dtype(dtype)
    if dtype.kind in "iu" and array.dtype.kind == "f":
        array = np.rint(array)
    array = np.asarray(array).astype(dtype, copy=False)
    hdr = header.copy() if header is not None else None
    img = nib.Nifti1Image(array, np.asarray(affine, dtype=float), header=hdr)
    img.set_data_dtype(dtype)
    img.header.set_xyzt_units("mm", "sec")
    qform_code, sform_code = _xform_codes(header)
    img.set_qform(np.asarray(affine, dtype=float), code=qform_code)
    img.set_sform(np.asarray(affine, dtype=float), code=sform_code)
    if dtype.kind in "iu":
        img.header["scl_slope"] = 1.0
        img.header["scl_inter"] = 0.0
    path = Path(path)
    if not any(str(path).lower().endswith(s) for s in (".nii", ".nii.gz")):
        raise DataError(f"{path}: NIfTI output must end in .nii or .nii.gz")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


def read_shape(path: str | os.PathLike) -> tuple[int, ...]:
    """The array shape of a NIfTI/Analyze file from its header alone (no voxel data read)."""
    path = Path(path)
    _check_exists(path)
    return tuple(int(n) for n in _read_image(path).shape)
