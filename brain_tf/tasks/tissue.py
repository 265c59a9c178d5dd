"""tissue-segmentation: system A (Cam-CAN coursework), ResUNet 3D over CSF / GM / WM.

``default`` = the published settings: T1 resampled to 3 mm isotropic on a 64^3 grid
(centres aligned, cubic B-spline for the image, nearest for the mask and labels),
z-score over the brain mask with everything outside it set to 0; ResUNet with 5 levels
of 32/64/128/256/512 filters, residual blocks with BatchNorm, in-plane pooling (the
original's (1, 2, 2) in z, y, x order is (2, 2, 1) in brain_tf's x, y, z order),
transposed-convolution upsampling and a 4-class softmax head; cross-entropy, Adam 1e-3,
batch 2, 20 epochs, no augmentation. The network sees the whole 64^3 volume, as in the
original. The best epoch is chosen by the mean foreground Dice on the validation split.

Evaluation adds each test subject's predicted and reference CSF / GM / WM volumes (ml)
and fractions (``test_volumes.csv``, on the 3 mm grid).

``small`` trains in a few minutes on two CPU cores: 32^3 patches (batch 4) cut from the
same grid, a 4-level ResUNet with 8/16/32/64 filters, 2x2x2 pooling and instance norm
(BatchNorm's moving statistics do not settle in so few steps), Adam 3e-3, 12 short
epochs, light augmentation; whole volumes predicted with overlapping 32^3 windows.

Predicting needs the brain mask the model was trained with: one per input (``--mask``);
without it the shipped brain-extraction model computes one (``preprocess.mask_model``,
``pretrained:brain``). ``small`` (``preprocess.mask = "auto"``) does the same when its
training data came with brain masks, as Cam-CAN's do; on data without mask files it trains
and predicts with a threshold-and-morphology mask computed from the image. Either way no
voxel outside the mask is labelled, in evaluation as in prediction.

``synth`` is the contrast-agnostic model (the shipped ``pretrained:tissue``): trained only
on images generated from the phantoms' fine label maps (``brain-tf synth phantoms``) with
random per-structure intensities, resolution, bias, noise and deformation
(``[augment] preset = "synth"``), skull-stripped, at 1.5 mm on the scan's own field of
view, one input channel of any contrast, percentile-normalised over the whole
(masked) image as the generator normalises a patch. The structures of one tissue share
an intensity in each generated image (``PHANTOM_SHARED``), which keeps the contrasts as
varied as real ones but the task learnable in few steps. At prediction the brain mask is
``--mask`` or comes from the brain-extraction model (``preprocess.mask_model``, the shipped
``pretrained:brain``). Its fine labels are grouped into background / CSF / GM / WM
(``PHANTOM_TISSUE``). Its predictions are refined on each scan's own intensities
(``[inference] refine = "em"``, :mod:`brain_tf.inference.refine`): the network's softmax
is the spatial prior of a Gaussian mixture per class with a bias field and an MRF.
"""

from brain_tf.tasks.base import Task, register

_DICE = {"class": "DiceCoefficient", "output_activation": "softmax",
         "include_background": False, "name": "dice"}

DEFAULT = {
    "data": {"spec": "camcan", "fractions": {"train": 0.7, "val": 0.1, "test": 0.2}},
    "preprocess": {"spacing": [3.0, 3.0, 3.0], "shape": [64, 64, 64], "order": 3,
                   "normalise": "zscore_mask", "mask": "given", "apply_mask": True},
    "sampler": {"patch_size": [64, 64, 64], "mode": "uniform", "patches_per_subject": 1},
    "model": {"name": "resunet3d", "depth": 5, "base_filters": 32, "norm": "batch",
              "pool_size": [2, 2, 1], "upsampling": "transpose",
              "output_activation": "softmax"},
    "loss": "categorical_crossentropy",
    "metrics": [_DICE] + [{**_DICE, "class_id": c, "name": f"dice_{n}"}
                          for c, n in ((1, "csf"), (2, "gm"), (3, "wm"))],
    "optimizer": {"learning_rate": 1e-3},
    "training": {"epochs": 20, "steps_per_epoch": 24, "batch_size": 2, "patience": 20,
                 "val_patches": 1, "monitor": "val_dice", "mode": "max"},
    "inference": {"patch_size": [64, 64, 64], "overlap": 0.0, "batch_size": 1},
    "evaluation": {"volumes": True},
}

SMALL = {
    "data": {"fractions": {"train": 0.6, "val": 0.2, "test": 0.2}},
    "preprocess": {"mask": "auto"},
    "sampler": {"patch_size": [32, 32, 32], "mode": "rejection", "max_background": 0.8,
                "max_tries": 50, "patches_per_subject": 4},
    "augment": {"preset": "camcan"},
    "model": {"depth": 4, "base_filters": 8, "pool_size": [2, 2, 2], "norm": "instance"},
    "optimizer": {"learning_rate": 3e-3},
    "training": {"epochs": 12, "steps_per_epoch": 10, "batch_size": 4, "patience": 6,
                 "val_patches": 4},
    "inference": {"patch_size": [32, 32, 32], "overlap": 0.25, "batch_size": 4},
}

#: The phantoms' fine labels (brain_tf.data.synthetic.labels) grouped into the tissue
#: classes as its TISSUE lookup does (a test checks that they agree); values 1-7 are the
#: head outside the brain (scalp, fat, skull, marrow, eyes, other head tissue, dura).
PHANTOM_TISSUE = {"background": [0, 1, 2, 3, 4, 5, 6, 7], "csf": [8, 9, 10],
                  "gm": [11, 14, 17, 18, 19, 20, 21, 22, 23],
                  "wm": [12, 13, 15, 16, 24, 25, 26, 27]}
PHANTOM_HEAD = [1, 2, 3, 4, 5, 6, 7]
#: Structures that share one random intensity per generated image: the CSF spaces, the
#: cortical grey matter (cerebral and cerebellar cortex, hippocampi, amygdalae) and the
#: white matter (cerebral, corpus callosum, cerebellar, brainstem); the deep grey nuclei
#: get their own, as they differ from cortex and from each other in real contrasts.
PHANTOM_SHARED = [[8, 9, 10], [11, 14, 21, 22, 23], [12, 13, 15, 16]]

SYNTH = {
    "data": {"spec": "data/phantoms/spec.toml", "images": ["T1w"],
             "fractions": {"train": 0.8, "val": 0.1, "test": 0.1}},
    "classes": {"groups": PHANTOM_TISSUE},
    "preprocess": {"spacing": [1.5, 1.5, 1.5], "shape": None, "order": 1,
                   "normalise": "percentile", "normalise_options": {"within_mask": False},
                   "mask": "given", "apply_mask": True},
    "sampler": {"patch_size": [80, 80, 80], "mode": "rejection", "max_background": 0.7,
                "max_tries": 20, "patches_per_subject": 2},
    "augment": {"preset": "synth", "synth_strip_labels": PHANTOM_HEAD, "synth_strip_p": 1.0,
                "synth_groups": PHANTOM_SHARED},
    "model": {"depth": 4, "base_filters": 16, "pool_size": [2, 2, 2], "norm": "instance"},
    "loss": {"class": "DiceCELoss", "include_background": False,
             "output_activation": "softmax"},
    "optimizer": {"learning_rate": 1e-3},
    "training": {"epochs": 80, "steps_per_epoch": 30, "batch_size": 1, "patience": 80,
                 "val_patches": 2},
    "inference": {"patch_size": [80, 80, 80], "overlap": 0.25, "batch_size": 1,
                  "refine": "em"},
}

TASK = register(Task(
    name="tissue-segmentation",
    description="CSF / grey / white matter segmentation, 3D ResUNet on T1 (Cam-CAN, system A)",
    family_name="segmentation", presets={"default": DEFAULT, "small": SMALL, "synth": SYNTH},
    takes_masks=True,
))
