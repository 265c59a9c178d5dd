"""Whole-scan segmentation as a task configures it: sliding-window probabilities, then
class indices (softmax argmax, or thresholded sigmoid heads merged into classes), then
optionally each class's largest connected component. With ``[inference] refine = "em"`` a
softmax's probabilities on the input's grid are refined on the scan's own intensities
(:func:`brain_tf.inference.refine.refine`) before the classes are taken."""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from brain_tf.errors import ConfigError
from brain_tf.inference.postprocess import largest_components, to_label_map
from brain_tf.inference.refine import RefineOptions, Refinement, refine
from brain_tf.inference.sliding_window import sliding_window_predict


@dataclasses.dataclass
class ScanSegmentation:
    """A scan's segmentation on its file's grid: class indices, each class's probability
    map (``probability(k)``, when asked for) and the refinement's QC (when refined)."""

    indices: np.ndarray
    probability: Callable[[int], np.ndarray] | None = None
    qc: dict | None = None


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
    foreground_threshold: float | None = None
    refine: RefineOptions | None = None

    @classmethod
    def from_config(cls, config, num_classes: int) -> "Segmenter":
        inf = config.inference
        activation = config.model.get("output_activation", "softmax")
        options = RefineOptions.from_config(inf)
        if options is not None and activation != "softmax":
            raise ConfigError(f"[inference] refine = {inf.refine!r} needs a softmax model; this "
                              f"one's output is {activation}: set refine = \"none\"")
        return cls(num_classes=num_classes, activation=activation, refine=options,
                   patch_size=tuple(inf.patch_size) if inf.patch_size else None,
                   overlap=inf.overlap, tta=inf.tta, batch_size=inf.batch_size,
                   threshold=inf.threshold, merge=inf.merge,
                   largest_component=inf.largest_component,
                   foreground_threshold=inf.foreground_threshold)

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
        if self.foreground_threshold is not None:  # the most probable foreground class
            labels = np.argmax(probabilities[..., 1:], axis=-1).astype(np.uint8) + 1
            return np.where(1 - probabilities[..., 0] >= self.foreground_threshold, labels,
                            np.uint8(0))
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

    def scan_on_input_grid(self, model, image: np.ndarray, affine, grid, scan: np.ndarray,
                           inside: np.ndarray | None = None, probseg: bool = False,
                           mask=None) -> ScanSegmentation:
        """The segmentation of a preprocessed image (on the grid of ``affine``) on the input
        file's grid, refined on ``scan`` (the input's intensities on that grid, x, y, z[, C])
        inside ``inside`` (the brain mask on that grid; default: the network's foreground)
        when the config asks for it; ``probseg`` keeps the probability maps. A brain ``mask``
        on the preprocessed grid makes the probabilities background outside it."""
        from brain_tf.io.nifti import spacing_from_affine
        from brain_tf.preprocess.inverse import probabilities_on_grid

        if self.refine is None and not probseg:
            return ScanSegmentation(self.on_input_grid(model, image, affine, grid, mask))
        if self.refine is not None and inside is not None and np.any(inside):
            return self._refined_in_box(model, image, affine, grid, scan, inside, mask)
        probabilities = probabilities_on_grid(
            self.probabilities(model, image, mask), affine, grid,
            background_channel=None if self.activation == "sigmoid" else 0)
        if self.refine is None:
            if inside is not None:
                probabilities *= inside[..., None]
                if self.activation == "softmax":
                    probabilities[..., 0][~inside] = 1.0
            first = 1 if self.activation == "sigmoid" else 0  # sigmoid: no background output
            return ScanSegmentation(self.clean(self.voxel_labels(probabilities)),
                                    lambda k: probabilities[..., k - first])
        if inside is None:
            inside = self.voxel_labels(probabilities) > 0
        result = refine(scan, probabilities, inside, spacing_from_affine(grid.affine),
                        self.refine)
        del probabilities
        return ScanSegmentation(self.clean(result.labels()), result.probability, result.qc)

    def _refined_in_box(self, model, image, affine, grid, scan, inside, mask):
        """:meth:`scan_on_input_grid` refined inside a brain mask: the probabilities are
        resampled on the mask's bounding box only (the refinement reads nothing else)."""
        from brain_tf.io.nifti import spacing_from_affine
        from brain_tf.preprocess.inverse import probabilities_on_grid
        from brain_tf.preprocess.resample import bounding_box

        inside = np.asarray(inside) > 0
        lo, last = bounding_box(inside)
        hi = last + 1
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        shift = np.eye(4)
        shift[:3, 3] = lo
        sub = dataclasses.replace(grid, shape=tuple(int(n) for n in hi - lo),
                                  affine=np.asarray(grid.affine, dtype=float) @ shift)
        probabilities = probabilities_on_grid(self.probabilities(model, image, mask), affine,
                                              sub, background_channel=0)
        result = refine(np.asarray(scan)[box], probabilities, inside[box],
                        spacing_from_affine(grid.affine), self.refine)
        # the mask's voxels lie in its box, in the same C order: the posteriors carry over
        result = Refinement(inside, result.posteriors, result.qc)
        return ScanSegmentation(self.clean(result.labels()), result.probability, result.qc)
