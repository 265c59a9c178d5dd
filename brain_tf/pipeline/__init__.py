"""tf.data input pipelines: patch samplers, 3D/2D augmentation, datasets for model.fit."""

from brain_tf.pipeline.augment2d import Augment2D
from brain_tf.pipeline.augment3d import Augment3D
from brain_tf.pipeline.datasets import (
    imagenet_normalise,
    one_hot_labels,
    patch_dataset,
    slice_dataset,
    volume_dataset,
)
from brain_tf.pipeline.errors import pipeline_errors, release_pipelines
from brain_tf.pipeline.presets import DEFAULTS_2D, DEFAULTS_3D, PRESETS, augment_config
from brain_tf.pipeline.sampling import PatchSampler, SamplerStats, cut_patch
from brain_tf.pipeline.sources import Source

__all__ = [
    "Augment2D", "Augment3D", "DEFAULTS_2D", "DEFAULTS_3D", "PRESETS", "PatchSampler",
    "SamplerStats", "Source", "augment_config", "cut_patch", "imagenet_normalise",
    "one_hot_labels", "patch_dataset", "pipeline_errors", "release_pipelines", "slice_dataset",
    "volume_dataset",
]
