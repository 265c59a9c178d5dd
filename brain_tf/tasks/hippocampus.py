"""hippocampus-segmentation: system B (ADNI), 3D U-Net softmax over right (1) / left (2).

``default`` = the published settings: T1 at its own resolution, z-score over the voxels
> 0; training patches centred on a random hippocampus voxel with probability 0.95
(otherwise anywhere); a 3D U-Net with 32/64/128 filters and a 256-filter bottleneck (one
width per block), BatchNorm (``model.norm`` "none" or "instance" are the other published
variants), softmax over background / right / left; loss 0.5 cross-entropy with class
weights 0.1 / 0.45 / 0.45 + 0.5 Dice over the two hippocampi; Adam 1e-4, batch 2, 70
epochs; augmentation scale 0.9-1.1, rotation 5 degrees and an elastic warp (7 control
points, 7 mm), no left-right flips (they would swap the labels' meaning). The original
cut 140^3 patches; the U-Net's three 2x poolings need a multiple of 8, so 144^3. Early
stopping, the best checkpoint and ReduceLROnPlateau (factor 0.5, patience 3) follow the
validation Dice. Scored with Dice and HD95 (mm) per side.

``small`` trains in a few minutes on two CPU cores (synthetic twin at 2 mm): 24^3
patches, 8 per subject, 70% centred on the hippocampus, batch 4, 20 epochs of 20 steps,
a U-Net with 8/16/32 filters and a 64-filter bottleneck with instance norm, Adam 3e-3,
the Dice part over the whole batch (``batch_dice``: per-patch Dice of a structure a few
hundred voxels big gave too weak a signal in a few hundred steps), no learning-rate
reduction; whole scans predicted with overlapping 24^3 windows, keeping each side's
largest connected component.
"""

from brain_tf.tasks.base import Task, register

_DICE = {"class": "DiceCoefficient", "output_activation": "softmax",
         "include_background": False, "name": "dice"}

DEFAULT = {
    "data": {"spec": "adni_hippocampus", "fractions": {"train": 0.7, "val": 0.1, "test": 0.2}},
    "preprocess": {"normalise": "zscore_nonzero"},
    "sampler": {"patch_size": [144, 144, 144], "mode": "foreground", "foreground_p": 0.95,
                "patches_per_subject": 2},
    "augment": {"preset": "hippocampus"},
    "model": {"name": "unet3d", "filters": [32, 64, 128, 256], "second_conv_factor": 1,
              "norm": "batch", "upsampling": "transpose", "output_activation": "softmax"},
    "loss": {"class": "DiceCELoss", "dice_weight": 0.5, "ce_weight": 0.5,
             "class_weights": [0.1, 0.45, 0.45], "include_background": False,
             "output_activation": "softmax"},
    "metrics": [_DICE] + [{**_DICE, "class_id": c, "name": f"dice_{n}"}
                          for c, n in ((1, "right"), (2, "left"))],
    "optimizer": {"learning_rate": 1e-4},
    "training": {"epochs": 70, "steps_per_epoch": 100, "batch_size": 2, "patience": 15,
                 "val_patches": 2, "monitor": "val_dice", "mode": "max",
                 "reduce_lr": {"factor": 0.5, "patience": 3}},
    "inference": {"patch_size": [144, 144, 144], "batch_size": 1},
}

SMALL = {
    "data": {"fractions": {"train": 0.6, "val": 0.2, "test": 0.2}},
    "sampler": {"patch_size": [24, 24, 24], "patches_per_subject": 8, "foreground_p": 0.7},
    "model": {"filters": [8, 16, 32, 64], "norm": "instance"},
    "loss": {"batch_dice": True},
    "optimizer": {"learning_rate": 3e-3},
    "training": {"epochs": 20, "steps_per_epoch": 20, "batch_size": 4, "patience": 20,
                 "val_patches": 4, "reduce_lr": False},
    "inference": {"patch_size": [24, 24, 24], "overlap": 0.25, "batch_size": 8,
                  "largest_component": True},
}

TASK = register(Task(
    name="hippocampus-segmentation",
    description="left / right hippocampus segmentation, 3D U-Net softmax (ADNI, system B)",
    family_name="segmentation", presets={"default": DEFAULT, "small": SMALL},
    takes_masks=True,
))
