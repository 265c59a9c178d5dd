"""Whole-scan segmentation as a task configures it: sliding-window probabilities, then
class indices (softmax argmax, or thresholded sigmoid heads merged into classes), then
optionally each class's largest connected component."""

from __future__ import annotations

import dataclasses

import numpy as np

from brain_tf.inference.postprocess import largest_components, to_label_map
from brain_tf.inference.sliding_window import sliding_window_predict


@dataclasses.dataclass
class Segmenter:
    """How a run turns a preprocessed image into class indices 0..K-1.

    ``activation`` is the model's output activation; a sigmoid model has one output per
    class except background. The window options are those of
    :func:`sliding_window_predict`.
    """

    num_classes: int
    activation: str = "softmax"
    patch_size: tuple | None = None
    overlap: float = 0.5
    tta: bool = False
    batch_size: int = 4
    threshold: float = 0.5
    merge: str = "argmax"
    largest_component: bool = False

    @classmethod
    def from_config(cls, config, num_classes: int) -> "Segmenter":
        inf = config.inference
        return cls(num_classes=num_classes,
                   activation=config.model.get("output_activation", "softmax"),
                   patch_size=tuple(inf.patch_size) if inf.patch_size else None,
                   overlap=inf.overlap, tta=inf.tta, batch_size=inf.batch_size,
                   threshold=inf.threshold, merge=inf.merge,
                   largest_component=inf.largest_component)

    def probabilities(self, model, image: np.ndarray, mask=None) -> np.ndarray:
        """Sliding-window probabilities of a preprocessed image; with a brain ``mask`` on
        its grid, those of background outside it (1 for the background channel of a
        softmax head, 0 for every sigmoid channel)."""
        probabilities = sliding_window_predict(model, image, self.patch_size,
                                               overlap=self.overlap, tta=self.tta,
                                               batch_size=self.batch_size)
        if mask is None:
            return probabilities
        background = np.zeros(probabilities.shape[-1], probabilities.dtype)
        if self.activation != "sigmoid":
            background[0] = 1
        return np.where(np.asarray(mask, bool)[..., None], probabilities, background)

    def voxel_labels(self, probabilities: np.ndarray) -> np.ndarray:
        """Class indices 0..K-1 of probabilities (..., outputs), voxel by voxel."""
        if self.activation == "sigmoid":
            return to_label_map(probabilities, "sigmoid",
                                label_values=list(range(1, self.num_classes)),
                                threshold=self.threshold, merge=self.merge)
        return to_label_map(probabilities, "softmax", label_values=list(range(self.num_classes)))

    def clean(self, indices: np.ndarray) -> np.ndarray:
        """The connected-component clean-up the config asks for (on a whole label map)."""
        if self.largest_component:
            return largest_components(indices, range(1, self.num_classes))
        return indices

    def __call__(self, model, image: np.ndarray, mask=None) -> np.ndarray:
        """Class indices of a preprocessed image, on its own grid (background outside a
        brain ``mask`` on that grid)."""
        return self.clean(self.voxel_labels(self.probabilities(model, image, mask)))

    def on_input_grid(self, model, image: np.ndarray, affine, grid, mask=None) -> np.ndarray:
        """Class indices of a preprocessed image (on the grid of ``affine``) on the input
        file's own grid (:class:`brain_tf.io.Grid`): probabilities (background outside a
        brain ``mask`` on the preprocessed grid) are resampled there, then the classes
        taken (:func:`brain_tf.preprocess.labels_on_grid`)."""
        from brain_tf.preprocess.inverse import labels_on_grid

        probabilities = self.probabilities(model, image, mask)
        return self.clean(labels_on_grid(
            probabilities, affine, grid, to_labels=self.voxel_labels,
            background_channel=None if self.activation == "sigmoid" else 0))
