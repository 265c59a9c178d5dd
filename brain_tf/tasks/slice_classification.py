"""slice-classification: system E (TCGA-GBM slices), perspective and/or sequence of a slice.

``default`` = the published settings: 224x224 RGB slices, augmentation ``tcga_gbm``
(rotation 15 deg, shift 0.1, shear, zoom 0.9-1.2, horizontal flip, brightness 0.8-1.2), a
ResNet-50 backbone without top (``resnet_classifier``; its first layer is Keras' own
"caffe" input normalisation, so ImageNet weights see what they were trained on;
``model.weights`` unset = random initialisation offline, ``"imagenet"`` or a local
weights file to transfer; ``model.freeze = "all"`` keeps the backbone frozen), global
average pooling, dropout 0.2 and softmax heads chosen by ``target.heads``:
``"perspective"`` (AX, COR, SAG), ``"sequence"`` (DWI, T1, T1C, T2) or ``"dual"`` (both,
equal-weight cross-entropy). ``model.mc_dropout = true`` is the Bayesian variant:
dropout stays on at inference and every prediction is the mean of
``inference.mc_passes`` (100) passes, with their standard deviation as uncertainty.
Adam 1e-4, batch 32. Split by patient, never by image.

``small``: 64x64 slices, a ResNet-34 layout at width 16, Adam 2e-3, 12 epochs of one
pass, MC dropout with 20 passes, dual heads.

``siamese`` (family :mod:`brain_tf.tasks.siamese`, standing alone): the Siamese part of
system E. One shared ResNet-34 layout at width 16 on 64x64 slices maps a slice to an
L2-normalised 64-dimensional embedding (``siamese_embedding``; ``model.backbone =
"resnet50"`` with ``preprocess.shape = [224, 224]`` is the classifier's backbone),
trained with the triplet loss and semi-hard negatives mined in class-balanced batches of
4 classes x 8 slices of the training patients (``loss = {class = "ContrastiveLoss",
margin = 1.0}`` trains on pairs instead); classes are the sequences (``target.label``),
``target.held_out = ["T2"]`` keeps a class out of training. No augmentation: on the
synthetic twin (40 patients, T2 held out, 12 epochs, seeds 0 and 1) the ``tcga_gbm``
augmentation lowered 5-shot accuracy from 0.66 and 0.65 to 0.60 and 0.52, and on the
held-out T2 slices from 0.79 and 0.85 to 0.54 and 0.46. Evaluation is few-shot on the
test patients: 1 and 5 labelled slices per class from support patients label the slices
of the other test patients by nearest centroid, over 20 seeded draws, beside chance and
(``fewshot.classifier_run``) a classifier's accuracy. ``predict --support DIR_OR_CSV``
labels new slices from a labelled support set, new classes included.

Evaluation of the classifier presets (test patients only): accuracy, balanced accuracy
and ROC-AUC per head against the training split's majority class, per-class reports, a
confusion matrix PNG per head, ``test_items.csv`` and Grad-CAM overlays in ``gradcam/`` on
``inference.gradcam_layer`` (default the backbone's last layer, ``conv5_block3_out``).
"""

from brain_tf.tasks.base import Task, register

DEFAULT = {
    "data": {"spec": "tcga_gbm_slices"},
    "target": {"heads": "dual"},
    "preprocess": {"shape": [224, 224], "rgb": True},
    "augment": {"preset": "tcga_gbm"},
    "model": {"name": "resnet_classifier", "backbone": "resnet50", "freeze": "none",
              "dropout": 0.2, "mc_dropout": False},
    "loss": "sparse_categorical_crossentropy",
    "optimizer": {"learning_rate": 1e-4},
    "training": {"epochs": 20, "batch_size": 32, "patience": 5, "monitor": "val_loss"},
    "inference": {"batch_size": 32, "mc_passes": 100},
}

SMALL = {
    "data": {"fractions": {"train": 0.6, "val": 0.2, "test": 0.2}},
    "preprocess": {"shape": [64, 64]},
    "model": {"backbone": "resnet34", "width": 16, "mc_dropout": True},
    "optimizer": {"learning_rate": 2e-3},
    "training": {"epochs": 12, "batch_size": 16, "patience": 4},
    "inference": {"mc_passes": 20},
}

SIAMESE = {
    "data": {"spec": "tcga_gbm_slices", "fractions": {"train": 0.6, "val": 0.2, "test": 0.2}},
    "target": {"label": "sequence", "embedding_dim": 64, "per_class": 8},
    "preprocess": {"shape": [64, 64], "rgb": True},
    "augment": {"preset": "none"},
    "model": {"name": "siamese_embedding", "backbone": "resnet34", "width": 16},
    "loss": {"class": "TripletSemiHardLoss", "margin": 0.2},
    "optimizer": {"learning_rate": 2e-3},
    "training": {"epochs": 15, "batch_size": 32, "patience": 5, "monitor": "val_loss"},
    "inference": {"batch_size": 32},
    "fewshot": {"shots": [1, 5], "draws": 20, "support_fraction": 0.5},
}

TASK = register(Task(
    name="slice-classification",
    description="slice perspective and MR sequence classification, ResNet transfer learning "
                "or a Siamese embedding for few-shot labels (TCGA-GBM slices)",
    family_name="slices", preset_families={"siamese": "siamese"},
    presets={"default": DEFAULT, "small": SMALL, "siamese": SIAMESE},
))
