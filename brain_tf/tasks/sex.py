"""sex-classification: system B (IXI), a 3D CNN on the whole head or the brain alone.

Presets:

- ``default``: system B's full-head model. T1 resampled to 2 mm / 128^3 about the image
  centre (cubic, fill 0), z-score over voxels > 0, augmentation ``ixi_age`` (rotation
  5 deg, translation 7 mm), cnn3d 16/32/64/128 with instance norm, dropout 0.3 and a
  2-way softmax, cross-entropy, AdamW 1e-4 with weight decay 1e-4, batch 1, 40 epochs
  with early stopping on the validation loss. Reported: near-perfect accuracy.
- ``brain-extracted``: the same on brain-masked images (the spec's masks, e.g. from
  HD-BET) with augmentation ``ixi_sex`` (10 deg, 10 mm). Reported: about 80 % (the face
  and skull carry much of the signal).
- ``small`` / ``small-brain-extracted``: the two on a 6 mm / 32x40x40 grid with cnn3d
  8/16/32/64, Adam 1e-3, batch 4 and 30 epochs (patience 8): a few minutes on 2 CPU
  cores on the synthetic IXI twin.

Splits are stratified by sex; the baseline is the training split's majority class.
``model.mc_dropout = true`` builds the CNN with MC dropout so that ``predict
--uncertainty`` reports the spread of the class probabilities over ``inference.mc_passes``.
"""

from brain_tf.schema import deep_merge
from brain_tf.tasks.base import Task, register

DEFAULT = {
    "data": {"spec": "ixi", "stratify": "sex"},
    "target": {"column": "sex", "kind": "classification", "classes": ["M", "F"]},
    "preprocess": {"spacing": [2.0, 2.0, 2.0], "shape": [128, 128, 128], "order": 3,
                   "normalise": "zscore_nonzero", "mask": "none"},
    "augment": {"preset": "ixi_age"},
    "model": {"name": "cnn3d", "output_activation": "softmax"},
    "loss": "sparse_categorical_crossentropy",
    "metrics": ["accuracy"],
    "optimizer": {"name": "adamw", "learning_rate": 1e-4, "weight_decay": 1e-4},
    "training": {"epochs": 40, "batch_size": 1, "patience": 10},
    "inference": {"batch_size": 2},
}

BRAIN_EXTRACTED = {"preprocess": {"mask": "given", "apply_mask": True},
                   "augment": {"preset": "ixi_sex"}}

SMALL = {
    "preprocess": {"spacing": [6.0, 6.0, 6.0], "shape": [32, 40, 40]},
    "model": {"filters": [8, 16, 32, 64]},
    "optimizer": {"name": "adam", "learning_rate": 1e-3, "weight_decay": 0.0},
    "training": {"epochs": 30, "batch_size": 4, "patience": 8},
    "inference": {"batch_size": 8},
}

TASK = register(Task(
    name="sex-classification",
    description="sex from a whole T1 volume, 3D CNN on the full head or the brain (IXI)",
    family_name="volume",
    presets={"default": DEFAULT, "brain-extracted": BRAIN_EXTRACTED, "small": SMALL,
             "small-brain-extracted": deep_merge(SMALL, BRAIN_EXTRACTED)},
))
