"""Independent float64 numpy references shared by the tests (PyTorch semantics), and helpers.

Written from the official code's formulas, not from jaxkd: ``nn.KLDivLoss(reduction=...)``
(``"mean"`` averages over every element, the PyTorch 1.x default; ``"batchmean"`` over the
batch; 0 where the target is 0), cross-entropy, softmax with a temperature and an optional
mask, and ``F.upsample(..., scale_factor=2, mode="bilinear")``.
"""
import jax
import numpy as np


def log_softmax(z, t=1.0, where=None):
  """``log_softmax(z / t)`` over the last axis; entries outside ``where`` are left out (0)."""
  z = np.asarray(z, np.float64) / t
  if where is not None:
    z = np.where(where, z, -np.inf)
  z = z - z.max(-1, keepdims=True)
  out = z - np.log(np.exp(z).sum(-1, keepdims=True))
  return out if where is None else np.where(where, out, 0.0)


def softmax(z, t=1.0, axis=-1):
  z = np.moveaxis(np.asarray(z, np.float64), axis, -1)
  return np.moveaxis(np.exp(log_softmax(z, t)), -1, axis)


def kl_div(log_probs, target, reduction):
  """torch ``nn.KLDivLoss(reduction=...)(log_probs, target)``; ``"none_sum"``: per-row sums."""
  target = np.asarray(target, np.float64)
  safe = np.where(target > 0, target, 1.0)
  pointwise = np.where(target > 0, target * (np.log(safe) - log_probs), 0.0)
  return {"batchmean": lambda: pointwise.sum() / len(target), "mean": pointwise.mean,
          "sum": pointwise.sum, "none_sum": lambda: pointwise.sum(-1)}[reduction]()


def cross_entropy(z, y):
  return -log_softmax(z)[np.arange(len(y)), y].mean()


def torch_bilinear_x2(x):
  """PyTorch ``F.upsample(x, scale_factor=2, mode='bilinear')`` on [B, H, W, C], align_corners
  False: source = (o + 0.5) / 2 - 0.5 clamped at 0, neighbours clamped at the edge."""
  def along(x, axis):
    n = x.shape[axis]
    src = np.maximum((np.arange(2 * n) + 0.5) / 2 - 0.5, 0.0)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    frac = (src - lo).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
    return np.take(x, lo, axis) * (1 - frac) + np.take(x, hi, axis) * frac
  return along(along(np.asarray(x, np.float64), 1), 2)


def assert_relative_close(expected, actual, tol):
  """||actual - expected|| <= tol ||expected|| over the whole pytree, and elementwise to 10 tol.

  Sharding changes the order of the batch reductions (float32 sums), so the parameters differ
  by rounding only; per-leaf relative error is not meaningful for near-zero BatchNorm biases.
  """
  a = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(expected)])
  b = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(actual)])
  assert a.shape == b.shape
  assert np.linalg.norm(b - a) <= tol * np.linalg.norm(a), np.linalg.norm(b - a) / np.linalg.norm(a)
  np.testing.assert_allclose(b, a, rtol=0, atol=10 * tol * np.abs(a).max())
