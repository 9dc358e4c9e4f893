"""On-device augmentation (random crop, flip, rotation) and per-channel normalisation.

Everything here is jit-able and runs inside the training step on batches that
already live on the device; the whole augmentation is one gather per batch.
"""
import math
import numbers
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp

__all__ = ["AugmentParams", "device_augment", "normalize", "sample_params",
           "apply_params", "INTERPOLATIONS"]

INTERPOLATIONS = ("nearest", "bilinear")


class AugmentParams(NamedTuple):
  """The random choices of one batch.

  Attributes:
    offsets: ``int32 [B, 2]`` crop corner ``(dy, dx)`` in the zero-padded image,
      each in ``[0, 2 * crop_padding]`` (``crop_padding`` means no shift).
    flips: ``bool [B]`` whether the example is mirrored left-right.
    angles: ``float32 [B]`` counter-clockwise rotation in degrees.
  """
  offsets: jax.Array
  flips: jax.Array
  angles: jax.Array


def _check(images, crop_padding, flip, rotation_degrees, interpolation):
  if images.ndim != 4:
    raise ValueError(f"images must be [B, H, W, C]; got shape {images.shape}.")
  if (not isinstance(crop_padding, numbers.Integral) or isinstance(crop_padding, bool)
      or crop_padding < 0):
    raise ValueError(f"crop_padding must be a non-negative Python int; got {crop_padding!r}.")
  if not isinstance(flip, bool):
    raise ValueError(f"flip must be a Python bool; got {flip!r}.")
  if not isinstance(rotation_degrees, numbers.Real) or not 0 <= rotation_degrees <= 180:
    raise ValueError("rotation_degrees must be a Python number in [0, 180]; got "
                     f"{rotation_degrees!r}.")
  if interpolation not in INTERPOLATIONS:
    raise ValueError(f"interpolation must be one of {INTERPOLATIONS}; got {interpolation!r}.")


def sample_params(rng: jax.Array, batch: int, *, crop_padding: int, flip: bool,
                  rotation_degrees: float) -> AugmentParams:
  """Draws the crop offsets, flips and angles of a batch from ``rng``.

  As torchvision: crop corner uniform over ``[0, 2p]^2``, flip with probability
  1/2, angle uniform in ``[-rotation_degrees, rotation_degrees]``. A disabled
  part gets its identity value.
  """
  k_crop, k_flip, k_angle = jax.random.split(rng, 3)
  if crop_padding:
    offsets = jax.random.randint(k_crop, (batch, 2), 0, 2 * crop_padding + 1, jnp.int32)
  else:
    offsets = jnp.zeros((batch, 2), jnp.int32)
  flips = (jax.random.bernoulli(k_flip, 0.5, (batch,)) if flip
           else jnp.zeros((batch,), bool))
  if rotation_degrees:
    angles = jax.random.uniform(k_angle, (batch,), jnp.float32,
                                -rotation_degrees, rotation_degrees)
  else:
    angles = jnp.zeros((batch,), jnp.float32)
  return AugmentParams(offsets, flips, angles)


def _read(image, rows, cols, offset, flipped, padding):
  """Pixels at integer (rows, cols) of the cropped-then-flipped image; 0 outside."""
  h, w = image.shape[:2]
  valid = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
  src_rows = rows + offset[0] - padding
  src_cols = jnp.where(flipped, w - 1 - cols, cols) + offset[1] - padding
  valid &= (src_rows >= 0) & (src_rows < h) & (src_cols >= 0) & (src_cols < w)
  pixels = image[jnp.clip(src_rows, 0, h - 1), jnp.clip(src_cols, 0, w - 1)]
  return jnp.where(valid[..., None], pixels, jnp.zeros((), image.dtype))


def _augment_one(image, offset, flipped, angle, *, padding, rotate, interpolation):
  """Crop, then flip, then rotate one ``[H, W, C]`` image (torchvision's order)."""
  h, w = image.shape[:2]
  rows = jnp.arange(h, dtype=jnp.int32)[:, None] * jnp.ones((1, w), jnp.int32)
  cols = jnp.arange(w, dtype=jnp.int32)[None, :] * jnp.ones((h, 1), jnp.int32)
  if not rotate:
    return _read(image, rows, cols, offset, flipped, padding)
  # Inverse map about the image centre: output pixel (r, c) samples the source
  # point rotated clockwise by `angle`, so the picture turns counter-clockwise.
  theta = jnp.deg2rad(angle)
  cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
  y, x = rows - cy, cols - cx
  src_r = jnp.sin(theta) * x + jnp.cos(theta) * y + cy
  src_c = jnp.cos(theta) * x - jnp.sin(theta) * y + cx
  if interpolation == "nearest":
    near = lambda v: jnp.floor(v + 0.5).astype(jnp.int32)
    return _read(image, near(src_r), near(src_c), offset, flipped, padding)
  r0, c0 = jnp.floor(src_r), jnp.floor(src_c)
  fr, fc = (src_r - r0)[..., None], (src_c - c0)[..., None]
  r0, c0 = r0.astype(jnp.int32), c0.astype(jnp.int32)
  corner = lambda dr, dc: _read(image, r0 + dr, c0 + dc, offset, flipped,
                                padding).astype(jnp.promote_types(image.dtype, jnp.float32))
  out = ((1 - fr) * ((1 - fc) * corner(0, 0) + fc * corner(0, 1))
         + fr * ((1 - fc) * corner(1, 0) + fc * corner(1, 1)))
  if jnp.issubdtype(image.dtype, jnp.integer):
    info = jnp.iinfo(image.dtype)
    out = jnp.clip(jnp.round(out), info.min, info.max)
  return out.astype(image.dtype)


def apply_params(images: jax.Array, params: AugmentParams, *, crop_padding: int,
                 rotate: bool = True, interpolation: str = "nearest") -> jax.Array:
  """Applies given crop offsets, flips and angles to ``[B, H, W, C]`` images."""
  fn = lambda im, o, f, a: _augment_one(im, o, f, a, padding=crop_padding,
                                        rotate=rotate, interpolation=interpolation)
  return jax.vmap(fn)(images, params.offsets, params.flips, params.angles)


def device_augment(rng: jax.Array, images: jax.Array, *, crop_padding: int = 4,
                   flip: bool = True, rotation_degrees: float = 15.0,
                   interpolation: str = "nearest") -> jax.Array:
  """Per-example random crop with zero padding, horizontal flip and rotation.

  The Tf-KD CIFAR recipe (Yuan et al., CVPR 2020): torchvision's
  ``RandomCrop(H, padding=p)``, ``RandomHorizontalFlip()``,
  ``RandomRotation(deg)``, in that order. Rotation is about the image centre by
  an angle uniform in ``[-deg, deg]``, counter-clockwise for positive angles,
  with torchvision's defaults of nearest interpolation and zero fill
  (``interpolation="bilinear"`` interpolates with zero padding instead).

  Padding and fill are zeros in the input's units, so apply this to raw pixels
  (uint8, or float in 0..255) before ``normalize``, as torchvision does. Each
  example gets its own crop, flip and angle; the output stays on the input's
  devices with the input's sharding.

  Args:
    rng: a PRNG key.
    images: ``[B, H, W, C]`` of any dtype; nearest sampling copies values.
    crop_padding: static; zero padding on each side; 0 disables the crop.
    flip: static; False disables the flip.
    rotation_degrees: static; maximum angle in degrees; 0 disables rotation.
    interpolation: static; ``"nearest"`` (torchvision's default) or ``"bilinear"``.

  Returns:
    Augmented images, same shape and dtype as ``images``.
  """
  images = jnp.asarray(images)
  _check(images, crop_padding, flip, rotation_degrees, interpolation)
  params = sample_params(rng, images.shape[0], crop_padding=crop_padding, flip=flip,
                         rotation_degrees=rotation_degrees)
  return apply_params(images, params, crop_padding=crop_padding,
                      rotate=bool(rotation_degrees), interpolation=interpolation)


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float], *,
              max_value: float = 255.0, dtype: Any = jnp.float32) -> jax.Array:
  """Per-channel normalisation ``(x / max_value - mean) / std`` in float32 (or ``dtype``).

  torchvision's ``ToTensor()`` then ``Normalize(mean, std)``.

  Args:
    images: ``[..., C]`` pixels in 0..max_value (uint8 or float).
    mean: C per-channel means in [0, 1] units.
    std: C per-channel standard deviations in [0, 1] units.
    max_value: the pixel value of white: 255 for uint8 images, 1 for images already scaled.
    dtype: the result's floating dtype (float64 in the float64 verification mode).

  Returns:
    A ``dtype`` array of the shape of ``images``.
  """
  images = jnp.asarray(images)
  mean, std = tuple(mean), tuple(std)
  channels = images.shape[-1] if images.ndim else None
  if len(mean) != channels or len(std) != channels:
    raise ValueError(f"mean and std need one entry per channel ({channels}); got "
                     f"mean={mean}, std={std}.")
  if any(isinstance(s, numbers.Real) and not 0 < s < math.inf for s in std):
    raise ValueError(f"std must be positive and finite; got {std}.")
  x = images.astype(dtype) / max_value
  return (x - jnp.asarray(mean, dtype)) / jnp.asarray(std, dtype)
