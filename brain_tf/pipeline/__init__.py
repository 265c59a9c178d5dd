"""tf.data input pipelines: patch samplers, 3D/2D augmentation, datasets for model.fit.

The names below load their modules on first use, so reading an augmentation config
(:mod:`brain_tf.augment_presets`, also reachable from here) does not import TensorFlow.
"""

import importlib

_NAMES = {
    "Augment2D": "augment2d", "Augment3D": "augment3d", "one_hot_labels": "datasets",
    "class_balanced_dataset": "balanced", "lookup_table": "datasets",
    "patch_dataset": "datasets", "slice_dataset": "datasets", "volume_dataset": "datasets",
    "SynthGenerator": "generate",
    "DEFAULTS_2D": "brain_tf.augment_presets", "DEFAULTS_3D": "brain_tf.augment_presets",
    "PRESETS": "brain_tf.augment_presets", "augment_config": "brain_tf.augment_presets",
    "PatchSampler": "sampling", "SamplerStats": "sampling",
    "cut_patch": "sampling", "Source": "sources", "pipeline_errors": "errors",
    "release_pipelines": "errors",
}

__all__ = sorted(_NAMES)


def __getattr__(name):
    if name in _NAMES:
        module = _NAMES[name]
        module = module if "." in module else f"brain_tf.pipeline.{module}"
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'brain_tf.pipeline' has no attribute {name!r}")
