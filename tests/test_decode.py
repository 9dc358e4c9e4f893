"""jaxkd.data._decode: the train and eval views from encoded bytes, against references."""
import io
import math

import numpy as np
import pytest
from PIL import Image

from jaxkd import data
from jaxkd.data import _decode


def _smooth(height, width, seed=0):
  """A smooth RGB image: low-frequency cosines per channel (what DCT scaling keeps)."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:height, 0:width] / max(height, width)
  channels = [sum(rng.uniform(20, 40) * np.cos(2 * np.pi * (rng.uniform(0, 3) * y
                                                            + rng.uniform(0, 3) * x)
                                               + rng.uniform(0, 6))
                  for _ in range(3)) for _ in range(3)]
  return (np.stack(channels, -1) + 128).clip(0, 255).astype(np.uint8)


def _textured(height, width, seed=0):
  rng = np.random.default_rng(seed)
  image = _smooth(height, width, seed).astype(np.float32)
  return (image + rng.normal(0, 20, image.shape)).clip(0, 255).astype(np.uint8)


def _encode(image, fmt="JPEG", mode=None, **kwargs):
  pil = Image.fromarray(image)
  pil = pil.convert(mode) if mode else pil
  out = io.BytesIO()
  pil.save(out, fmt, **kwargs)
  return out.getvalue()


def _reference_train(encoded, size, seed):
  """torchvision's PIL path written out: full decode, crop the box, resize, maybe flip."""
  full = Image.open(io.BytesIO(encoded)).convert("RGB")
  rng = np.random.default_rng(seed)
  top, left, h, w = _decode.random_resized_box(rng, full.height, full.width)
  out = np.asarray(full.crop((left, top, left + w, top + h))
                   .resize((size, size), Image.BILINEAR))
  return out[:, ::-1] if rng.random() < 0.5 else out


def _reference_eval(encoded, size):
  """Shorter side to round(size / 0.875) (whole image resized), then the central square."""
  full = Image.open(io.BytesIO(encoded)).convert("RGB")
  short = int(round(size / 0.875))
  scale = short / min(full.height, full.width)
  new_h = max(size, int(round(full.height * scale)))
  new_w = max(size, int(round(full.width * scale)))
  resized = np.asarray(full.resize((new_w, new_h), Image.BILINEAR))
  top, left = (new_h - size) // 2, (new_w - size) // 2
  return resized[top:top + size, left:left + size]


def test_box_inside_with_torchvision_area_and_aspect():
  rng = np.random.default_rng(0)
  fallbacks = 0
  for height, width in [(350, 400), (500, 375), (100, 1000), (64, 64), (1000, 120)]:
    area = height * width
    for _ in range(300):
      top, left, h, w = _decode.random_resized_box(rng, height, width)
      assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
      # One pixel of rounding on each side of the drawn real-valued box.
      slack = 1 + 1.5 / min(h, w)
      if 0.08 * area / slack <= h * w <= area and 0.75 / slack <= w / h <= 4 / 3 * slack:
        continue
      # torchvision's fallback after 10 misses: the largest centred box of clamped aspect.
      fallbacks += 1
      assert (top, left) == ((height - h) // 2, (width - w) // 2)
      assert h == height or w == width
  assert fallbacks < 100  # only the extreme aspect ratios miss 10 times


def test_box_is_a_function_of_the_stream():
  boxes = [_decode.random_resized_box(np.random.default_rng(s), 350, 400) for s in range(50)]
  again = [_decode.random_resized_box(np.random.default_rng(s), 350, 400) for s in range(50)]
  assert boxes == again and len(set(boxes)) == 50
  fractions = [h * w / (350 * 400) for _, _, h, w in boxes]
  assert min(fractions) < 0.3 and max(fractions) > 0.7


@pytest.mark.parametrize("shape", [(350, 400), (300, 200), (150, 120)])
def test_train_view_without_reduction_is_the_reference(shape):
  encoded = _encode(_textured(*shape), quality=90)
  flips = set()
  for seed in range(12):
    got = _decode.train_view(encoded, 96, np.random.default_rng(seed), draft=False)
    want = _reference_train(encoded, 96, seed)
    assert got.dtype == np.uint8 and got.shape == (96, 96, 3) and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)
    rng = np.random.default_rng(seed)
    _decode.random_resized_box(rng, *shape)
    flips.add(rng.random() < 0.5)
  assert flips == {True, False}  # both branches compared
  # A 224 view of a 350x400 image needs no reduction: draft changes nothing.
  if shape == (350, 400):
    np.testing.assert_array_equal(_decode.train_view(encoded, 224, np.random.default_rng(1)),
                                  _reference_train(encoded, 224, 1))


def test_reduction_rule():
  assert _decode.reduction(223, 1000, 224) == 1
  assert _decode.reduction(447, 500, 224) == 1
  assert _decode.reduction(448, 500, 224) == 2
  assert _decode.reduction(900, 896, 224) == 4
  assert _decode.reduction(5000, 1792, 224) == 8


def test_draft_is_close_to_the_full_decode():
  """DCT-reduced decoding against full decode, crop and resize: mean |diff| < 3 of 255."""
  encoded = _encode(_smooth(768, 1024), quality=95)
  size = 80
  used = set()
  for seed in range(12):
    _, _, h, w = _decode.random_resized_box(np.random.default_rng(seed), 768, 1024)
    used.add(_decode.reduction(h, w, size))
    fast = _decode.train_view(encoded, size, np.random.default_rng(seed)).astype(np.int16)
    full = _reference_train(encoded, size, seed).astype(np.int16)
    assert np.abs(fast - full).mean() < 3, seed
    assert np.abs(fast - full).max() < 24, seed
  assert {2, 4} <= used  # the comparison covered real reductions
  for size in (96, 200):  # eval: reductions 4 and 2 of a 768x1024 image
    fast = _decode.eval_view(encoded, size).astype(np.int16)
    assert np.abs(fast - _reference_eval(encoded, size)).mean() < 3


@pytest.mark.parametrize("shape,size", [((350, 400), 224), ((400, 300), 224), ((100, 60), 64),
                                        ((90, 300), 112), ((256, 256), 224)])
def test_eval_view_is_the_reference_geometry(shape, size):
  encoded = _encode(_textured(*shape), quality=90)
  got = _decode.eval_view(encoded, size, draft=False)
  assert got.shape == (size, size, 3)
  # Resampling only the crop equals resizing everything and cropping, up to the rounding of
  # Pillow's fixed-point filter weights.
  assert np.abs(got.astype(np.int16) - _reference_eval(encoded, size)).max() <= 1
  assert _decode.eval_geometry(*shape, size)[:2] == (
      max(size, round(shape[0] * round(size / 0.875) / min(shape))),
      max(size, round(shape[1] * round(size / 0.875) / min(shape))))


def test_grayscale_cmyk_palette_and_png_come_out_rgb():
  rgb = _smooth(120, 160)
  cases = {
      "gray jpeg": _encode(rgb, mode="L", quality=95),
      "cmyk jpeg": _encode(rgb, mode="CMYK", quality=95),
      "png": _encode(rgb, "PNG"),
      "rgba png": _encode(rgb, "PNG", mode="RGBA"),
      "palette png": _encode(rgb, "PNG", mode="P"),
      "gray png": _encode(rgb, "PNG", mode="L"),
  }
  for name, encoded in cases.items():
    train = _decode.train_view(encoded, 64, np.random.default_rng(0))
    evaluated = _decode.eval_view(encoded, 64)
    full = _decode.decode(encoded)
    for out in (train, evaluated, full):
      assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[-1] == 3, name
    assert full.shape == (120, 160, 3), name
    if "gray" in name:
      assert (train[..., 0] == train[..., 1]).all() and (train[..., 1] == train[..., 2]).all()
    elif "palette" in name:  # the web palette's colours, as Pillow converts them
      np.testing.assert_array_equal(full, np.asarray(Image.open(io.BytesIO(encoded))
                                                     .convert("RGB")))
    else:
      # The colours survive: CMYK (Adobe-inverted by Pillow's writer and reader) included.
      assert np.abs(full.astype(np.int16) - rgb).mean() < 3, name
  # A PNG's views are exactly the reference's (no DCT scaling applies).
  png = cases["png"]
  np.testing.assert_array_equal(_decode.train_view(png, 64, np.random.default_rng(3)),
                                _reference_train(png, 64, 3))
  assert _decode.image_size(png) == (120, 160)


def test_corrupt_bytes_raise_decode_error():
  good = _encode(_textured(200, 240), quality=90)
  assert issubclass(data.DecodeError, ValueError) and data.DecodeError is _decode.DecodeError
  bad = {"empty": b"", "garbage": bytes(range(256)) * 8, "truncated": good[:len(good) // 2],
         "header only": good[:300], "png truncated": _encode(_textured(64, 64), "PNG")[:200]}
  for name, encoded in bad.items():
    for view in (lambda b: _decode.train_view(b, 64, np.random.default_rng(0)),
                 lambda b: _decode.eval_view(b, 64), _decode.decode):
      with pytest.raises(data.DecodeError):
        view(encoded)
        pytest.fail(name)
  with pytest.raises(data.DecodeError, match="cannot read the image header"):
    _decode.image_size(b"not an image")
  assert math.isfinite(_decode.train_view(good, 64, np.random.default_rng(0)).mean())


def test_one_channel_for_grayscale_datasets():
  gray = _smooth(60, 80)[..., 0]
  for encoded in (_encode(gray, "PNG"), _encode(gray, quality=95),
                  _encode(np.stack([gray] * 3, -1), quality=95)):
    train = _decode.train_view(encoded, 32, np.random.default_rng(0), channels=1)
    evaluated = _decode.eval_view(encoded, 32, channels=1)
    assert train.shape == evaluated.shape == (32, 32, 1) and train.dtype == np.uint8
    assert _decode.decode(encoded, channels=1).shape == (60, 80, 1)
  # A grayscale PNG: exactly the RGB view's first channel.
  png = _encode(gray, "PNG")
  np.testing.assert_array_equal(
      _decode.train_view(png, 32, np.random.default_rng(5), channels=1)[..., 0],
      _decode.train_view(png, 32, np.random.default_rng(5))[..., 0])
  with pytest.raises(ValueError, match="channels"):
    _decode.eval_view(png, 32, channels=4)
