"""Greedy and beam search for `jaxkd.models.TranslationTransformer`, as fairseq's
``SequenceGenerator`` decodes (fairseq/sequence_generator.py), with fixed shapes so that both
compile once and run batched inside ``jax.jit``.

The network (encoder, cached decoder steps) is ``_translation.py``; this module only calls its
``encode``, ``init_cache`` and ``decode_step`` methods.

* ``max_len`` of the searches counts the EOS: an output holds at most ``max_len`` tokens, EOS
  included. fairseq's ``SequenceGenerator`` takes ``max_len = max_len_a * src_len +
  max_len_b`` (defaults ``a=0``, ``b=200``) and lets a hypothesis have ``max_len`` tokens and
  then the EOS, so fairseq's default is ``max_len=201`` here.
* Token ids are ``_translation``'s: ``PAD, BOS, EOS = 0, 1, 2`` (PAD and BOS are never
  generated; EOS starts every decoder input).
"""
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jaxkd.models._text import check_tokens
from jaxkd.models._translation import BOS, EOS, PAD, TranslationTransformer

__all__ = ["beam_search", "greedy_search"]


def _check_search(model, source, max_len, min_len):
  if not isinstance(model, TranslationTransformer):
    raise ValueError(f"model must be a TranslationTransformer; got {type(model).__name__}")
  check_tokens(source, "search source")
  if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) \
          or not 1 <= max_len <= model.max_positions:
    raise ValueError(f"max_len={max_len!r} must be an int in [1, max_positions="
                     f"{model.max_positions}]")
  if isinstance(min_len, bool) or not isinstance(min_len, (int, np.integer)) \
          or not 0 <= min_len < max_len:
    raise ValueError(f"min_len={min_len!r} must be an int in [0, max_len={max_len})")


def _log_probs(logits, step, max_len, min_len):
  """fairseq's step log-probabilities: log_softmax in float32, NaN, PAD and BOS at -inf, EOS
  at -inf before ``min_len`` tokens and the only choice at the last position."""
  lprobs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  lprobs = jnp.where(jnp.isnan(lprobs), -jnp.inf, lprobs)
  vocab = jnp.arange(lprobs.shape[-1])
  banned = (vocab == PAD) | (vocab == BOS)
  banned = banned | ((vocab == EOS) & (step < min_len))
  banned = banned | ((vocab != EOS) & (step >= max_len - 1))
  return jnp.where(banned, -jnp.inf, lprobs)


def greedy_search(model: TranslationTransformer, variables, source: jax.Array, *,
                  max_len: int, min_len: int = 1) -> jax.Array:
  """Argmax decoding, with the constraints of `beam_search` (it equals ``beam_size=1``).

  Starts from EOS as the first decoder input; PAD and BOS are never chosen, EOS not before
  ``min_len`` tokens and always at the last position; fairseq's default length is
  ``max_len=201`` here (the module docstring).

  Args:
    model: a `TranslationTransformer`.
    variables: its variables (``{"params": ...}``).
    source: int ``[B, S]`` source tokens.
    max_len: output length, the EOS included.
    min_len: fairseq's ``min_len``: EOS is banned at steps ``< min_len`` (default 1: no empty
      output).

  Compiled once per model, ``max_len`` and ``min_len`` (Python values) and input shape; also
  callable inside ``jax.jit`` with ``variables`` and ``source`` traced.

  Returns:
    int32 ``[B, max_len]``: the tokens up to and including the first EOS, then PAD.
  """
  _check_search(model, source, max_len, min_len)
  return _greedy(model, int(max_len), int(min_len), variables, source)


@partial(jax.jit, static_argnums=(0, 1, 2))
def _greedy(model, max_len, min_len, variables, source):
  batch = source.shape[0]
  memory, source_mask = model.apply(variables, source, method=model.encode)
  cache = model.apply(variables, memory, max_len, method=model.init_cache)

  def cond(state):
    step, _, _, _, done = state
    return (step < max_len) & ~jnp.all(done)

  def body(state):
    step, last, cache, tokens, done = state
    logits, cache = model.apply(variables, last, step, cache, source_mask,
                                method=model.decode_step)
    choice = jnp.argmax(_log_probs(logits, step, max_len, min_len), axis=-1).astype(jnp.int32)
    choice = jnp.where(done, PAD, choice)
    tokens = jax.lax.dynamic_update_slice(tokens, choice[:, None], (0, step))
    return step + 1, choice, cache, tokens, done | (choice == EOS)

  state = (jnp.int32(0), jnp.full((batch,), EOS, jnp.int32), cache,
           jnp.full((batch, max_len), PAD, jnp.int32), jnp.zeros((batch,), bool))
  return jax.lax.while_loop(cond, body, state)[3]


def beam_search(model: TranslationTransformer, variables, source: jax.Array, *,
                beam_size: int = 5, max_len: int, len_penalty: float = 1.0,
                min_len: int = 1):
  """fairseq ``SequenceGenerator`` beam search, with fixed shapes (jit-able, batched).

  Each step scores the ``2 * beam_size`` best (beam, token) extensions by summed
  log-probabilities; those of the first ``beam_size`` that end in EOS (and have a finite
  score) are finished with the score ``sum_logprob / length ** len_penalty`` (length counting
  the EOS), while the first ``beam_size`` that do not end in EOS continue. A sentence is done
  once ``beam_size`` hypotheses are finished (fairseq's stopping rule); EOS is forced at the
  last position, so every hypothesis is finished by then. The best finished one is returned
  (the earliest finished on a tie, as fairseq's stable sort). PAD and BOS are never
  generated, EOS not before ``min_len`` tokens; fairseq's default length is ``max_len=201``
  here (the module docstring).

  Args:
    model: a `TranslationTransformer`.
    variables: its variables (``{"params": ...}``).
    source: int ``[B, S]`` source tokens.
    beam_size: hypotheses kept per sentence.
    max_len: output length, the EOS included.
    len_penalty: exponent of the length normalisation (< 1 favours shorter outputs).
    min_len: fairseq's ``min_len`` (default 1: no empty output).

  Compiled once per model, ``beam_size``, ``max_len``, ``len_penalty``, ``min_len`` (Python
  values) and input shape; also callable inside ``jax.jit`` with ``variables`` and ``source``
  traced.

  Returns:
    ``(tokens int32 [B, max_len], scores float32 [B])``: the best hypothesis (its tokens, the
    EOS, then PAD) and its normalised score.
  """
  _check_search(model, source, max_len, min_len)
  if isinstance(beam_size, bool) or not isinstance(beam_size, (int, np.integer)) \
          or beam_size < 1:
    raise ValueError(f"beam_size={beam_size!r} must be a positive int")
  return _beam(model, int(beam_size), int(max_len), float(len_penalty), int(min_len), variables,
               source)


@partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _beam(model, beam_size, max_len, len_penalty, min_len, variables, source):
  batch, k = source.shape[0], beam_size
  n = batch * k
  cands = 2 * k
  memory, source_mask = model.apply(variables, source, method=model.encode)
  cache = model.apply(variables, memory, max_len, method=model.init_cache)
  cache = jax.tree.map(lambda x: jnp.repeat(x, k, axis=0), cache)
  source_mask = jnp.repeat(source_mask, k, axis=0)
  slots = jnp.arange(k)

  def cond(state):
    return (state["step"] < max_len) & ~jnp.all(state["done"])

  def body(state):
    step = state["step"]
    logits, cache = model.apply(variables, state["last"], step, state["cache"], source_mask,
                                method=model.decode_step)
    lprobs = _log_probs(logits, step, max_len, min_len)
    vocab = lprobs.shape[-1]
    totals = state["scores"][:, :, None] + lprobs.reshape(batch, k, vocab)
    cand_scores, cand_index = jax.lax.top_k(totals.reshape(batch, k * vocab), cands)
    cand_beam, cand_token = cand_index // vocab, (cand_index % vocab).astype(jnp.int32)
    is_eos = (cand_token == EOS) & jnp.isfinite(cand_scores)

    # Finish the EOS candidates among the first beam_size, in rank order, into free slots.
    finish = is_eos[:, :k] & ~state["done"][:, None]
    slot = state["count"][:, None] + jnp.cumsum(finish, axis=1) - 1
    finish = finish & (slot < k)
    put = finish[:, :, None] & (slot[:, :, None] == slots)  # [B, candidate, slot]
    written = put.any(axis=1)
    normalised = cand_scores[:, :k] / (step + 1.0) ** len_penalty
    seqs = jnp.take_along_axis(state["tokens"], cand_beam[:, :k, None], axis=1)
    seqs = jax.lax.dynamic_update_slice(
        seqs, jnp.full((batch, k, 1), EOS, jnp.int32), (0, 0, step))
    fin_scores = jnp.where(written, jnp.where(put, normalised[:, :, None], 0.0).sum(1),
                           state["fin_scores"])
    fin_tokens = jnp.where(written[..., None],
                           jnp.where(put[..., None], seqs[:, :, None, :], 0).sum(1),
                           state["fin_tokens"])
    count = state["count"] + finish.sum(axis=1)
    done = state["done"] | (count >= k) | (step >= max_len - 1)

    # Continue with the first beam_size candidates that do not end in EOS.
    rank = is_eos * cands + jnp.arange(cands)
    _, active = jax.lax.top_k(-rank, k)
    beam = jnp.take_along_axis(cand_beam, active, axis=1)
    token = jnp.take_along_axis(cand_token, active, axis=1)
    tokens = jnp.take_along_axis(state["tokens"], beam[:, :, None], axis=1)
    tokens = jax.lax.dynamic_update_slice(tokens, token[:, :, None], (0, 0, step))
    rows = (beam + jnp.arange(batch)[:, None] * k).reshape(n)
    cache = [dict(layer, k=layer["k"][rows], v=layer["v"][rows]) for layer in cache]
    return {"step": step + 1, "last": token.reshape(n), "cache": cache, "tokens": tokens,
            "scores": jnp.take_along_axis(cand_scores, active, axis=1),
            "fin_tokens": fin_tokens, "fin_scores": fin_scores, "count": count, "done": done}

  state = {
      "step": jnp.int32(0),
      "last": jnp.full((n,), EOS, jnp.int32),
      "cache": cache,
      "tokens": jnp.full((batch, k, max_len), PAD, jnp.int32),
      # Every beam starts from the same EOS: only the first one may be extended at step 0.
      "scores": jnp.where(slots == 0, 0.0, -jnp.inf)[None].repeat(batch, 0).astype(jnp.float32),
      "fin_tokens": jnp.full((batch, k, max_len), PAD, jnp.int32),
      "fin_scores": jnp.full((batch, k), -jnp.inf, jnp.float32),
      "count": jnp.zeros((batch,), jnp.int32),
      "done": jnp.zeros((batch,), bool),
  }
  state = jax.lax.while_loop(cond, body, state)
  best = jnp.argmax(state["fin_scores"], axis=1)
  tokens = jnp.take_along_axis(state["fin_tokens"], best[:, None, None], axis=1)[:, 0]
  scores = jnp.take_along_axis(state["fin_scores"], best[:, None], axis=1)[:, 0]
  return tokens, scores
