"""Random images generated from label maps (domain randomisation), in TF ops.

A network trained on images whose contrast, resolution and artefacts are
drawn anew for every sample learns to segment scans of any contrast
(the SynthSeg idea, Billot et al. 2023). :class:`SynthGenerator` turns a
(fine) label map into such an image, one patch at a time, following the
augmentation pattern: :meth:`SynthGenerator.sample` draws every parameter
from a stateless seed, :meth:`SynthGenerator.apply` is a pure function of
them. The steps, in order:

1. the label map is warped (nearest neighbour) with :class:`Augment3D`'s
   affine, elastic and flip parameters, straight out of the whole subject
   around the patch centre, so image and target are aligned by construction;
2. skull stripping (``synth_strip_p``): the labels of ``synth_strip_labels``
   become background;
3. field-of-view crop (``synth_crop_p``): slabs at the patch borders become
   background (and the image 0 there, step 9);
4. intensities: each label value draws a mean and a spread (the std of its
   voxels) uniformly from ``synth_mean`` and ``synth_std``, independently per
   sample, so any contrast order occurs; ``synth_groups`` share a draw; the
   background is black with probability ``synth_dark_background_p``; values
   are clipped at 0 (magnitude images);
5. partial volume: :class:`Augment3D`'s Gaussian blur (``blur_*``);
6. thick slices (``synth_slice_p``): along one axis of ``synth_slice_axes``,
   slices ``synth_slice_mm`` thick (slice-profile blur, sampling, linear
   interpolation back; :func:`brain_tf.pipeline.intensity.thick_slices`);
7. bias field, ghosting and motion (``bias_*``, ``ghosting_*``, ``motion_*``);
8. noise (``noise_*``), Rician with probability ``synth_rician_p``; gamma;
9. zero outside the field of view and, when skull-stripped, outside the
   remaining labels;
10. normalisation as inference applies it to real scans (``synth_normalise``:
    ``percentile`` or ``zscore_nonzero``, the schemes of
    :mod:`brain_tf.preprocess.normalise`, or ``none``), then contrast and
    brightness (``contrast``, ``brightness``) in normalised units.

The label map returned is the warped, stripped and cropped fine label map;
:func:`brain_tf.pipeline.datasets.patch_dataset` maps it to the task's
classes (``label_lookup``) and one-hot encodes it in the same XLA-compiled
function.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow as tf

from brain_tf.errors import ConfigError
from brain_tf.pipeline import intensity as it
from brain_tf.pipeline import spatial3d as sp
from brain_tf.pipeline.augment3d import Augment3D, _range

LABEL_VALUES = 256
"""Label maps are uint8: every value 0..255 has its own draw (the unused ones cost nothing)."""

NORMALISATIONS = ("percentile", "zscore_nonzero", "none")

_STREAMS = ("means", "stds", "texture", "background", "slice", "rician", "crop", "strip")
_SYNTH_FOLD = 0x53594E  # folds the sample seed into the generator's own streams


def _bounded_range(cfg, key: str, low: float) -> tuple[float, float]:
    lo, hi = _range(cfg[key], key)
    if lo < low:
        raise ConfigError(f"3D augmentation: {key} must not go below {low}, got {cfg[key]!r}")
    return lo, hi


def _label_list(values, key: str) -> list[int]:
    try:
        out = [int(v) for v in values]
    except (TypeError, ValueError):
        raise ConfigError(f"3D augmentation: {key} must be a list of label values, "
                          f"got {values!r}") from None
    if any(not 0 <= v < LABEL_VALUES for v in out):
        raise ConfigError(f"3D augmentation: {key} values must be within 0..255, got {values!r}")
    return out


def _group_table(groups) -> np.ndarray:
    """Label value -> the value whose draw it uses (the first of its group)."""
    table = np.arange(LABEL_VALUES, dtype=np.int32)
    seen: set[int] = set()
    for group in groups:
        members = _label_list(group, "synth_groups")
        if not members or seen & set(members):
            raise ConfigError(f"3D augmentation: synth_groups must be non-empty lists with each "
                              f"label in one group only, got {groups!r}")
        seen |= set(members)
        table[members] = members[0]
    return table


class SynthGenerator:
    """Generates a random image and its label map from a label map (see the module docstring).

    Args:
        config: a 3D augmentation config with ``synth = true`` (e.g. the preset
            ``"synth"``), as a preset name, dict or :class:`Augment3D`.
        spacing: voxel size in mm of the label maps it will see.
    """

    def __init__(self, config: str | Mapping[str, Any] | Augment3D = "synth",
                 spacing: Sequence[float] = (1.0, 1.0, 1.0)):
        aug = config if isinstance(config, Augment3D) else Augment3D(config, spacing=spacing)
        cfg = aug.config
        if not cfg["synth"]:
            raise ConfigError("image generation needs synth = true in the 3D augmentation "
                              "config (or the preset 'synth')")
        self.augment = aug
        self.config = cfg
        self.spacing = aug.spacing
        self.mean = _bounded_range(cfg, "synth_mean", 0.0)
        self.std = _bounded_range(cfg, "synth_std", 0.0)
        self.slice_mm = _bounded_range(cfg, "synth_slice_mm", 1e-3)
        self.percentiles = _bounded_range(cfg, "synth_percentiles", 0.0)
        if self.percentiles[1] > 100 or self.percentiles[0] >= self.percentiles[1]:
            raise ConfigError(f"3D augmentation: synth_percentiles must be [lower, upper] with "
                              f"0 <= lower < upper <= 100, got {cfg['synth_percentiles']!r}")
        self.groups = _group_table(cfg["synth_groups"])
        self.slice_axes = sorted({int(a) for a in cfg["synth_slice_axes"]})
        if any(a not in (0, 1, 2) for a in self.slice_axes):
            raise ConfigError(f"3D augmentation: synth_slice_axes must be within 0..2, "
                              f"got {cfg['synth_slice_axes']!r}")
        self.crop_fraction = float(cfg["synth_crop_fraction"])
        if not 0.0 <= self.crop_fraction < 0.5:
            raise ConfigError(f"3D augmentation: synth_crop_fraction must be in [0, 0.5), "
                              f"got {cfg['synth_crop_fraction']!r}")
        strip = _label_list(cfg["synth_strip_labels"], "synth_strip_labels")
        self.strip_table = np.zeros(LABEL_VALUES, bool)
        self.strip_table[strip] = True
        if cfg["synth_normalise"] not in NORMALISATIONS:
            raise ConfigError(f"3D augmentation: synth_normalise must be one of "
                              f"{NORMALISATIONS}, not {cfg['synth_normalise']!r}")
        self.enabled = {
            "slice": cfg["synth_slice_p"] > 0 and bool(self.slice_axes),
            "rician": cfg["synth_rician_p"] > 0 and aug.enabled["noise"],
            "crop": cfg["synth_crop_p"] > 0 and self.crop_fraction > 0,
            "strip": cfg["synth_strip_p"] > 0 and bool(strip),
        }

    # -------------------------------------------------------------- sampling
    def sample(self, seed) -> dict[str, tf.Tensor]:
        """:meth:`Augment3D.sample`'s parameters plus the generator's, from one ``seed``.

        The generator's draws come from their own streams, so its settings
        never change the warp or the intensity transforms drawn for a seed.
        """
        seed = tf.cast(seed, tf.int64)
        p = dict(self.augment.sample(seed))
        seeds = tf.random.experimental.stateless_split(
            tf.random.experimental.stateless_fold_in(seed, _SYNTH_FOLD), len(_STREAMS))
        s = dict(zip(_STREAMS, tf.unstack(seeds)))
        cfg = self.config

        def uniform(name, shape, lo=0.0, hi=1.0, offset=1):
            sub = tf.random.experimental.stateless_fold_in(s[name], offset)
            return tf.random.stateless_uniform(shape, sub, lo, hi)

        def coin(name, key):
            return (tf.random.stateless_uniform((), s[name]) < cfg[key]) & self.enabled.get(
                name, True)

        def integer(name, hi, offset=1):
            sub = tf.random.experimental.stateless_fold_in(s[name], offset)
            return tf.random.stateless_uniform((), sub, 0, hi, tf.int32)

        p["means"] = uniform("means", (LABEL_VALUES,), *self.mean)
        p["stds"] = uniform("stds", (LABEL_VALUES,), *self.std)
        p["texture_key"] = integer("texture", 2**31 - 1)
        p["dark_background"] = coin("background", "synth_dark_background_p")
        p["slice"] = coin("slice", "synth_slice_p")
        axes = tf.constant(self.slice_axes or [0], tf.int32)
        p["slice_axis"] = tf.gather(axes, integer("slice", int(axes.shape[0])))
        p["slice_mm"] = uniform("slice", (), *self.slice_mm, offset=2)
        p["slice_phase"] = uniform("slice", (), offset=3)
        p["rician"] = coin("rician", "synth_rician_p")
        p["crop"] = coin("crop", "synth_crop_p")
        p["crop_fraction"] = uniform("crop", (3, 2), 0.0, self.crop_fraction)
        p["strip"] = coin("strip", "synth_strip_p")
        return p

    # ------------------------------------------------------------- applying
    def labels(self, p, label, out_shape: Sequence[int] | None = None, centre=None):
        """Step 1: the warped (or, without a warp, flipped) label patch."""
        label = tf.convert_to_tensor(label)
        aug = self.augment
        if aug.warps:
            if out_shape is None:
                out_shape = label.shape[:3]
            if centre is None:
                centre = (tf.cast(tf.shape(label)[:3], tf.float32) - 1.0) / 2.0
            return aug.warp_label(p, label, out_shape, centre)
        if out_shape is not None and tuple(label.shape[:3]) != tuple(int(n) for n in out_shape):
            raise ConfigError(f"without a warp the label map is the output box; got "
                              f"{tuple(label.shape[:3])} for out_shape {tuple(out_shape)}")
        return sp.flip3d(label, p["flips"]) if aug.enabled["flip"] else label

    def _field_of_view(self, p, shape):
        """(X, Y, Z) bool: inside the sampled field of view (all true without a crop)."""
        keep = None
        for axis, n in enumerate(shape):
            cut = tf.cast(tf.floor(p["crop_fraction"][axis] * n), tf.int32)
            index = tf.range(n, dtype=tf.int32)
            inside = (index >= cut[0]) & (index < n - cut[1])
            view = [1, 1, 1]
            view[axis] = n
            inside = tf.reshape(inside, view)
            keep = inside if keep is None else keep & inside
        return keep | ~p["crop"]

    def intensities(self, p, label):
        """Step 4: each voxel drawn from its label's Gaussian; (X, Y, Z, 1), clipped at 0."""
        means = tf.gather(p["means"], self.groups)
        stds = tf.gather(p["stds"], self.groups)
        dark = tf.equal(tf.range(LABEL_VALUES), 0) & p["dark_background"]
        table = tf.where(dark[:, None], 0.0, tf.stack([means, stds], axis=1))
        mean_std = tf.gather(table, tf.cast(label, tf.int32))
        texture = it.hash_normal(label.shape, p["texture_key"])
        return tf.nn.relu(mean_std[..., 0] + mean_std[..., 1] * texture)[..., None]

    def _thick_slices(self, p, x):
        branches = [lambda a=a: it.thick_slices(x, a, p["slice_mm"], self.spacing,
                                                p["slice_phase"]) for a in range(3)]
        return tf.cond(p["slice"], lambda: tf.switch_case(p["slice_axis"], branches), lambda: x)

    def _noise(self, p, x):
        aug = self.augment
        if not self.enabled["rician"]:
            return aug.intensity(p, x, ("noise",))
        return tf.cond(p["rician"] & p["noise"],
                       lambda: it.add_rician_noise(x, p["noise_std"], p["noise_key"]),
                       lambda: aug.intensity(p, x, ("noise",)))

    def _normalise(self, x):
        scheme = self.config["synth_normalise"]
        if scheme == "percentile":
            return it.rescale_percentiles(x, *self.percentiles)
        if scheme == "zscore_nonzero":
            return it.zscore_nonzero(x)
        return x

    def apply(self, params: Mapping[str, tf.Tensor], label,
              out_shape: Sequence[int] | None = None, centre=None):
        """Generate ``(image (X, Y, Z, 1) float32, label (X, Y, Z) uint8)`` from ``params``.

        ``label`` is the whole label map and the output the ``out_shape`` box
        centred at source position ``centre`` when the config warps
        (:attr:`Augment3D.warps`), else the output box itself, as in
        :meth:`Augment3D.apply`. The returned label is the generated image's
        fine label map (warped, skull-stripped and cropped).
        """
        aug = self.augment
        lab = self.labels(params, label, out_shape, centre)
        keep = tf.ones(lab.shape, tf.bool)  # where the image is not set to 0 (step 9)
        if self.enabled["strip"]:
            head = tf.gather(tf.constant(self.strip_table), tf.cast(lab, tf.int32))
            lab = tf.where(head & params["strip"], tf.zeros_like(lab), lab)
            keep = (lab > 0) | ~params["strip"]
        if self.enabled["crop"]:
            view = self._field_of_view(params, [int(n) for n in lab.shape])
            lab = tf.where(view, lab, tf.zeros_like(lab))
            keep = keep & view
        x = self.intensities(params, lab)
        x = aug.intensity(params, x, ("blur",))
        if self.enabled["slice"]:
            x = self._thick_slices(params, x)
        x = aug.intensity(params, x, ("bias", "ghosting", "motion"))
        x = self._noise(params, x)
        x = aug.intensity(params, x, ("gamma",))
        if self.enabled["strip"] or self.enabled["crop"]:
            x = tf.where(keep[..., None], x, 0.0)
        x = self._normalise(x)
        return aug.intensity(params, x, ("intensity",)), lab

    def __call__(self, label, seed=(0, 0), out_shape=None, centre=None):
        """Sample parameters from ``seed`` and apply them (eagerly; the datasets compile)."""
        return self.apply(self.sample(seed), label, out_shape, centre)
