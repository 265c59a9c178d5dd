"""lesion-segmentation: system D (TCGA lower-grade glioma, Kaggle kaggle_3m), 2D slices.

``default`` = the published recipe: 256x256 RGB slices (pre-contrast, FLAIR,
post-contrast), augmentation ``lgg`` (flip, rotation 10 deg, zoom 1-1.1, perspective
warp 0.2, lighting 0.2, reflection padding), a 2D U-Net with a ResNet-34 encoder whose
first layer applies ImageNet mean/std to the 0-255 pixels (``unet2d_resnet``) and a
2-class softmax head, cross-entropy, Adam with a one-cycle schedule (max lr 2.5e-4, 30%
warm-up), batch 16; one epoch with the encoder frozen, then 6 epochs unfrozen, each
stage with its own one-cycle schedule. The frozen stage needs pretrained encoder
weights: Keras ships no ImageNet ResNet-34, so set ``model.weights`` to a local
ResNet-34 weights file (or ``model.backbone = "resnet50"`` with ``weights =
"imagenet"``); without weights the encoder trains from scratch and the frozen stage is
skipped. Split by patient (15 validation patients in the original; here 70/15/15%).

``small``: 96x96 slices, a ResNet-34 layout at width 16 using 4 levels, decoder base 8,
one-cycle max lr 3e-3 over 10 epochs of one pass each, batch 16.

Evaluation (test patients only): Dice per patient (over all its slices), pooled Dice,
sensitivity and precision; ``test_items.csv`` (per slice), ``test_per_patient.csv`` and
``overlay.png``. ``predict`` writes ``<name>_mask.<tif|png>`` (0/255, the input's size).
"""

from brain_tf.tasks.base import Task, register

DEFAULT = {
    "data": {"spec": "kaggle_lgg"},
    "preprocess": {"shape": [256, 256], "rgb": True},
    "augment": {"preset": "lgg"},
    "model": {"name": "unet2d_resnet", "backbone": "resnet34", "depth": 5, "base_filters": 16,
              "output_activation": "softmax"},
    "loss": "categorical_crossentropy",
    "metrics": [{"class": "DiceCoefficient", "output_activation": "softmax",
                 "include_background": False, "name": "dice"}],
    "optimizer": {"learning_rate": 2.5e-4,
                  "schedule": {"name": "OneCycle", "warmup_fraction": 0.3}},
    "training": {"epochs": 6, "freeze_epochs": 1, "batch_size": 16, "patience": 6,
                 "monitor": "val_dice", "mode": "max"},
    "inference": {"batch_size": 16},
}

SMALL = {
    "data": {"fractions": {"train": 0.6, "val": 0.2, "test": 0.2}},
    "preprocess": {"shape": [96, 96]},
    "model": {"depth": 4, "encoder_width": 16, "base_filters": 8},
    "optimizer": {"learning_rate": 3e-3},
    "training": {"epochs": 10, "freeze_epochs": 0, "patience": 5},
}

TASK = register(Task(
    name="lesion-segmentation",
    description="FLAIR abnormality segmentation on 2D slices, U-Net with a ResNet-34 encoder "
                "(TCGA LGG, Kaggle kaggle_3m)",
    family_name="lesion", presets={"default": DEFAULT, "small": SMALL},
))
