"""The typed run configuration: one dataclass per config section, its defaults in one place.

A run's configuration is TOML with one table per section (``[data]``, ``[preprocess]``,
``[training]``, ...). A task preset and a ``--config`` file give only the values that
differ from these defaults. :meth:`RunConfig.build` merges them, checks every key and
type (an unknown key is an error naming the section and the nearest valid key) and fills
in the rest, so the code reads ``config.training.batch_size`` and never guesses a default.

Some sections are free-form because their keys belong to a registry checked where the
object is built: ``model`` (a builder's options, :func:`brain_tf.models.build_model`),
``loss`` and ``metrics`` (:mod:`brain_tf.losses`, :mod:`brain_tf.metrics`) and
``augment`` (checked here with :func:`brain_tf.augment_presets.augment_config`).

A field that may be unset (``None``) always defaults to ``None``: TOML has no null, so
``config.toml`` leaves such keys out and reading it back gives the same configuration.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from brain_tf.augment_presets import augment_config
from brain_tf.errors import ConfigError


def deep_merge(base: Mapping, override: Mapping) -> dict:
    """A copy of ``base`` with ``override``'s keys replacing (recursively)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def unknown_key(key: str, valid, where: str) -> ConfigError:
    """The error for an unknown key: names it, where it is, and the nearest valid key."""
    valid = sorted(valid)
    near = difflib.get_close_matches(str(key), valid, n=1)
    hint = f"did you mean {near[0]!r}? " if near else ""
    return ConfigError(f"{where}: unknown key {key!r}; {hint}valid keys: {', '.join(valid)}")


_NUMBER = (int, float)


def _type_ok(value, hint) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    base = origin or hint
    if base is float:
        return isinstance(value, _NUMBER) and not isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if base is list:
        return isinstance(value, (list, tuple))
    if base is dict:
        return isinstance(value, Mapping)
    return isinstance(value, base)


def _type_name(hint) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if args:
        return " or ".join(_type_name(a) for a in args)
    return {float: "a number", int: "an integer", bool: "true or false", str: "a string",
            list: "a list", dict: "a table"}.get(typing.get_origin(hint) or hint, str(hint))


class Section:
    """A config section: a dataclass built from a TOML table with its keys and types checked.

    Subclasses set ``NAME`` (the TOML table) and may override :meth:`check` for value
    constraints; :meth:`positive` and :meth:`choice` help there.
    """

    NAME: ClassVar[str] = ""

    @classmethod
    def build(cls, values: Mapping | None, where: str = "config") -> "Section":
        values = dict(values or {})
        names = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in names:
                raise unknown_key(key, names, f"{where} [{cls.NAME}]")
        hints = typing.get_type_hints(cls)
        for key, value in values.items():
            if not _type_ok(value, hints[key]):
                raise ConfigError(f"{where} [{cls.NAME}] {key} must be {_type_name(hints[key])}, "
                                  f"not {value!r}")
        section = cls(**copy.deepcopy(values))
        section.check(f"{where} [{cls.NAME}]")
        return section

    def check(self, where: str) -> None:
        """Value constraints beyond the types (override; raise ConfigError)."""

    def positive(self, where: str, *keys: str, allow_zero: bool = False) -> None:
        for key in keys:
            value = getattr(self, key)
            if value is not None and (value < 0 or (value == 0 and not allow_zero)):
                bound = "0 or more" if allow_zero else "at least 1"
                raise ConfigError(f"{where} {key} must be {bound}, not {value!r}")

    def choice(self, where: str, key: str, options) -> None:
        value = getattr(self, key)
        if value not in options:
            raise ConfigError(f"{where} {key} must be one of {', '.join(map(repr, options))}, "
                              f"not {value!r}")

    def to_dict(self) -> dict:
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self)}


# ------------------------------------------------------------------------------ sections
@dataclass
class Data(Section):
    """Where the data are and how subjects are split (by patient)."""

    NAME = "data"
    spec: str = ""                    # data spec TOML (a shipped name or a path)
    root: str | None = None           # dataset folder, overrides the spec's root
    images: list | None = None        # only these of the spec's image entries, in this order
    seed: int = 0                     # split, sampling, augmentation and initialisation seed
    fractions: dict = field(default_factory=lambda: {"train": 0.7, "val": 0.15, "test": 0.15})
    stratify: str | None = None       # manifest column whose balance the split keeps
    splits_csv: str | None = None     # reuse a split (sample, subject, split)
    shards: str | None = None         # read preprocessed subjects from `brain-tf shard` output
    skip_bad: bool = False            # leave out (and list) subjects whose files fail the check

    def check(self, where):
        bad = set(self.fractions) - {"train", "val", "test"}
        if bad or any(not _type_ok(v, float) or v < 0 for v in self.fractions.values()):
            raise ConfigError(f"{where} fractions must give train, val and test as numbers "
                              f">= 0, not {self.fractions!r}")
        if abs(sum(self.fractions.values()) - 1.0) > 1e-6:
            raise ConfigError(f"{where} fractions must add up to 1, not {self.fractions!r}")


@dataclass
class Preprocess(Section):
    """Per-subject preprocessing of 3D volumes (see :mod:`brain_tf.preprocess.subject`)."""

    NAME = "preprocess"
    spacing: list | None = None       # target voxel size (mm)
    shape: list | None = None         # target grid (with spacing: a fixed grid)
    crop: list | None = None          # crop/pad after resampling
    crop_mode: str = "center"         # or "bbox" (centred on the mask's bounding box)
    order: int = 3                    # image interpolation: 1 linear, 3 cubic B-spline
    normalise: str = "none"           # a scheme of brain_tf.preprocess.normalise
    normalise_options: dict = field(default_factory=dict)
    mask: str = "given"               # "given", "auto" (computed when missing) or "none"
    apply_mask: bool = False          # zero the image outside the brain mask
    # at prediction, a needed brain mask that is not given comes from this brain-extraction
    # model (a run folder or pretrained:NAME; "" to require one per input)
    mask_model: str = "pretrained:brain"
    labels: list | None = None        # label values in class order (default: the spec's)

    def check(self, where):
        self.choice(where, "crop_mode", ("center", "bbox"))
        self.choice(where, "mask", ("given", "auto", "none"))
        self.choice(where, "order", (0, 1, 2, 3, 4, 5))
        for key in ("spacing", "shape", "crop"):
            value = getattr(self, key)
            if value is not None and (len(value) != 3 or any(v <= 0 for v in value)):
                raise ConfigError(f"{where} {key} must be three positive numbers, not {value!r}")


@dataclass
class SlicePreprocess(Section):
    """Preprocessing of 2D slices (see :mod:`brain_tf.preprocess.slices`): pixel values stay
    on the 0-255 scale of 8-bit images; the model normalises them itself."""

    NAME = "preprocess"
    shape: list | None = None         # [rows, cols] to resize to
    rgb: bool = False                 # repeat a grey image to 3 channels (ImageNet backbones)
    labels: list | None = None        # mask values in class order, e.g. [0, 255]

    def check(self, where):
        if self.shape is not None and (len(self.shape) != 2 or min(self.shape) < 1):
            raise ConfigError(f"{where} shape must be two positive integers, not {self.shape!r}")


@dataclass
class Sampler(Section):
    """Where training patches are cut (see :class:`brain_tf.pipeline.sampling.PatchSampler`)."""

    NAME = "sampler"
    patch_size: list = field(default_factory=lambda: [64, 64, 64])
    mode: str = "uniform"             # "uniform", "rejection" or "foreground"
    patches_per_subject: int = 1
    max_background: float = 0.95      # rejection: accept below this background fraction
    max_tries: int = 1000
    foreground_p: float = 0.95        # foreground: probability of a foreground-centred patch
    class_probs: list | None = None   # foreground: probability of each centre class

    def check(self, where):
        self.choice(where, "mode", ("uniform", "rejection", "foreground"))
        self.positive(where, "patches_per_subject", "max_tries")
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise ConfigError(f"{where} patch_size must be three positive integers")


@dataclass
class Optimizer(Section):
    """The optimizer and its learning-rate schedule."""

    NAME = "optimizer"
    name: str = "adam"                # adam, adamw or sgd
    learning_rate: float = 1e-3       # the maximum learning rate of a OneCycle schedule
    weight_decay: float | None = None
    schedule: dict | None = None      # {name = "OneCycle", warmup_fraction = 0.3} or StepDecay
    options: dict = field(default_factory=dict)  # other keyword arguments of the optimizer

    def check(self, where):
        self.choice(where, "name", ("adam", "adamw", "sgd"))
        if self.learning_rate <= 0:
            raise ConfigError(f"{where} learning_rate must be positive, not {self.learning_rate}")
        if self.schedule is not None and self.schedule.get("name") not in ("OneCycle",
                                                                           "StepDecay"):
            raise ConfigError(f"{where} schedule.name must be 'OneCycle' or 'StepDecay', not "
                              f"{self.schedule.get('name')!r}")


@dataclass
class Training(Section):
    """How long and how a model trains; the test split is never looked at here."""

    NAME = "training"
    epochs: int = 20
    steps_per_epoch: int | None = None   # None: one pass over the training data
    batch_size: int = 2                  # the global batch (split over replicas)
    val_batch_size: int | None = None    # None: batch_size
    val_patches: int = 4                 # validation patches per subject (patch tasks)
    monitor: str = "val_loss"            # validation quantity for early stopping and best.keras
    mode: str = "auto"                   # "min", "max" or "auto"
    patience: int | None = None          # early stopping; None: train every epoch
    stop_at_epoch: int | None = None     # stop after this epoch of the planned ones
    freeze_epochs: int = 0               # first epochs with the pretrained encoder frozen
    reduce_lr: dict | None = None        # ReduceLROnPlateau options, e.g. {factor, patience}
    strategy: str = "default"            # "default", "mirrored" or "multiworker"
    precision: str = "float32"           # "float32", "bfloat16", "float16" or "auto"
    mixed_precision: bool = False        # older spelling of precision = "float16"
    jit_compile: bool = False            # XLA (slow for 3D convolutions on CPUs)
    deterministic: bool = True           # deterministic TensorFlow ops (same run, same numbers)
    tensorboard: bool = False            # TensorBoard logs in the run's tensorboard/
    init_weights: str | None = None      # start from a trained model of the same network
    verbose: int | None = None           # None: a progress bar on a terminal, else one line

    @classmethod
    def build(cls, values, where="config"):
        values = dict(values or {})
        if values.get("reduce_lr") is False:
            values["reduce_lr"] = None  # a preset switching off its parent's schedule
        return super().build(values, where)

    def check(self, where):
        self.positive(where, "epochs", "steps_per_epoch", "batch_size", "val_batch_size",
                      "val_patches", "stop_at_epoch")
        self.positive(where, "patience", "freeze_epochs", allow_zero=True)
        self.choice(where, "mode", ("auto", "min", "max"))
        self.choice(where, "strategy", ("default", "mirrored", "multiworker"))
        self.choice(where, "precision", ("float32", "bfloat16", "float16", "auto"))
        if self.mixed_precision and self.precision not in ("float32", "float16"):
            raise ConfigError(f"{where} mixed_precision = true is precision = \"float16\"; "
                              f"it contradicts precision = {self.precision!r}: keep one")
        if self.verbose is not None:
            self.choice(where, "verbose", (0, 1, 2))
        if self.stop_at_epoch is not None and self.stop_at_epoch > self.epochs:
            raise ConfigError(f"{where} stop_at_epoch {self.stop_at_epoch} is after the last "
                              f"epoch ({self.epochs}); raise epochs or lower stop_at_epoch")


@dataclass
class Inference(Section):
    """Whole-volume / whole-set prediction."""

    NAME = "inference"
    batch_size: int = 4                  # tiles, volumes or slices per model call
    patch_size: list | None = None       # sliding-window tile (3D segmentation)
    overlap: float = 0.5                 # tile overlap (0 <= overlap < 1)
    tta: bool = False                    # flip test-time augmentation
    threshold: float = 0.5               # sigmoid heads
    # softmax: a voxel is background unless 1 - p(background) reaches this (None: argmax)
    foreground_threshold: float | None = None
    merge: str = "argmax"                # sigmoid heads: "argmax" or "nested" (BraTS regions)
    largest_component: bool = False      # keep each class's largest connected component
    mc_passes: int = 20                  # MC-dropout passes
    gradcam_layer: str | None = None     # default: the backbone's last layer
    gradcam_slices: int = 4              # test slices with a Grad-CAM overlay
    overlay_slices: int = 4              # test slices in overlay.png (2D segmentation)
    # 3D segmentation outputs: "seg" (NAME_seg: the label map), "mask" (NAME_mask: 1 where
    # any class but background), "brain" (NAME_brain: the input image inside that mask),
    # "probseg" (NAME_label-CLASS_probseg: each class's probability)
    write: list = field(default_factory=lambda: ["seg"])
    # softmax segmentation: "em" refines the probabilities on each scan's own intensities
    # (brain_tf.inference.refine: a Gaussian mixture per class, a bias field, an MRF)
    refine: str = "none"
    refine_prior_weight: float = 0.25    # the network's softmax to this power is the prior
    refine_components: int = 2           # Gaussians per class
    refine_bias_order: int = 3           # polynomial degree of the log bias field (0: none)
    refine_bias_smoothness: float = 0.1  # bending-energy penalty of the bias field (0: none)
    refine_mrf: float = 0.3              # mean-field MRF strength (0: none)
    refine_iterations: int = 30          # EM iterations (at most)
    refine_partial_volume: bool = True   # mixed classes for voxels holding two tissues

    def check(self, where):
        self.positive(where, "batch_size", "mc_passes")
        if not self.write or set(self.write) - {"seg", "mask", "brain", "probseg"}:
            raise ConfigError(f"{where} write must list outputs among 'seg', 'mask', "
                              f"'brain' and 'probseg', not {self.write!r}")
        if self.foreground_threshold is not None and not 0 < self.foreground_threshold < 1:
            raise ConfigError(f"{where} foreground_threshold must be in (0, 1), not "
                              f"{self.foreground_threshold!r}")
        self.choice(where, "refine", ("none", "em"))
        self.positive(where, "refine_components", "refine_iterations")
        self.positive(where, "refine_prior_weight", "refine_bias_order", "refine_mrf",
                      "refine_bias_smoothness",
                      allow_zero=True)
        self.positive(where, "gradcam_slices", "overlay_slices", allow_zero=True)
        self.choice(where, "merge", ("argmax", "nested"))
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError(f"{where} overlap must be in [0, 1), not {self.overlap}")


@dataclass
class Classes(Section):
    """The classes a segmentation model predicts, read from label-map or brain-mask files."""

    NAME = "classes"
    source: str = "label"   # "label": the spec's label maps; "mask": its brain masks
    # class name -> the file values it takes, in class order; default: the spec's [labels]
    # (for masks: background = 0, brain = 1). With groups, predictions hold class indices.
    groups: dict = field(default_factory=dict)

    def check(self, where):
        self.choice(where, "source", ("label", "mask"))
        for name, values in self.groups.items():
            values = values if isinstance(values, list) else [values]
            if not values or not all(_type_ok(v, int) and v >= 0 for v in values):
                raise ConfigError(f"{where} groups.{name} must be label values (integers "
                                  f">= 0), not {values!r}")


@dataclass
class Evaluation(Section):
    """What segmentation evaluation reports beyond per-label Dice, HD95 and sensitivity."""

    NAME = "evaluation"
    regions: dict = field(default_factory=dict)  # name -> label indices evaluated together
    volumes: bool = False                        # test_volumes.csv: predicted vs reference ml


@dataclass
class Target(Section):
    """What a whole-volume model predicts from a manifest column."""

    NAME = "target"
    column: str = "age"
    kind: str = "regression"          # or "classification"
    standardise: bool = False         # regression: train on (y - mean) / std of the train split
    classes: list | None = None       # classification: column values in class-index order

    def check(self, where):
        self.choice(where, "kind", ("regression", "classification"))
        if self.kind == "classification" and not self.classes:
            raise ConfigError(f"{where} classes must list the {self.column!r} values "
                              "of a classification target")


@dataclass
class SliceTarget(Section):
    """Which heads a slice classifier has, and (optionally) their classes."""

    NAME = "target"
    heads: str = "dual"               # "perspective", "sequence" or "dual" (both)
    classes: dict = field(default_factory=dict)  # head -> class names (default: the spec's)

    def check(self, where):
        self.choice(where, "heads", ("perspective", "sequence", "dual"))


@dataclass
class EmbeddingTarget(Section):
    """What a Siamese slice embedding learns to tell apart, and from which slices."""

    NAME = "target"
    label: str = "sequence"           # "perspective", "sequence" or "both" (e.g. AX_T2)
    classes: dict = field(default_factory=dict)  # perspective/sequence -> names (the spec's)
    held_out: list = field(default_factory=list)  # values left out of training, e.g. ["T2"]
    embedding_dim: int = 64
    per_class: int = 8                # slices of each class in a training batch

    def check(self, where):
        self.choice(where, "label", ("perspective", "sequence", "both"))
        self.positive(where, "embedding_dim", "per_class")
        if self.per_class < 2:
            raise ConfigError(f"{where} per_class must be at least 2 (a batch needs pairs of "
                              f"one class), not {self.per_class}")
        if not all(isinstance(v, str) for v in self.held_out):
            raise ConfigError(f"{where} held_out must list class names, not {self.held_out!r}")


@dataclass
class FewShot(Section):
    """Few-shot evaluation of an embedding on the test patients (see
    :mod:`brain_tf.evaluation.fewshot`)."""

    NAME = "fewshot"
    shots: list = field(default_factory=lambda: [1, 5])  # labelled slices per class
    draws: int = 20                   # random support/query draws averaged
    support_fraction: float = 0.5     # of the test patients, the support patients of a draw
    classifier_run: str | None = None  # a slice-classification run to report beside

    def check(self, where):
        self.positive(where, "draws")
        if not self.shots or any(not _type_ok(k, int) or k < 1 for k in self.shots):
            raise ConfigError(f"{where} shots must list positive integers, not {self.shots!r}")
        if not 0.0 < self.support_fraction < 1.0:
            raise ConfigError(f"{where} support_fraction must be in (0, 1), not "
                              f"{self.support_fraction}")


@dataclass
class Features(Section):
    """Age from tissue-volume features (system A)."""

    NAME = "features"
    regressors: list = field(default_factory=lambda: ["linear", "bayesian_ridge", "poly3"])
    cv_folds: int = 2
    tissue_run: str | None = None     # a tissue-segmentation run to segment the T1 images

    def check(self, where):
        if self.cv_folds < 2:
            raise ConfigError(f"{where} cv_folds must be at least 2, not {self.cv_folds}")


#: Free-form sections (checked where their objects are built): their form and default.
FREE = {"model": (dict, {}), "loss": ((str, dict), None), "metrics": ((list, dict), []),
        "augment": ((str, dict), {})}


def _check_augment(value, where: str):
    try:
        augment_config(value)
    except ConfigError as err:
        raise ConfigError(f"{where} [augment]: {err}") from None
    return value


# ------------------------------------------------------------------------------ a config
class RunConfig:
    """A task's complete configuration: ``config.training.epochs``, ``config.model[...]``.

    Built from merged dicts with :meth:`build`; :meth:`to_dict` gives the TOML tables.
    """

    def __init__(self, task: str, preset: str, sections: dict[str, Any]):
        self.task = task
        self.preset = preset
        self.sections = sections

    def __getattr__(self, name: str):
        sections = self.__dict__.get("sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(f"config of {self.__dict__.get('task')!r} has no section {name!r}")

    def __contains__(self, name: str) -> bool:
        return name in self.sections

    @classmethod
    def build(cls, raw: Mapping, schema: Mapping[str, type], where: str = "config"
              ) -> "RunConfig":
        """Check ``raw`` (tables by section) against ``schema`` (section -> Section class, or
        None for a section of :data:`FREE`) and fill in the defaults."""
        raw = dict(raw)
        task, preset = str(raw.pop("task", "")), str(raw.pop("preset", "default"))
        for name in raw:
            if name not in schema:
                raise unknown_key(name, schema, f"{where} (sections of {task or 'this task'})")
        sections: dict[str, Any] = {}
        for name, kind in schema.items():
            value = raw.get(name)
            if kind is not None:
                if value is not None and not isinstance(value, Mapping):
                    raise ConfigError(f"{where} [{name}] must be a table, not {value!r}")
                sections[name] = kind.build(value, where)
                continue
            form, default = FREE[name]
            value = copy.deepcopy(default if value is None else value)
            if value is not None and not isinstance(value, form):
                raise ConfigError(f"{where} [{name}] has the wrong form: {value!r}")
            sections[name] = _check_augment(value, where) if name == "augment" else value
        return cls(task, preset, sections)

    def to_dict(self) -> dict:
        out: dict = {"task": self.task, "preset": self.preset}
        for name, value in self.sections.items():
            out[name] = value.to_dict() if isinstance(value, Section) else copy.deepcopy(value)
        return out

    def replace(self, **tables) -> "RunConfig":
        """A copy with some sections' keys replaced, e.g. ``replace(training={"epochs": 3})``."""
        raw = deep_merge(self.to_dict(), tables)
        sections = {name: type(value).build(raw[name]) if isinstance(value, Section)
                    else raw.get(name) for name, value in self.sections.items()}
        return RunConfig(self.task, self.preset, sections)
