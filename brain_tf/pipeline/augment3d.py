"""Random 3D augmentation: sample parameters, then apply them deterministically.

:meth:`Augment3D.sample` draws every parameter from a stateless seed (each
transform from its own sub-seed, so enabling one transform never changes the
draws of another); :meth:`Augment3D.apply` is a pure function of the
parameters. The same parameters move the image (trilinear) and the label
(nearest neighbour).

A training patch is augmented, not the subject: the warp computes only the
patch's voxels, reading them by gather straight from the whole subject
around the sampled patch centre (no cut, no margin, no copy of the subject).
Work whose parameters are the identity is skipped: without rotation,
scaling, translation or elastic deformation in the config the patch is a
plain cut (flipped with ``tf.reverse``), and each intensity transform runs
only for the samples that drew it. The per-sample transform is compiled
with XLA, which fuses the gathers and the intensity arithmetic into few
passes over memory (about four times less CPU time than plain TF ops).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow as tf

from brain_tf.augment_presets import augment_config
from brain_tf.errors import ConfigError
from brain_tf.pipeline import intensity as it
from brain_tf.pipeline import spatial3d as sp

_STREAMS = ("flip", "affine", "elastic", "bias", "blur", "gamma", "intensity", "ghosting",
            "motion", "noise")
INTENSITY_STEPS = ("bias", "blur", "gamma", "intensity", "ghosting", "motion", "noise")
"""The intensity transforms in the order :meth:`Augment3D.apply` runs them."""


def _triple(value, key: str) -> np.ndarray:
    v = np.asarray(value, dtype=np.float32)
    if v.ndim == 0:
        v = np.full(3, float(v), np.float32)
    if v.shape != (3,):
        raise ConfigError(f"3D augmentation: {key} needs one value or three, got {value!r}")
    return np.abs(v)


def _range(value, key: str) -> tuple[float, float]:
    v = np.asarray(value, dtype=np.float32).ravel()
    if v.size == 1:
        v = np.array([v[0], v[0]])
    if v.size != 2 or v[0] > v[1]:
        raise ConfigError(f"3D augmentation: {key} must be [low, high], got {value!r}")
    return float(v[0]), float(v[1])


class Augment3D:
    """3D augmentation of channels-last volumes from a config dict or preset name.

    Args:
        config: preset name (e.g. ``"brats"``), dict (keys of
            :data:`brain_tf.augment_presets.DEFAULTS_3D`, optionally ``preset``) or None.
        spacing: voxel size in mm of the volumes it will see (for mm ranges and
            true rotations on anisotropic grids).
    """

    def __init__(self, config: str | Mapping[str, Any] | None = None,
                 spacing: Sequence[float] = (1.0, 1.0, 1.0)):
        dims, cfg = augment_config(config, dims=3)
        if dims != 3:
            raise ConfigError("Augment3D needs a 3D augmentation config; use Augment2D for slices")
        self.config = cfg
        self.spacing = tuple(float(s) for s in spacing)
        self.flip_axes = sorted({int(a) for a in cfg["flip_axes"]})
        if any(a not in (0, 1, 2) for a in self.flip_axes):
            raise ConfigError(f"3D augmentation: flip_axes must be within 0..2, "
                              f"got {cfg['flip_axes']}")
        self.rotation = np.deg2rad(_triple(cfg["rotation_deg"], "rotation_deg"))
        self.scale = _range(cfg["scale"], "scale")
        self.translation = _triple(cfg["translation_mm"], "translation_mm")
        self.elastic_mm = abs(float(cfg["elastic_mm"]))
        self.bias = abs(float(cfg["bias_coefficient"]))
        self.blur = _range(cfg["blur_sigma_mm"], "blur_sigma_mm")
        self.gamma = _range(cfg["gamma"], "gamma")
        self.contrast = _range(cfg["contrast"], "contrast")
        self.brightness = _range(cfg["brightness"], "brightness")
        self.ghost_n = tuple(int(v) for v in _range(cfg["ghosting_ghosts"], "ghosting_ghosts"))
        self.ghost_intensity = _range(cfg["ghosting_intensity"], "ghosting_intensity")
        self.motion_mm = abs(float(cfg["motion_mm"]))
        self.noise = _range(cfg["noise_std"], "noise_std")
        if self.scale[0] <= 0 or self.gamma[0] <= 0:
            raise ConfigError("3D augmentation: scale and gamma must be positive")
        for key in ("elastic_points", "bias_points"):
            if int(cfg[key]) < 4:
                raise ConfigError(f"3D augmentation: {key} must be at least 4")
        if self.ghost_n[0] < 2:
            raise ConfigError("3D augmentation: ghosting_ghosts must be at least 2")
        # which transforms can ever do something (the others are not built at all)
        self.enabled = {
            "flip": bool(self.flip_axes) and cfg["flip_p"] > 0,
            "affine": cfg["affine_p"] > 0 and (self.rotation.any() or self.translation.any()
                                               or self.scale != (1.0, 1.0)),
            "elastic": cfg["elastic_p"] > 0 and self.elastic_mm > 0,
            "bias": cfg["bias_p"] > 0 and self.bias > 0,
            "blur": cfg["blur_p"] > 0 and self.blur[1] > 0,
            "gamma": cfg["gamma_p"] > 0 and self.gamma != (1.0, 1.0),
            "intensity": cfg["intensity_p"] > 0 and (self.contrast != (1.0, 1.0)
                                                     or self.brightness != (0.0, 0.0)),
            "ghosting": cfg["ghosting_p"] > 0 and self.ghost_intensity[1] > 0
                        and bool(cfg["ghosting_axes"]),
            "motion": cfg["motion_p"] > 0 and self.motion_mm > 0 and bool(cfg["motion_axes"]),
            "noise": cfg["noise_p"] > 0 and self.noise[1] > 0,
        }
        self._compiled: dict = {}

    # --------------------------------------------------------------- queries
    @property
    def is_identity(self) -> bool:
        """True when no transform can change anything."""
        return not any(self.enabled.values())

    @property
    def warps(self) -> bool:
        """True when samples are resampled (affine or elastic): they read from the whole source."""
        return self.enabled["affine"] or self.enabled["elastic"]

    # -------------------------------------------------------------- sampling
    def sample(self, seed) -> dict[str, tf.Tensor]:
        """Draw all parameters from a stateless ``seed`` (shape (2,) integers)."""
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), len(_STREAMS))
        s = dict(zip(_STREAMS, tf.unstack(seeds)))
        cfg = self.config

        def coin(name, p):
            return tf.random.stateless_uniform((), s[name]) < p

        def uniform(name, shape, lo, hi, offset=1):
            sub = tf.random.experimental.stateless_fold_in(s[name], offset)
            return tf.random.stateless_uniform(shape, sub, lo, hi)

        p: dict[str, tf.Tensor] = {}
        flips = np.zeros(3, bool)
        flips[self.flip_axes] = True
        p["flips"] = (uniform("flip", (3,), 0.0, 1.0) < cfg["flip_p"]) & flips
        p["affine"] = coin("affine", cfg["affine_p"]) & self.enabled["affine"]
        p["angles"] = uniform("affine", (3,), -1.0, 1.0) * self.rotation
        p["scale"] = uniform("affine", (), *self.scale, offset=2)
        p["translation_mm"] = uniform("affine", (3,), -1.0, 1.0, offset=3) * self.translation
        n = int(cfg["elastic_points"])
        p["elastic"] = coin("elastic", cfg["elastic_p"]) & self.enabled["elastic"]
        p["elastic_mm"] = uniform("elastic", (n, n, n, 3), -self.elastic_mm, self.elastic_mm)
        n = int(cfg["bias_points"])
        p["bias"] = coin("bias", cfg["bias_p"]) & self.enabled["bias"]
        p["bias_log"] = uniform("bias", (n, n, n), -self.bias, self.bias)
        p["blur"] = coin("blur", cfg["blur_p"]) & self.enabled["blur"]
        p["blur_sigma_mm"] = uniform("blur", (3,), *self.blur)
        p["gamma_on"] = coin("gamma", cfg["gamma_p"]) & self.enabled["gamma"]
        p["gamma"] = uniform("gamma", (), *self.gamma)
        p["intensity"] = coin("intensity", cfg["intensity_p"]) & self.enabled["intensity"]
        p["contrast"] = uniform("intensity", (), *self.contrast)
        p["brightness"] = uniform("intensity", (), *self.brightness, offset=2)
        axes = tf.constant([int(a) for a in cfg["ghosting_axes"]] or [0], tf.int32)
        p["ghosting"] = coin("ghosting", cfg["ghosting_p"]) & self.enabled["ghosting"]
        p["ghost_axis"] = tf.gather(axes, tf.random.stateless_uniform(
            (), tf.random.experimental.stateless_fold_in(s["ghosting"], 1), 0,
            int(axes.shape[0]), tf.int32))
        p["ghost_n"] = tf.random.stateless_uniform(
            (), tf.random.experimental.stateless_fold_in(s["ghosting"], 2), self.ghost_n[0],
            self.ghost_n[1] + 1, tf.int32)
        p["ghost_intensity"] = uniform("ghosting", (), *self.ghost_intensity, offset=3)
        axes = tf.constant([int(a) for a in cfg["motion_axes"]] or [0], tf.int32)
        p["motion"] = coin("motion", cfg["motion_p"]) & self.enabled["motion"]
        p["motion_axis"] = tf.gather(axes, tf.random.stateless_uniform(
            (), tf.random.experimental.stateless_fold_in(s["motion"], 1), 0,
            int(axes.shape[0]), tf.int32))
        p["motion_mm"] = uniform("motion", (int(cfg["motion_segments"]), 3), -self.motion_mm,
                                 self.motion_mm, offset=2)
        p["noise"] = coin("noise", cfg["noise_p"]) & self.enabled["noise"]
        p["noise_std"] = uniform("noise", (), *self.noise)
        p["noise_key"] = tf.random.stateless_uniform(
            (), tf.random.experimental.stateless_fold_in(s["noise"], 1), 0, 2**31 - 1, tf.int32)
        return p

    # ------------------------------------------------------------- applying
    def _mapping(self, p, out_shape, centre):
        """(matrix, offset, displacement or None) of the sampled warp around ``centre``."""
        spacing = np.asarray(self.spacing, np.float32)
        matrix = sp.affine_matrix(
            tf.where(p["affine"], p["angles"], 0.0),
            tf.fill([3], tf.where(p["affine"], p["scale"], 1.0)), p["flips"], self.spacing)
        offset = tf.cast(centre, tf.float32) + tf.where(
            p["affine"], p["translation_mm"], 0.0) / spacing
        disp = None
        if self.enabled["elastic"]:
            disp = sp.elastic_displacement(p["elastic_mm"], out_shape, self.spacing)
            disp = disp * tf.cast(p["elastic"], tf.float32)
        return matrix, offset, disp

    def _warp(self, p, image, label, out_shape, centre):
        matrix, offset, disp = self._mapping(p, out_shape, centre)
        return sp.warp3d(image, matrix, offset, out_shape, label, disp)

    def _steps(self) -> dict:
        """Intensity step name -> fn(params, x), for the enabled steps, in the order applied."""
        spacing = np.asarray(self.spacing, np.float32)
        steps = {
            "bias": (lambda p, v: it.apply_bias_field(v, p["bias_log"]), "bias"),
            "blur": (lambda p, v: it.gaussian_blur3d(v, p["blur_sigma_mm"] / spacing), "blur"),
            "gamma": (lambda p, v: it.adjust_gamma(v, p["gamma"]), "gamma_on"),
            "intensity": (lambda p, v: it.brightness_contrast(v, p["contrast"], p["brightness"]),
                          "intensity"),
            "ghosting": (lambda p, v: tf.switch_case(p["ghost_axis"], [
                lambda a=a: it.ghosting(v, a, p["ghost_n"], p["ghost_intensity"])
                for a in range(3)]), "ghosting"),
            "motion": (lambda p, v: tf.switch_case(p["motion_axis"], [
                lambda a=a: it.motion(v, p["motion_mm"] / spacing, a) for a in range(3)]),
                "motion"),
            "noise": (lambda p, v: it.add_noise(v, p["noise_std"], p["noise_key"]), "noise"),
        }
        return {name: step for name, step in steps.items() if self.enabled[name]}

    def intensity(self, p, x, steps: Sequence[str] = INTENSITY_STEPS):
        """Apply the enabled intensity ``steps`` (names of :data:`INTENSITY_STEPS`, in the
        order given) with sampled parameters ``p``; each runs only where its coin came up."""
        unknown = sorted(set(steps) - set(INTENSITY_STEPS))
        if unknown:
            raise ConfigError(f"unknown intensity steps {unknown}; choose from {INTENSITY_STEPS}")
        enabled = self._steps()
        for name in steps:
            if name in enabled:
                fn, flag = enabled[name]
                x = tf.cond(p[flag], lambda v=x, f=fn: f(p, v), lambda v=x: v)
        return x

    def warp_label(self, p, label, out_shape: Sequence[int], centre):
        """The sampled warp of ``label`` (X, Y, Z) alone (nearest neighbour), as :meth:`apply`
        moves it; needs :attr:`warps`."""
        out_shape = [int(n) for n in out_shape]
        matrix, offset, disp = self._mapping(p, out_shape, centre)
        return sp.warp_label3d(label, matrix, offset, out_shape, disp)

    def apply(self, params: Mapping[str, tf.Tensor], image, label=None,
              out_shape: Sequence[int] | None = None, centre=None):
        """Apply sampled ``params`` to ``image`` (X, Y, Z, C) and ``label`` (X, Y, Z).

        When the config warps (:attr:`warps`), the output is the ``out_shape``
        box (default: the input's shape) whose centre sits at source position
        ``centre`` (default: the source's centre), read from the whole source;
        outside the source is 0. Otherwise ``image`` is the output box itself
        (only flipped and intensity-transformed). Returns ``(image, label)``.
        """
        image = tf.convert_to_tensor(image, tf.float32)
        if self.warps:
            if out_shape is None:
                out_shape = image.shape[:3]
            if centre is None:
                centre = (tf.cast(tf.shape(image)[:3], tf.float32) - 1.0) / 2.0
            x, lab = self._warp(params, image, label, [int(n) for n in out_shape], centre)
        else:
            if out_shape is not None and tuple(image.shape[:3]) != tuple(int(n) for n in out_shape):
                raise ConfigError(f"without a warp the input is the output box; got "
                                  f"{tuple(image.shape[:3])} for out_shape {tuple(out_shape)}")
            x, lab = image, label
            if self.enabled["flip"]:
                x = sp.flip3d(x, params["flips"])
                lab = None if lab is None else sp.flip3d(lab, params["flips"])
        return self.intensity(params, x), lab

    def __call__(self, image, label=None, seed=(0, 0), out_shape=None, centre=None):
        """Sample parameters from ``seed`` and apply them (XLA-compiled when ``jit``)."""
        params = self.sample(seed)
        if self.is_identity:
            return self.apply(params, image, label, out_shape, centre)
        key = (label is None, centre is None,
               None if out_shape is None else tuple(int(n) for n in out_shape))
        fn = self._compiled.get(key)
        if fn is None:
            fn = tf.function(lambda p, x, y, c: self.apply(p, x, y, out_shape, c),
                             jit_compile=bool(self.config["jit"]), reduce_retracing=True)
            self._compiled[key] = fn
        return fn(params, image, label, centre)
