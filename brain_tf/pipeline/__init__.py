"""tf.data input pipelines: patch samplers, 3D/2D augmentation, datasets for model.fit.

The names below load their modules on first use, so reading an augmentation config
(:mod:`brain_tf.pipeline.presets`) does not import TensorFlow.
"""

import importlib

_NAMES = {
    "Augment2D": "augment2d", "Augment3D": "augment3d", "one_hot_labels": "datasets",
    "class_balanced_dataset": "balanced", "lookup_table": "datasets",
    "patch_dataset": "datasets", "slice_dataset": "datasets", "volume_dataset": "datasets",
    "SynthGenerator": "generate",
    "DEFAULTS_2D": "presets", "DEFAULTS_3D": "presets", "PRESETS": "presets",
    "augment_config": "presets", "PatchSampler": "sampling", "SamplerStats": "sampling",
    "cut_patch": "sampling", "Source": "sources", "pipeline_errors": "errors",
    "release_pipelines": "errors",
}

__all__ = sorted(_NAMES)


def __getattr__(name):
    if name in _NAMES:
        return getattr(importlib.import_module(f"brain_tf.pipeline.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'brain_tf.pipeline' has no attribute {name!r}")
