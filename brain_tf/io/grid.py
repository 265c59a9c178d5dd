"""A file's own voxel grid, kept when a volume is reoriented at load.

:func:`brain_tf.io.load_volume` reorients every file to RAS+ voxel order
(``nibabel.as_closest_canonical``). A :class:`Grid` remembers the file's shape,
affine and header and the orientation transform that was applied, so that an
array on the loaded grid can be put back in the file's own voxel order
(:meth:`Grid.to_file`) and an output can be written on exactly the file's grid.
"""

from __future__ import annotations

import dataclasses

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, ornt_transform

#: The orientation transform that changes nothing (nibabel's ``ornt`` form).
IDENTITY_ORNT = np.array([[0, 1], [1, 1], [2, 1]])


@dataclasses.dataclass(frozen=True, eq=False)
class Grid:
    """The voxel grid of a file as stored: spatial shape, affine, header.

    ``to_loaded`` is the nibabel orientation transform (``ornt``) that turned
    the file's voxel axes into the loaded array's: file axis ``i`` became
    loaded axis ``to_loaded[i, 0]``, reversed when ``to_loaded[i, 1]`` is -1.
    """

    shape: tuple[int, int, int]
    affine: np.ndarray
    to_loaded: np.ndarray = dataclasses.field(default_factory=IDENTITY_ORNT.copy)
    header: nib.Nifti1Header | None = None
    path: str | None = None

    def to_file(self, array: np.ndarray) -> np.ndarray:
        """``array`` (x, y, z[, ...]) on the loaded grid, in the file's own voxel order."""
        return apply_orientation(np.asarray(array), ornt_transform(IDENTITY_ORNT, self.to_loaded))

    def from_file(self, array: np.ndarray) -> np.ndarray:
        """``array`` in the file's own voxel order, on the loaded (RAS+) grid."""
        return apply_orientation(np.asarray(array), self.to_loaded)

    def matches(self, other: "Grid", atol: float = 1e-3) -> bool:
        """Same spatial shape and (within ``atol`` mm) the same affine."""
        return (tuple(self.shape) == tuple(other.shape)
                and np.allclose(self.affine, other.affine, atol=atol))

    def describe(self) -> str:
        """Shape and affine rows on one line, for error messages."""
        rows = np.round(np.asarray(self.affine, dtype=float)[:3], 3).tolist()
        return f"shape {tuple(int(s) for s in self.shape)} affine {rows}"
