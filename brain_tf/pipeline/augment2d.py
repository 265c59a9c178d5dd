"""Random 2D augmentation of slices (systems D and E), in TF ops.

One projective transform per sample combines flips, rotation, zoom, shift,
shear and a perspective warp (the four corners moved at random); it is
applied with ``ImageProjectiveTransformV3`` to the image (bilinear) and to the
mask (nearest) with the same fill mode (reflect, nearest, constant or wrap).
Lighting changes brightness (a factor) and contrast (a factor about each
channel's mean). As in 3D, :meth:`Augment2D.sample` draws the parameters and
:meth:`Augment2D.apply` is a deterministic function of them.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import tensorflow as tf

from brain_tf.augment_presets import augment_config
from brain_tf.errors import ConfigError

FILL_MODES = ("reflect", "nearest", "constant", "wrap")


def _pair(value, key: str) -> tuple[float, float]:
    v = np.asarray(value, dtype=np.float32).ravel()
    if v.size == 1:
        v = np.array([v[0], v[0]])
    if v.size != 2 or v[0] > v[1] or v[0] <= 0:
        raise ConfigError(f"2D augmentation: {key} must be a positive [low, high], got {value!r}")
    return float(v[0]), float(v[1])


def homography(src, dst):
    """3x3 matrix H with H @ [src, 1] ~ [dst, 1] for four (x, y) point pairs."""
    src = tf.cast(src, tf.float32)
    dst = tf.cast(dst, tf.float32)
    rows = []
    rhs = []
    for i in range(4):
        x, y = src[i, 0], src[i, 1]
        u, v = dst[i, 0], dst[i, 1]
        rows.append(tf.stack([x, y, 1.0, 0.0, 0.0, 0.0, -x * u, -y * u]))
        rows.append(tf.stack([0.0, 0.0, 0.0, x, y, 1.0, -x * v, -y * v]))
        rhs += [u, v]
    h = tf.linalg.solve(tf.stack(rows), tf.stack(rhs)[:, None])[:, 0]
    return tf.reshape(tf.concat([h, [1.0]], 0), (3, 3))


def projective_matrix(shape, flips, angle, zoom, shift, shear, corner_offsets):
    """Output-to-input 3x3 matrix (x = column, y = row) for one slice of ``shape`` (rows, cols).

    Args:
        flips: (2,) booleans, mirror columns (horizontal) and rows (vertical).
        angle, shear: radians. zoom: > 1 zooms in. shift: (2,) pixels (x, y).
        corner_offsets: (4, 2) pixel offsets of the corners for the perspective warp.
    """
    rows, cols = int(shape[0]), int(shape[1])
    cx, cy = (cols - 1) / 2.0, (rows - 1) / 2.0
    corners = tf.constant([[0.0, 0.0], [cols - 1.0, 0.0], [cols - 1.0, rows - 1.0],
                           [0.0, rows - 1.0]])
    persp = homography(corners, corners + tf.cast(corner_offsets, tf.float32))
    f = tf.where(tf.cast(flips, tf.bool), -1.0, 1.0)
    c, s = tf.cos(angle), tf.sin(angle)
    zero, one = tf.zeros_like(c), tf.ones_like(c)
    rot = tf.reshape(tf.stack([c, -s, zero, s, c, zero, zero, zero, one]), (3, 3))
    shr = tf.reshape(tf.stack([one, -tf.sin(shear), zero, zero, tf.cos(shear), zero,
                               zero, zero, one]), (3, 3))
    inv_zoom = 1.0 / tf.cast(zoom, tf.float32)
    scale = tf.linalg.diag(tf.stack([inv_zoom * f[0], inv_zoom * f[1], one]))
    to_centre = tf.constant([[1.0, 0.0, -cx], [0.0, 1.0, -cy], [0.0, 0.0, 1.0]])
    shift = tf.cast(shift, tf.float32)
    back = tf.reshape(tf.stack([one, zero, cx + shift[0], zero, one, cy + shift[1],
                                zero, zero, one]), (3, 3))
    m = back @ rot @ shr @ scale @ to_centre @ persp
    return m / m[2, 2]


def warp2d(image, matrix, interpolation: str = "BILINEAR", fill_mode: str = "reflect",
           fill_value: float = 0.0):
    """Resample ``image`` (rows, cols, c) at ``matrix`` @ output positions (same shape)."""
    rows, cols = int(image.shape[0]), int(image.shape[1])
    transform = tf.reshape(matrix, (-1,))[:8][None, :]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(image, tf.float32)[None], transforms=transform,
        output_shape=tf.constant([rows, cols], tf.int32),
        fill_value=tf.constant(fill_value, tf.float32), interpolation=interpolation,
        fill_mode=fill_mode.upper())
    return out[0]


def lighting(image, brightness, contrast):
    """``((x - mean) * contrast + mean) * brightness`` with per-channel means."""
    mean = tf.reduce_mean(image, axis=(0, 1), keepdims=True)
    return ((image - mean) * tf.cast(contrast, tf.float32) + mean) * tf.cast(brightness, tf.float32)


class Augment2D:
    """2D slice augmentation from a preset name (``"lgg"``, ``"tcga_gbm"``) or dict.

    Keys: :data:`brain_tf.augment_presets.DEFAULTS_2D`.
    """

    def __init__(self, config: str | Mapping[str, Any] | None = None):
        dims, cfg = augment_config(config, dims=2)
        if dims != 2:
            raise ConfigError("Augment2D needs a 2D augmentation config; use Augment3D for volumes")
        if cfg["fill_mode"] not in FILL_MODES:
            raise ConfigError(f"2D augmentation: fill_mode must be one of {FILL_MODES}, "
                              f"not {cfg['fill_mode']!r}")
        self.config = cfg
        self.zoom = _pair(cfg["zoom"], "zoom")
        self.brightness = _pair(cfg["brightness"], "brightness")
        self.contrast = _pair(cfg["contrast"], "contrast")
        self.rotation = np.deg2rad(abs(float(cfg["rotation_deg"])))
        self.shear = np.deg2rad(abs(float(cfg["shear_deg"])))
        self.shift = abs(float(cfg["shift"]))
        self.perspective = abs(float(cfg["perspective"]))
        self.affine_enabled = cfg["affine_p"] > 0 and (
            self.rotation > 0 or self.shear > 0 or self.shift > 0 or self.perspective > 0
            or self.zoom != (1.0, 1.0))
        self.flip_enabled = cfg["flip_horizontal"] > 0 or cfg["flip_vertical"] > 0
        self.lighting_enabled = cfg["lighting_p"] > 0 and (
            self.brightness != (1.0, 1.0) or self.contrast != (1.0, 1.0))

    @property
    def is_identity(self) -> bool:
        return not (self.affine_enabled or self.flip_enabled or self.lighting_enabled)

    def sample(self, seed, shape) -> dict[str, tf.Tensor]:
        """Parameters for one slice of ``shape`` (rows, cols) from a stateless ``seed``."""
        seeds = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 9))
        cfg = self.config
        rows, cols = int(shape[0]), int(shape[1])

        def uniform(i, shape_, lo, hi):
            return tf.random.stateless_uniform(shape_, seeds[i], lo, hi)

        flip_p = tf.constant([cfg["flip_horizontal"], cfg["flip_vertical"]], tf.float32)
        on = uniform(0, (3,), 0.0, 1.0)
        half = tf.constant([cols / 2.0, rows / 2.0])
        size = tf.constant([cols, rows], tf.float32)
        return {
            "flips": uniform(1, (2,), 0.0, 1.0) < flip_p,
            "affine": (on[0] < cfg["affine_p"]) & self.affine_enabled,
            "angle": uniform(2, (), -self.rotation, self.rotation),
            "zoom": uniform(3, (), *self.zoom),
            "shift": uniform(4, (2,), -self.shift, self.shift) * size,
            "shear": uniform(5, (), -self.shear, self.shear),
            "corners": uniform(6, (4, 2), -self.perspective, self.perspective) * half,
            "lighting": (on[1] < cfg["lighting_p"]) & self.lighting_enabled,
            "brightness": uniform(7, (), *self.brightness),
            "contrast": uniform(8, (), *self.contrast),
        }

    def matrix(self, params, shape):
        """The output-to-input matrix of ``params`` (identity where the affine is off)."""
        on = params["affine"]
        return projective_matrix(
            shape, params["flips"], tf.where(on, params["angle"], 0.0),
            tf.where(on, params["zoom"], 1.0), tf.where(on, params["shift"], 0.0),
            tf.where(on, params["shear"], 0.0), tf.where(on, params["corners"], 0.0))

    def apply(self, params, image, mask=None):
        """Apply ``params`` to ``image`` (rows, cols, c) and ``mask`` (rows, cols)."""
        image = tf.convert_to_tensor(image, tf.float32)
        shape = image.shape[:2]
        fill = self.config["fill_mode"]
        if self.affine_enabled or self.flip_enabled:
            m = self.matrix(params, shape)
            image = warp2d(image, m, "BILINEAR", fill)
            if mask is not None:
                mask = warp2d(tf.cast(mask, tf.float32)[..., None], m, "NEAREST", fill)[..., 0]
                mask = tf.cast(tf.round(mask), tf.uint8)
        if self.lighting_enabled:
            image = tf.cond(params["lighting"],
                            lambda: lighting(image, params["brightness"], params["contrast"]),
                            lambda: image)
        return image, mask

    def __call__(self, image, mask=None, seed=(0, 0)):
        """Sample parameters from ``seed`` and apply them."""
        return self.apply(self.sample(seed, image.shape[:2]), image, mask)
