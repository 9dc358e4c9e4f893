"""Host-side image views from encoded bytes: ImageNet's train crop and eval crop.

Pure functions from the encoded image (JPEG, PNG or any format Pillow reads) to a
``uint8 [S, S, 3]`` RGB array, for the streaming input pipeline:

  * `train_view`: torchvision's ``RandomResizedCrop(S)`` and a random horizontal
    flip. The box is drawn on the full image's size, read from the header, so
    the result does not depend on how the image is decoded.
  * `eval_view`: shorter side to ``round(S / 0.875)`` (256 for 224), then the
    central ``S`` square (torchvision's ``Resize`` + ``CenterCrop``).

``channels=1`` gives ``uint8 [S, S, 1]`` grayscale instead (MNIST-like datasets).

Both resize with Pillow's antialiased bilinear filter, as torchvision's PIL path
does. A JPEG that will be shrunk by 2x or more is decoded at 1/2, 1/4 or 1/8 of
its size by libjpeg's DCT scaling (``Image.draft``): the largest reduction that
keeps the crop at least ``S`` pixels on both sides, so the final resize still
shrinks (or keeps) it. Grayscale, CMYK, palette and alpha images come out RGB.
Bytes that cannot be decoded raise `DecodeError`.
"""
import io
import math
import struct

import numpy as np
from PIL import Image

__all__ = ["DecodeError", "decode", "eval_view", "image_size", "random_resized_box",
           "train_view"]

# torchvision's RandomResizedCrop defaults (the ImageNet recipe).
_SCALE = (0.08, 1.0)
_LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))
# Evaluation resizes the shorter side to size / 0.875 (256 for 224), then centre-crops.
EVAL_CROP_FRACTION = 0.875
_REDUCTIONS = (8, 4, 2)  # the DCT scalings Pillow's JPEG decoder offers
# What Pillow raises on bytes it cannot read: unknown format (UnidentifiedImageError is an
# OSError), truncated data (OSError), broken headers (SyntaxError, struct.error, ValueError,
# EOFError, IndexError in some plugins) and images over the decompression-bomb limit.
_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error,
               Image.DecompressionBombError)


class DecodeError(ValueError):
  """Encoded image bytes that could not be decoded (corrupt, truncated, unknown format)."""


def random_resized_box(rng: np.random.Generator, height: int,
                       width: int) -> tuple[int, int, int, int]:
  """torchvision ``RandomResizedCrop.get_params``: a box (top, left, h, w).

  Area a uniform fraction of [0.08, 1] of the image, aspect ratio log-uniform in
  [3/4, 4/3]; after 10 misses, the largest centred box of clamped aspect ratio.

  Args:
    rng: the random stream; the draws are torchvision's, in its order.
    height: the full image's height.
    width: the full image's width.

  Returns:
    ``(top, left, h, w)`` with the box inside the image.
  """
  area = height * width
  for _ in range(10):
    target = area * rng.uniform(*_SCALE)
    ratio = math.exp(rng.uniform(*_LOG_RATIO))
    w = int(round(math.sqrt(target * ratio)))
    h = int(round(math.sqrt(target / ratio)))
    if 0 < w <= width and 0 < h <= height:
      return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
  ratio = min(max(width / height, 3 / 4), 4 / 3)
  if width / height > ratio:
    h, w = height, int(round(height * ratio))
  else:
    w, h = width, int(round(width / ratio))
  return (height - h) // 2, (width - w) // 2, h, w


def _open(encoded: bytes) -> Image.Image:
  """The lazily opened image: header read, pixels not yet decoded."""
  try:
    return Image.open(io.BytesIO(encoded))
  except _PIL_ERRORS as err:
    raise DecodeError(f"cannot read the image header ({len(encoded)} bytes): {err}") from err


def _load(image: Image.Image, encoded: bytes) -> None:
  try:
    image.load()
  except _PIL_ERRORS as err:
    raise DecodeError(f"cannot decode the {image.format} image ({len(encoded)} bytes, "
                      f"{image.size[0]}x{image.size[1]}): {err}") from err


def image_size(encoded: bytes) -> tuple[int, int]:
  """``(height, width)`` of the full image, from its header alone.

  Raises:
    DecodeError: the bytes are not an image Pillow can read.
  """
  width, height = _open(encoded).size
  return height, width


def _check_channels(channels: int) -> None:
  if channels not in (1, 3):
    raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB); got {channels!r}.")


def _array(image: Image.Image, channels: int) -> np.ndarray:
  """``uint8 [H, W, channels]``; L -> RGB after any resize: the same pixels, a third the work."""
  if channels == 1:
    return np.array(image if image.mode == "L" else image.convert("L"))[..., None]
  return np.array(image if image.mode == "RGB" else image.convert("RGB"))


def decode(encoded: bytes, *, channels: int = 3) -> np.ndarray:
  """The full image as ``uint8 [H, W, channels]`` (RGB, or grayscale for 1).

  Raises:
    DecodeError: corrupt, truncated or unreadable bytes.
  """
  _check_channels(channels)
  image = _open(encoded)
  _load(image, encoded)
  return _array(image, channels)


def reduction(box_height: float, box_width: float, size: int) -> int:
  """The DCT reduction (1, 2, 4 or 8) for a box that is resized to ``size`` x ``size``.

  The largest that keeps the reduced box at least ``size`` pixels on both sides.
  """
  return next((r for r in _REDUCTIONS if min(box_height, box_width) >= r * size), 1)


def _draft(image: Image.Image, factor: int) -> float:
  """Asks a JPEG to decode at 1/``factor`` scale; returns the scale it will decode at."""
  if factor == 1 or image.format != "JPEG":
    return 1.0
  width, height = image.size
  # Pillow picks the largest power of two <= min(W // w, H // h): exactly `factor` here.
  drafted = image.draft(None, (width // factor, height // factor))
  return 1.0 if drafted is None else width / drafted[1][2]


def _resize(image: Image.Image, encoded: bytes, box: tuple[float, float, float, float],
            size: int, channels: int) -> Image.Image:
  """Decodes ``image`` and resizes its ``box`` (left, top, right, bottom) to size x size."""
  _load(image, encoded)
  if image.mode != "L" and (channels == 1 or image.mode != "RGB"):
    # CMYK, P, RGBA, ...: colours before resampling (and gray before, for channels=1).
    image = image.convert("L" if channels == 1 else "RGB")
  try:
    return image.resize((size, size), Image.Resampling.BILINEAR, box=box)
  except _PIL_ERRORS as err:  # a mode Pillow cannot resample
    raise DecodeError(f"cannot resize the {image.mode} image: {err}") from err


def train_view(encoded: bytes, size: int, rng: np.random.Generator, *,
               draft: bool = True, channels: int = 3) -> np.ndarray:
  """torchvision's ``RandomResizedCrop(size)`` and ``RandomHorizontalFlip()`` of an image.

  The box is drawn (`random_resized_box`) on the full image's size from the
  header, then the flip (``rng.random() < 0.5``), before anything is decoded.
  Without reduction the pixels are torchvision's: the box cropped, then resized
  with Pillow's antialiased bilinear filter. With a DCT reduction (``draft``, a
  JPEG box at least twice ``size``) the reduced box is resized instead; the
  result differs from the full decode by libjpeg's scaled IDCT (mean absolute
  difference 0.4-0.7 of 255 on textured synthetic photos).

  Args:
    encoded: the encoded image (JPEG, PNG, ...).
    size: side S of the output.
    rng: the random stream of this example.
    draft: allow JPEG DCT reduction (False: always decode the full image).
    channels: 3 for RGB, 1 for grayscale.

  Returns:
    ``uint8 [size, size, channels]``.

  Raises:
    DecodeError: corrupt, truncated or unreadable bytes.
    ValueError: ``channels`` not 1 or 3.
  """
  _check_channels(channels)
  image = _open(encoded)
  width, height = image.size
  top, left, h, w = random_resized_box(rng, height, width)
  flip = rng.random() < 0.5
  scale = _draft(image, reduction(h, w, size) if draft else 1)
  if scale == 1.0:
    # torchvision crops first, so the filter stops at the box's edges: the same here.
    _load(image, encoded)
    image = image.crop((left, top, left + w, top + h))
    out = _resize(image, encoded, (0, 0, w, h), size, channels)
  else:
    out = _resize(image, encoded,
                  (left / scale, top / scale, (left + w) / scale, (top + h) / scale), size,
                  channels)
  if flip:
    out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
  return _array(out, channels)


def eval_geometry(height: int, width: int, size: int) -> tuple[int, int, int, int]:
  """``(new_h, new_w, top, left)``: the resized image's size and the crop's corner in it."""
  short = int(round(size / EVAL_CROP_FRACTION))
  factor = short / min(height, width)
  new_h, new_w = max(size, int(round(height * factor))), max(size, int(round(width * factor)))
  return new_h, new_w, (new_h - size) // 2, (new_w - size) // 2


def eval_view(encoded: bytes, size: int, *, draft: bool = True,
              channels: int = 3) -> np.ndarray:
  """Evaluation view: shorter side to ``round(size / 0.875)``, then the central square.

  Only the central square is resampled: the same pixels as resizing the whole
  image and cropping (Pillow's filter is clipped at the image's edges either
  way). A JPEG at least twice the resized size is DCT-reduced first (``draft``).

  Args:
    encoded: the encoded image (JPEG, PNG, ...).
    size: side S of the output.
    draft: allow JPEG DCT reduction.
    channels: 3 for RGB, 1 for grayscale.

  Returns:
    ``uint8 [size, size, channels]``.

  Raises:
    DecodeError: corrupt, truncated or unreadable bytes.
    ValueError: ``channels`` not 1 or 3.
  """
  _check_channels(channels)
  image = _open(encoded)
  width, height = image.size
  new_h, new_w, top, left = eval_geometry(height, width, size)
  scale = _draft(image, reduction(height * size / new_h, width * size / new_w, size)
                 if draft else 1)
  fy, fx = height / new_h / scale, width / new_w / scale  # source pixels per output pixel
  box = (left * fx, top * fy, (left + size) * fx, (top + size) * fy)
  return _array(_resize(image, encoded, box, size, channels), channels)
