"""age-regression: brain age from T1 scans, systems B (IXI CNN) and A (Cam-CAN).

Presets:

- ``default`` -- system B: IXI full-head T1 resampled to 2 mm / 128^3 about the image
  centre (cubic, fill 0), z-score over voxels > 0, augmentation ``ixi_age`` (rotation
  5 deg, translation 7 mm); cnn3d 16/32/64/128 with instance norm, dropout 0.3, dense 1
  (``model.hidden_units = 64`` gives the extended head); MSE, AdamW 1e-4 with weight
  decay 1e-4 (decoupled; the original's Adam ``weight_decay`` was an L2 term), batch 1,
  40 epochs with early stopping on the validation loss. Reported: MAE 7.79 years.
- ``resnext`` -- system A's ResNeXt-3D on Cam-CAN: 3 mm / 64^3, z-score in the brain
  mask (zero outside), ResNeXt-50 layout (``resnext3d_50``), MSE, Adam 1e-4, batch 4,
  stopped at epoch 12. Reported: MAE 7.09 years.
- ``features`` -- system A's volume features (family :mod:`brain_tf.tasks.features`):
  CSF/GM/WM fractions from the reference segmentations or a tissue run's predictions;
  linear, Bayesian ridge and degree-3 polynomial regressors compared by 2-fold
  cross-validation, the best refitted and tested once. Reported: CV MAE 7.11, hold-out
  MAE 6.90 years, R^2 0.81.
- ``small`` -- the cnn3d on brain-extracted images (the spec's masks) on a 6 mm /
  32x40x40 grid, filters 8/16/32/64, no augmentation, standardised target, Adam 1e-3,
  batch 4, 40 epochs (patience 20): minutes on 2 CPU cores. At 6 mm the full head hides
  the small age effects; the brain alone learns.

Splits are stratified by age.
"""

from brain_tf.tasks.base import Task, register

DEFAULT = {
    "data": {"spec": "ixi", "stratify": "age"},
    "target": {"column": "age", "kind": "regression"},
    "preprocess": {"spacing": [2.0, 2.0, 2.0], "shape": [128, 128, 128], "order": 3,
                   "normalise": "zscore_nonzero", "mask": "none"},
    "augment": {"preset": "ixi_age"},
    # cnn3d's defaults are system B's: filters 16/32/64/128, instance norm, dropout 0.3
    "model": {"name": "cnn3d"},
    "loss": "mse",
    "metrics": ["mae"],
    "optimizer": {"name": "adamw", "learning_rate": 1e-4, "weight_decay": 1e-4},
    "training": {"epochs": 40, "batch_size": 1, "patience": 10},
    "inference": {"batch_size": 2},
}

RESNEXT = {
    "data": {"spec": "camcan", "fractions": {"train": 0.7, "val": 0.1, "test": 0.2}},
    "preprocess": {"spacing": [3.0, 3.0, 3.0], "shape": [64, 64, 64],
                   "normalise": "zscore_mask", "mask": "given"},
    "augment": {"preset": "none"},
    "model": {"name": "resnext3d_50"},
    "optimizer": {"name": "adam", "weight_decay": 0.0},
    "training": {"batch_size": 4, "stop_at_epoch": 12},
}

FEATURES = {
    "data": {"spec": "camcan", "stratify": "age",
             "fractions": {"train": 5 / 6, "val": 0.0, "test": 1 / 6}},
    "features": {"regressors": ["linear", "bayesian_ridge", "poly3"], "cv_folds": 2},
}

SMALL = {
    "target": {"standardise": True},
    "preprocess": {"spacing": [6.0, 6.0, 6.0], "shape": [32, 40, 40], "mask": "given",
                   "apply_mask": True},
    "augment": {"preset": "none"},
    "model": {"filters": [8, 16, 32, 64]},
    "optimizer": {"name": "adam", "learning_rate": 1e-3, "weight_decay": 0.0},
    "training": {"epochs": 40, "batch_size": 4, "patience": 20},
    "inference": {"batch_size": 8},
}

TASK = register(Task(
    name="age-regression",
    description="brain age from T1: 3D CNN (IXI), ResNeXt-3D or tissue-volume regressors "
                "(Cam-CAN)",
    family_name="volume", preset_families={"features": "features"},
    presets={"default": DEFAULT, "resnext": RESNEXT, "features": FEATURES, "small": SMALL},
))
