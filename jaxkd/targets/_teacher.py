"""Targets from teacher logits: tempered (ensemble) softmax and knowledge adjustment."""
import chex
import jax
import jax.numpy as jnp

from jaxkd.targets import _base

__all__ = ["has_teacher", "knowledge_adjustment", "standardize_logits", "teacher_softmax"]

_STANDARDIZE_EPS = 1e-7  # added to the standard deviation, as the official code does


def standardize_logits(logits: chex.Array) -> chex.Array:
  r"""Logit standardization: ``(z - mean(z)) / (std(z) + 1e-7)`` over the classes, float32.

  ``std`` is the unbiased one (``ddof=1``) of ``torch.std``, as the official code computes it;
  ``jnp.std``'s default (``ddof=0``) would scale the effective temperature by
  ``sqrt(K / (K - 1))``. The result does not change when the logits are shifted or scaled by a
  positive factor (up to the ``1e-7``).

  Args:
    logits: ``[..., classes]`` logits, any float dtype, ``classes >= 2``.

  Returns:
    float32, same shape.

  References:
    Sun et al., `Logit Standardization in Knowledge Distillation
    <https://arxiv.org/abs/2403.01427>`_, CVPR 2024; sunshangquan/logit-standardization-KD,
    ``mdistiller/distillers/KD.py`` (``normalize``).
  """
  logits = jnp.asarray(logits, jnp.float32)
  mean = jnp.mean(logits, axis=-1, keepdims=True)
  std = jnp.std(logits, axis=-1, keepdims=True, ddof=1)
  return (logits - mean) / (std + _STANDARDIZE_EPS)


def knowledge_adjustment(logits: chex.Array, labels: chex.Array) -> chex.Array:
  """Swaps the arg-max logit with the true-class logit where they differ.

  After the swap the teacher's arg-max is always the label, and the other logits keep their
  values (the "knowledge adjustment" form of Teacher Correction, as Wen et al., arXiv
  1911.07471, describe knowledge adjustment).

  Not KD_Lib's: its ``ProbShift`` (``KD_Lib/KD/vision/KA/PS.py``), the only public code that
  claims knowledge adjustment, swaps a wrong teacher's top-1 and top-2 classes instead, a
  different operation whenever the label is not the runner-up (and that code calls
  ``softmax(dim=1)`` on a single row, so it fails at run time); it is no reference for this
  function.

  Args:
    logits: ``[..., batch, classes]`` teacher logits.
    labels: int ``[batch]``.

  Returns:
    The adjusted logits, same shape.

  References:
    arXiv 2009.05226; "LSR-OS-TC", Appl. Sci. 2021 (reconstructed from the abstracts).
  """
  classes = jnp.arange(logits.shape[-1])
  top = jnp.argmax(logits, axis=-1)[..., None]
  top_value = jnp.max(logits, axis=-1, keepdims=True)
  true_value = jnp.take_along_axis(
      logits, jnp.broadcast_to(labels[:, None], logits.shape[:-1] + (1,)), axis=-1)
  is_label = classes == labels[:, None]
  # When top == label both selects write the same value back, so no branch is needed.
  swapped = jnp.where(classes == top, true_value, logits)
  return jnp.where(is_label, top_value, swapped)


def has_teacher(ctx: _base.TargetContext) -> chex.Array:
  """1.0 when ``ctx`` holds at least one valid teacher member, else 0.0 (float32)."""
  if ctx.teacher_logits is None:
    return jnp.float32(0.0)
  return jnp.any(ctx.teacher_mask).astype(jnp.float32)


def teacher_softmax(*, temperature, adjust: bool = False, top_k: int = 0,
                    standardize: bool = False) -> _base.TargetTransform:
  r"""The teacher distribution: the mean tempered softmax over the valid members.

  .. math::
    t = \frac{1}{|V|} \sum_{m \in V} \mathrm{softmax}(z^t_m / T)

  where ``V`` are the members with ``teacher_mask`` True (one frozen teacher, an ensemble, or
  MrKD's replay backups). With no valid member the result is all zeros; objectives then switch
  the distillation term off (see `has_teacher`). Replaces the incoming targets.

  Args:
    temperature: T > 0, a schedule, or `jaxkd.targets.learned_temperature` (the teacher's
      learned temperature, CTKD).
    adjust: apply `knowledge_adjustment` to every member's logits before tempering: swap
      the arg-max and the true-class logits of a wrong member (not KD_Lib's ``ProbShift``,
      which swaps the top two classes).
    top_k: 0 (default) keeps every class. K > 0 keeps each member's K largest logits and takes
      the tempered softmax over those K only (every other class gets 0), as Tan et al.'s
      word-level KD for translation does (ICLR 2019, code RayeRen/multilingual-kd-pytorch: it
      stores the teacher's top-K logits and applies ``softmax(topk / T)``; K is
      ``--distill-topk``, 4 there by default). Logits tied with the K-th largest are all kept.
    standardize: apply `standardize_logits` to every member's logits first (logit
      standardization, Sun et al. 2024).

  Returns:
    A stateless `TargetTransform` reading ``ctx.teacher_logits``.

  References:
    Hinton et al., `Distilling the Knowledge in a Neural Network
    <https://arxiv.org/abs/1503.02531>`_, 2015.
  """

  if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 0:
    raise ValueError(f"teacher_softmax top_k={top_k!r} is not allowed; allowed: an int >= 0 "
                     "(0 keeps every class).")

  def fn(targets, ctx):
    if ctx.teacher_logits is None:
      raise ValueError("teacher_softmax needs ctx.teacher_logits, got None.")
    logits = ctx.teacher_logits
    if adjust:
      logits = knowledge_adjustment(logits, ctx.labels)
    if standardize:
      logits = standardize_logits(logits)
    if 0 < top_k < logits.shape[-1]:
      kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
      logits = jnp.where(logits >= kth, logits, -jnp.inf)
    probs = jax.nn.softmax(logits / _base.temperature_at(temperature, ctx), axis=-1)
    mask = ctx.teacher_mask.astype(jnp.float32)
    total = jnp.einsum("m,mbk->bk", mask, probs)
    return total / jnp.maximum(jnp.sum(mask), 1.0)

  return _base.stateless(fn)
