"""Random 3D augmentation: sample parameters, then apply them deterministically.

:meth:`Augment3D.sample` draws every parameter from a stateless seed (each
transform from its own sub-seed, so enabling one transform never changes the
draws of another); :meth:`Augment3D.apply` is a pure function of the
parameters. The same parameters move the image (trilinear) and the label
(nearest neighbour).

Patches are augmented after cutting, not the whole subject: the sampler cuts
the patch with :meth:`Augment3D.margin` extra voxels on each side, and the
warp reads from that crop. Work whose parameters are the identity is skipped
(a patch that is not warped is a plain centre crop), and the per-sample
transform is compiled with XLA, which fuses the gather and the intensity
arithmetic into few passes over memory.
"""

from __future__ import annotations

import itertools
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow as tf

from brain_tf.errors import ConfigError
from brain_tf.pipeline import intensity as it
from brain_tf.pipeline import spatial3d as sp
from brain_tf.pipeline.presets import augment_config

_STREAMS = ("flip", "affine", "elastic", "bias", "blur", "gamma", "intensity", "ghosting",
            "motion", "noise")


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
            :data:`brain_tf.pipeline.presets.DEFAULTS_3D`, optionally ``preset``) or None.
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
            raise ConfigError(f"3D augmentation: flip_axes must be within 0..2, got {cfg['flip_axes']}")
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
    def is_spatial(self) -> bool:
        """True when the transform can move voxels (needs a margin, moves labels)."""
        return any(self.enabled[k] for k in ("flip", "affine", "elastic"))

    def margin(self, out_shape: Sequence[int]) -> tuple[int, int, int]:
        """Voxels needed around an ``out_shape`` patch so warps read real data.

        The bound covers every corner of the patch under the extreme rotation
        and scale combinations, plus translation and elastic displacement,
        plus one voxel for the interpolation's upper neighbour.
        """
        if not (self.enabled["affine"] or self.enabled["elastic"]):
            return (0, 0, 0)
        half = (np.asarray(out_shape, np.float64) - 1) / 2
        spacing = np.asarray(self.spacing)
        angles = [(-r, 0.0, r) for r in self.rotation] if self.enabled["affine"] else [(0.0,)] * 3
        scales = self.scale if self.enabled["affine"] else (1.0,)
        corners = np.array(list(itertools.product(*[(-h, h) for h in half])))
        reach = np.zeros(3)
        for ax, ay, az, s in itertools.product(*angles, scales):
            m = sp.affine_matrix(np.array([ax, ay, az], np.float32), np.full(3, s, np.float32),
                                 np.zeros(3, bool), self.spacing).numpy()
            reach = np.maximum(reach, np.abs(corners @ m.T).max(axis=0) - half)
        if self.enabled["affine"]:
            reach += self.translation / spacing
        if self.enabled["elastic"]:
            reach += self.elastic_mm / spacing
        return tuple(int(np.ceil(r)) + 1 for r in np.maximum(reach, 0))

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
    def _spatial(self, p, image, label, out_shape):
        has_label = label is not None
        spacing = np.asarray(self.spacing, np.float32)

        def warp():
            matrix = sp.affine_matrix(
                tf.where(p["affine"], p["angles"], 0.0),
                tf.fill([3], tf.where(p["affine"], p["scale"], 1.0)), p["flips"], self.spacing)
            centre = (np.asarray(image.shape[:3], np.float32) - 1) / 2
            offset = centre + tf.where(p["affine"], p["translation_mm"], 0.0) / spacing
            disp = None
            if self.enabled["elastic"]:
                disp = sp.elastic_displacement(p["elastic_mm"], out_shape, self.spacing)
                disp = disp * tf.cast(p["elastic"], tf.float32)
            out, lab = sp.warp3d(image, matrix, offset, out_shape, label, disp)
            return (out, lab) if has_label else out

        def crop():
            out = sp.flip3d(sp.centre_crop(image, out_shape), p["flips"])
            if has_label:
                return out, sp.flip3d(sp.centre_crop(label, out_shape), p["flips"])
            return out

        if not (self.enabled["affine"] or self.enabled["elastic"]):
            result = crop()
        else:
            moved = p["affine"] | p["elastic"]
            result = tf.cond(moved, warp, crop)
        return result if has_label else (result, None)

    def _intensity(self, p, x):
        def maybe(flag, fn, value):
            return tf.cond(flag, lambda: fn(value), lambda: value)

        spacing = np.asarray(self.spacing, np.float32)
        if self.enabled["bias"]:
            x = maybe(p["bias"], lambda v: it.apply_bias_field(v, p["bias_log"]), x)
        if self.enabled["blur"]:
            x = maybe(p["blur"], lambda v: it.gaussian_blur3d(v, p["blur_sigma_mm"] / spacing), x)
        if self.enabled["gamma"]:
            x = maybe(p["gamma_on"], lambda v: it.adjust_gamma(v, p["gamma"]), x)
        if self.enabled["intensity"]:
            x = maybe(p["intensity"],
                      lambda v: it.brightness_contrast(v, p["contrast"], p["brightness"]), x)
        if self.enabled["ghosting"]:
            x = maybe(p["ghosting"], lambda v: tf.switch_case(p["ghost_axis"], [
                lambda a=a: it.ghosting(v, a, p["ghost_n"], p["ghost_intensity"])
                for a in range(3)]), x)
        if self.enabled["motion"]:
            x = maybe(p["motion"], lambda v: tf.switch_case(p["motion_axis"], [
                lambda a=a: it.motion(v, p["motion_mm"] / spacing, a) for a in range(3)]), x)
        if self.enabled["noise"]:
            x = maybe(p["noise"], lambda v: it.add_noise(v, p["noise_std"], p["noise_key"]), x)
        return x

    def apply(self, params: Mapping[str, tf.Tensor], image, label=None,
              out_shape: Sequence[int] | None = None):
        """Apply sampled ``params`` to ``image`` (X, Y, Z, C) and ``label`` (X, Y, Z).

        The output is the centred ``out_shape`` box (default: the input's
        shape) of the transformed source; pass a source with
        :meth:`margin` extra voxels per side. Returns ``(image, label)``.
        """
        image = tf.convert_to_tensor(image, tf.float32)
        out_shape = [int(n) for n in (out_shape or image.shape[:3])]
        x, lab = self._spatial(params, image, label, out_shape)
        x = self._intensity(params, x)
        return x, lab

    def __call__(self, image, label=None, seed=(0, 0), out_shape=None):
        """Sample parameters from ``seed`` and apply them (XLA-compiled when ``jit``)."""
        params = self.sample(seed)
        if self.is_identity:
            return self.apply(params, image, label, out_shape)
        key = (tuple(image.shape), None if label is None else tuple(label.shape),
               None if out_shape is None else tuple(int(n) for n in out_shape))
        fn = self._compiled.get(key)
        if fn is None:
            fn = tf.function(lambda p, x, y: self.apply(p, x, y, out_shape),
                             jit_compile=bool(self.config["jit"]), reduce_retracing=True)
            self._compiled[key] = fn
        return fn(params, image, label)
