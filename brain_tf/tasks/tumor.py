"""tumor-segmentation: system C (BraTS / MSD Task01), 3D U-Net with sigmoid heads.

``default`` = the published settings: 160x160x16 patches accepted when under 95%
background, per-slice standardisation, U-Net depth 4 (32->512), soft Dice with squared
denominators and epsilon 1e-5, Adam 1e-4, batch 2; whole scans predicted with
overlapping Gaussian-blended tiles. Scored per class and on the whole tumour and tumour
core regions.

``small`` trains in minutes on two CPU cores: 48x48x16 patches, U-Net depth 3 from 8
filters, Adam 3e-3.
"""

from brain_tf.tasks.base import Task, register

_CLASSES = (("ed", 0), ("net", 1), ("et", 2))

DEFAULT = {
    "data": {"spec": "msd_brats", "fractions": {"train": 0.7, "val": 0.1, "test": 0.2}},
    "preprocess": {"normalise": "zscore_slice"},
    "sampler": {"patch_size": [160, 160, 16], "mode": "rejection", "max_background": 0.95,
                "max_tries": 1000, "patches_per_subject": 4},
    "augment": {"preset": "brats"},
    "model": {"name": "unet3d", "depth": 4, "base_filters": 32, "output_activation": "sigmoid"},
    "loss": {"class": "SoftDiceLoss", "squared_pred": True, "smooth_nr": 1e-5, "smooth_dr": 1e-5,
             "include_background": True},
    "metrics": [{"class": "DiceCoefficient", "output_activation": "sigmoid", "name": "dice"}]
    + [{"class": m, "class_id": c, "output_activation": "sigmoid", "name": f"{m.lower()}_{n}"}
       for m in ("Sensitivity", "Specificity") for n, c in _CLASSES],
    "optimizer": {"learning_rate": 1e-4},
    "training": {"epochs": 40, "steps_per_epoch": 100, "batch_size": 2, "patience": 10,
                 "monitor": "val_dice", "mode": "max"},
    "inference": {"patch_size": [160, 160, 16], "batch_size": 2},
    "evaluation": {"regions": {"whole_tumour": [1, 2, 3], "tumour_core": [2, 3]}},
}

SMALL = {
    "data": {"fractions": {"train": 0.6, "val": 0.2, "test": 0.2}},
    "sampler": {"patch_size": [48, 48, 16], "patches_per_subject": 8, "max_tries": 50,
                "max_background": 0.9},
    "model": {"depth": 3, "base_filters": 8},
    "optimizer": {"learning_rate": 3e-3},
    "training": {"epochs": 8, "steps_per_epoch": 20, "batch_size": 4, "patience": 4},
    "inference": {"patch_size": [48, 48, 16], "overlap": 0.25, "batch_size": 4},
}

TASK = register(Task(
    name="tumor-segmentation",
    description="brain tumour segmentation, 3D U-Net with sigmoid heads (BraTS / MSD Task01)",
    family_name="segmentation", presets={"default": DEFAULT, "small": SMALL},
    takes_masks=True,
))
