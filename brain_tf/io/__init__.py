"""Reading and writing NIfTI volumes and 2D slices (atomic writes, affine kept)."""

from brain_tf.io.atomic import atomic_path, write_text
from brain_tf.io.grid import Grid
from brain_tf.io.image2d import load_image, save_image
from brain_tf.io.nifti import (
    Volume,
    check_aligned,
    load_label,
    load_modalities,
    load_volume,
    read_shape,
    save_volume,
    spacing_from_affine,
)

__all__ = [
    "Grid", "Volume", "atomic_path", "check_aligned", "load_image", "load_label",
    "load_modalities", "load_volume", "read_shape", "save_image", "save_volume",
    "spacing_from_affine", "write_text",
]
