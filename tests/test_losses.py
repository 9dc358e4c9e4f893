"""jaxkd.losses against float64 numpy statements of PyTorch's CE / KLDivLoss semantics."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd import losses
from references import kl_div as torch_kl_div
from references import log_softmax as np_log_softmax

B, K = 5, 7


def data(seed=0):
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(B, K)) * 3
  q = rng.dirichlet(np.ones(K), size=B)
  q[0, 2] = 0.0  # a zero target entry must add 0
  q[0] /= q[0].sum()
  return z.astype(np.float32), q.astype(np.float32)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_cross_entropy_matches_numpy(temperature):
  z, q = data()
  got = jax.jit(lambda z, q: losses.softmax_cross_entropy(z, q, temperature=temperature))(z, q)
  want = -(q * np_log_softmax(z, temperature)).sum(-1)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  assert got.dtype == jnp.float32


@pytest.mark.parametrize("reduction,torch_name", [("batchmean", "batchmean"),
                                                  ("elementwise_mean", "mean")])
@pytest.mark.parametrize("temperature,squared", [(1.0, False), (4.0, True), (20.0, False)])
def test_kl_matches_torch_kldivloss(reduction, torch_name, temperature, squared):
  z, q = data(1)
  per_example = losses.kl_divergence(z, q, temperature=temperature, temperature_squared=squared,
                                     kl_reduction=reduction)
  want = torch_kl_div(np_log_softmax(z, temperature), q.astype(np.float64), torch_name)
  want *= temperature ** 2 if squared else 1.0
  np.testing.assert_allclose(jnp.mean(per_example), want, rtol=1e-6, atol=1e-7)


def test_elementwise_mean_is_batchmean_over_k():
  z, q = data(2)
  batchmean = losses.kl_divergence(z, q, kl_reduction="batchmean")
  elementwise = losses.kl_divergence(z, q, kl_reduction="elementwise_mean")
  np.testing.assert_allclose(elementwise * K, batchmean, rtol=1e-6)


def test_masked_kl_renormalises_over_the_kept_classes():
  z, q = data(3)
  labels = np.array([0, 3, 6, 1, 2])
  keep = np.arange(K)[None] != labels[:, None]
  q = np.where(keep, q, 0.0)
  q /= q.sum(-1, keepdims=True)
  got = losses.kl_divergence(z, q, where=jnp.asarray(keep))
  # Reference: drop the label column, as the Zipf code does with a boolean index.
  for i in range(B):
    zi, qi = z[i][keep[i]], q[i][keep[i]]
    want = torch_kl_div(np_log_softmax(zi[None]), qi[None].astype(np.float64), "none_sum")[0]
    np.testing.assert_allclose(got[i], want, rtol=1e-6, atol=1e-7)
  elementwise = losses.kl_divergence(z, q, where=jnp.asarray(keep),
                                     kl_reduction="elementwise_mean")
  np.testing.assert_allclose(elementwise * (K - 1), got, rtol=1e-6)


def test_gradients_match_finite_differences():
  z, q = data(4)
  keep = np.arange(K)[None] != np.array([1, 2, 3, 4, 5])[:, None]

  def np_loss(z64):
    kl = torch_kl_div(np_log_softmax(z64, 3.0), q.astype(np.float64), "batchmean") * 9.0
    masked = torch_kl_div(np_log_softmax(z64, where=keep), np.where(keep, q, 0.0), "none_sum")
    return kl + masked.mean() - (q * np_log_softmax(z64, 2.0)).sum(-1).mean()

  def jax_loss(z):
    kl = losses.kl_divergence(z, q, temperature=3.0, temperature_squared=True)
    masked = losses.kl_divergence(z, np.where(keep, q, 0.0), where=jnp.asarray(keep))
    ce = losses.softmax_cross_entropy(z, q, temperature=2.0)
    return jnp.mean(kl) + jnp.mean(masked) + jnp.mean(ce)

  grad = jax.grad(jax_loss)(z)
  z64, eps, fd = z.astype(np.float64), 1e-6, np.zeros((B, K))
  for idx in np.ndindex(B, K):
    up, down = z64.copy(), z64.copy()
    up[idx] += eps
    down[idx] -= eps
    fd[idx] = (np_loss(up) - np_loss(down)) / (2 * eps)
  np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-6)
  assert np.all(np.isfinite(grad))


def test_bfloat16_logits_use_float32_math():
  z, q = data(5)
  z16 = jnp.asarray(z, jnp.bfloat16)
  for fn in (losses.softmax_cross_entropy, losses.kl_divergence):
    got = fn(z16, q)
    want = fn(z16.astype(jnp.float32), q)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, atol=1e-3)
  # The bug class this guards against: bf16 KL of identical logits reading negative.
  same = losses.kl_divergence(z16, jax.nn.softmax(z16.astype(jnp.float32) / 4.0),
                              temperature=4.0, temperature_squared=True)
  np.testing.assert_allclose(same, 0.0, atol=1e-5)


def test_unknown_reduction_is_rejected():
  z, q = data()
  with pytest.raises(ValueError, match="kl_reduction='sum'.*batchmean, elementwise_mean"):
    losses.kl_divergence(z, q, kl_reduction="sum")
