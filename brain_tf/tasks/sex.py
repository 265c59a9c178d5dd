"""sex-classification: system B (IXI), a 3D CNN on the whole head or the brain alone.

Presets:

- ``default``: system B's full-head model. T1 resampled to 2 mm / 128^3 about
  the image centre (cubic, fill 0), z-score over voxels > 0, augmentation
  ``ixi_age`` (rotation 5 deg, translation 7 mm), cnn3d 16/32/64/128 with
  instance norm, dropout 0.3 and a 2-way softmax, cross-entropy, AdamW 1e-4
  with weight decay 1e-4 (decoupled; the original's Adam ``weight_decay``
  was an L2 term), batch 1, 40 epochs with early stopping on the validation
  loss. Reported: near-perfect accuracy.
- ``brain-extracted``: the same on brain-masked images (the spec's masks,
  e.g. from HD-BET) with augmentation ``ixi_sex`` (10 deg, 10 mm). Reported:
  about 80 % (the face and skull carry much of the signal).
- ``small`` / ``small-brain-extracted``: the two on a 6 mm / 32x40x40 grid with
  cnn3d 8/16/32/64, Adam 1e-3, batch 4 and 30 epochs (patience 8): a few
  minutes on 2 CPU cores on the synthetic IXI twin.

Splits are stratified by sex. ``model.mc_dropout = true`` builds the CNN with
MC dropout so that ``predict --uncertainty`` reports the spread of the class
probabilities over ``inference.mc_passes`` passes.
"""

from brain_tf.tasks import volume_level
from brain_tf.tasks.base import Task, register

DEFAULT = {
    "data": {"spec": "data_specs/ixi.toml", "seed": 0, "stratify": "sex",
             "fractions": {"train": 0.7, "val": 0.15, "test": 0.15}},
    "target": {"column": "sex", "kind": "classification", "classes": ["M", "F"]},
    "preprocess": {"spacing": [2.0, 2.0, 2.0], "shape": [128, 128, 128], "order": 3,
                   "normalise": "zscore_nonzero", "mask": "none", "apply_mask": False},
    "augment": {"preset": "ixi_age"},
    # cnn3d's defaults are system B's: filters 16/32/64/128, instance norm, dropout 0.3
    "model": {"name": "cnn3d", "output_activation": "softmax"},
    "loss": "sparse_categorical_crossentropy",
    "metrics": ["accuracy"],
    "optimizer": {"name": "adamw", "learning_rate": 1e-4, "weight_decay": 1e-4},
    "training": {"epochs": 40, "batch_size": 1, "patience": 10, "monitor": "val_loss"},
    "inference": {"batch_size": 2, "mc_passes": 20},
}

BRAIN_EXTRACTED = {
    "preprocess": {"mask": "given", "apply_mask": True},
    "augment": {"preset": "ixi_sex"},
}

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
    presets={"default": DEFAULT, "brain-extracted": BRAIN_EXTRACTED, "small": SMALL,
             "small-brain-extracted": {**SMALL, **BRAIN_EXTRACTED,
                                       "preprocess": {**SMALL["preprocess"],
                                                      **BRAIN_EXTRACTED["preprocess"]}}},
    train=volume_level.train, evaluate=volume_level.evaluate, predict=volume_level.predict,
))
