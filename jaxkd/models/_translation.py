"""A fairseq-convention Transformer for translation, with greedy and beam search.

`TranslationTransformer` follows fairseq's ``transformer`` model as configured by
``transformer_iwslt_de_en`` (fairseq/models/transformer/transformer_legacy.py) with fairseq's
defaults: post-LayerNorm layers (``normalize_before=False``, so no final encoder/decoder
LayerNorm), token embeddings scaled by ``sqrt(embed_dim)``, fixed sinusoidal positions
(``SinusoidalPositionalEmbedding``), no ``layernorm_embedding``, ReLU feed-forward blocks,
dropout after the embeddings, after each attention block and after each feed-forward block,
and separate source and target vocabularies. The defaults ``dropout=0.3`` and
``share_decoder_input_output_embed=True`` are those of fairseq's IWSLT'14 de-en recipe
(examples/translation/README.md), not of ``base_architecture`` (0.1, unshared).

Initialisation is fairseq's: embeddings normal(0, embed_dim ** -0.5) with a zero PAD row,
attention projections xavier_uniform (gain 1/sqrt(2) for q/k/v, out_proj bias 0), and the
feed-forward ``fc1``/``fc2`` PyTorch's ``nn.Linear`` default, as fairseq's
``TransformerEncoderLayerBase.build_fc1`` builds them (fairseq/modules/transformer_layer.py).

Conventions that differ from fairseq by design:

* Token ids: ``PAD, BOS, EOS, UNK = 0, 1, 2, 3`` (fairseq: bos 0, pad 1, eos 2, unk 3).
* Positions are numbered exactly as fairseq numbers them with its padding index 1: the first
  real token sits at position 2, the next at 3, ..., and padding takes the all-zero row
  (``make_positions``). Our PAD is 0, but the sinusoid rows are fairseq's, so weights converted
  from a fairseq checkpoint give fairseq's outputs.
* ``max_len`` of the searches counts the EOS: an output holds at most ``max_len`` tokens, EOS
  included. fairseq's ``SequenceGenerator`` takes ``max_len = max_len_a * src_len +
  max_len_b`` (defaults ``a=0``, ``b=200``) and lets a hypothesis have ``max_len`` tokens and
  then the EOS, so fairseq's default is ``max_len=201`` here.

Parameter names follow fairseq's (``encoder_embed_tokens``, ``encoder_layer_0/self_attn/q_proj``,
``decoder_layer_0/encoder_attn``, ``fc1``, ``final_layer_norm``, ``decoder_output_projection``
when unshared), with Flax's ``[in, out]`` kernels.
"""
import math
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxkd.models._common import TORCH_WEIGHT, torch_bias
from jaxkd.models._text import check_tokens

__all__ = ["PAD", "BOS", "EOS", "UNK", "TranslationTransformer", "greedy_search",
           "beam_search", "shift_right", "sinusoidal_positions"]

PAD, BOS, EOS, UNK = 0, 1, 2, 3

# fairseq's dictionary pads with index 1; its sinusoid rows are numbered from there.
_FAIRSEQ_PAD = 1
_NEG = float(np.finfo(np.float32).min)
# fairseq's MultiheadAttention: xavier_uniform_ with gain 1/sqrt(2) on q/k/v (qkv_same_dim),
# gain 1 on out_proj, whose bias is 0; q/k/v biases keep PyTorch's Linear default.
_QKV_INIT = nn.initializers.variance_scaling(0.5, "fan_avg", "uniform")
_OUT_INIT = nn.initializers.xavier_uniform()
_LN_EPS = 1e-5  # fairseq LayerNorm = torch.nn.LayerNorm's default eps


def _embed_init(key, shape, dtype=jnp.float32):
  """fairseq's ``Embedding``: normal(0, embed_dim ** -0.5), the padding row zero."""
  weight = jax.random.normal(key, shape, dtype) * (shape[1] ** -0.5)
  return weight.at[PAD].set(0)


def sinusoidal_positions(positions: jax.Array, dim: int) -> jax.Array:
  """fairseq's ``SinusoidalPositionalEmbedding.get_embedding`` rows, float32.

  Args:
    positions: integer fairseq position numbers (``_FAIRSEQ_PAD`` means padding: zeros).
    dim: embedding width.

  Returns:
    ``positions.shape + (dim,)``: sines of the first half, cosines of the second half
    (frequencies ``exp(-i * log(10000) / (dim // 2 - 1))``), a zero column when ``dim`` is
    odd, and zero rows at padding.
  """
  half = dim // 2
  freqs = jnp.exp(jnp.arange(half, dtype=jnp.float32) * -(math.log(10000) / (half - 1)))
  angles = positions.astype(jnp.float32)[..., None] * freqs
  emb = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, [(0, 0)] * (emb.ndim - 1) + [(0, 1)])
  return jnp.where((positions == _FAIRSEQ_PAD)[..., None], 0.0, emb)


def _dense(features: int, kernel_init, bias_init, dtype) -> nn.Dense:
  return nn.Dense(features, kernel_init=kernel_init, bias_init=bias_init, dtype=dtype,
                  param_dtype=jnp.float32)


def _layer_norm(dtype) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=_LN_EPS, dtype=dtype, param_dtype=jnp.float32)


class _Attention(nn.Module):
  """fairseq's ``MultiheadAttention``: q/k/v/out projections with biases, queries scaled by
  ``head_dim ** -0.5``, softmax in float32, dropout on the attention weights."""
  dim: int
  heads: int
  dropout: float
  dtype: Any

  def setup(self):
    if self.dim % self.heads:
      raise ValueError(f"embed_dim={self.dim} must be a multiple of heads={self.heads}")
    bias = torch_bias(self.dim)
    self.q_proj = _dense(self.dim, _QKV_INIT, bias, self.dtype)
    self.k_proj = _dense(self.dim, _QKV_INIT, bias, self.dtype)
    self.v_proj = _dense(self.dim, _QKV_INIT, bias, self.dtype)
    self.out_proj = _dense(self.dim, _OUT_INIT, nn.initializers.zeros, self.dtype)
    self.drop = nn.Dropout(self.dropout)

  def _split(self, x):
    return x.reshape(x.shape[:2] + (self.heads, self.dim // self.heads))

  def keys_values(self, kv):
    """Keys and values ``[B, L, H, D/H]`` of ``kv`` ``[B, L, D]``."""
    return self._split(self.k_proj(kv)), self._split(self.v_proj(kv))

  def attend(self, query, keys, values, mask, deterministic):
    """Attention of ``query`` ``[B, T, D]`` over projected ``keys``/``values``.

    ``mask`` broadcasts to ``[B, H, T, L]``; True where a query may look.
    """
    q = self._split(self.q_proj(query)) * (self.dim // self.heads) ** -0.5
    logits = jnp.einsum("bthd,blhd->bhtl", q, keys).astype(jnp.float32)
    weights = jax.nn.softmax(jnp.where(mask, logits, _NEG), axis=-1).astype(self.dtype)
    weights = self.drop(weights, deterministic=deterministic)
    out = jnp.einsum("bhtl,blhd->bthd", weights, values)
    return self.out_proj(out.reshape(out.shape[:2] + (self.dim,)))

  def __call__(self, query, kv, mask, deterministic):
    return self.attend(query, *self.keys_values(kv), mask, deterministic)


def _feed_forward(layer, x, deterministic):
  """fc1, ReLU, activation dropout, fc2 of a layer (``nn.Linear``s, PyTorch's default init)."""
  y = layer.activation_drop(nn.relu(layer.fc1(x)), deterministic=deterministic)
  return layer.fc2(y)


def _setup_feed_forward(layer):
  layer.fc1 = _dense(layer.ffn_dim, TORCH_WEIGHT, torch_bias(layer.dim), layer.dtype)
  layer.fc2 = _dense(layer.dim, TORCH_WEIGHT, torch_bias(layer.ffn_dim), layer.dtype)
  layer.activation_drop = nn.Dropout(layer.activation_dropout)


class _Layer(nn.Module):
  """The sizes and rates every Transformer layer takes (fairseq's layer arguments)."""
  dim: int
  ffn_dim: int
  heads: int
  dropout: float
  attention_dropout: float
  activation_dropout: float
  dtype: Any


class _EncoderLayer(_Layer):
  """Post-norm ``TransformerEncoderLayer``: x = LN(x + drop(attn(x))); x = LN(x + drop(ffn(x)))."""

  def setup(self):
    self.self_attn = _Attention(self.dim, self.heads, self.attention_dropout, self.dtype)
    self.self_attn_layer_norm = _layer_norm(self.dtype)
    _setup_feed_forward(self)
    self.final_layer_norm = _layer_norm(self.dtype)
    self.drop = nn.Dropout(self.dropout)

  def __call__(self, x, mask, deterministic):
    y = self.self_attn(x, x, mask, deterministic)
    x = self.self_attn_layer_norm(x + self.drop(y, deterministic=deterministic))
    y = _feed_forward(self, x, deterministic)
    return self.final_layer_norm(x + self.drop(y, deterministic=deterministic))


class _DecoderLayer(_Layer):
  """Post-norm ``TransformerDecoderLayer``: causal self-attention, attention over the
  encoder output, feed-forward, each followed by dropout, the residual and a LayerNorm."""

  def setup(self):
    self.self_attn = _Attention(self.dim, self.heads, self.attention_dropout, self.dtype)
    self.self_attn_layer_norm = _layer_norm(self.dtype)
    self.encoder_attn = _Attention(self.dim, self.heads, self.attention_dropout, self.dtype)
    self.encoder_attn_layer_norm = _layer_norm(self.dtype)
    _setup_feed_forward(self)
    self.final_layer_norm = _layer_norm(self.dtype)
    self.drop = nn.Dropout(self.dropout)

  def _rest(self, x, y, cross_k, cross_v, source_mask, deterministic):
    """Everything after the self-attention output ``y``."""
    x = self.self_attn_layer_norm(x + self.drop(y, deterministic=deterministic))
    y = self.encoder_attn.attend(x, cross_k, cross_v, source_mask[:, None, None, :],
                                 deterministic)
    x = self.encoder_attn_layer_norm(x + self.drop(y, deterministic=deterministic))
    y = _feed_forward(self, x, deterministic)
    return self.final_layer_norm(x + self.drop(y, deterministic=deterministic))

  def __call__(self, x, self_mask, memory, source_mask, deterministic):
    y = self.self_attn(x, x, self_mask, deterministic)
    return self._rest(x, y, *self.encoder_attn.keys_values(memory), source_mask, deterministic)

  def init_cache(self, memory, max_len):
    """This layer's cache: empty self-attention keys/values for ``max_len`` steps and the
    keys/values of the encoder output."""
    cross_k, cross_v = self.encoder_attn.keys_values(memory)
    shape = (memory.shape[0], max_len, self.heads, self.dim // self.heads)
    return {"k": jnp.zeros(shape, cross_k.dtype), "v": jnp.zeros(shape, cross_v.dtype),
            "cross_k": cross_k, "cross_v": cross_v}

  def step(self, x, step, cache, source_mask, deterministic):
    """One position ``x`` ``[B, 1, D]`` at index ``step``; returns it and the new cache."""
    k, v = self.self_attn.keys_values(x)
    keys = jax.lax.dynamic_update_slice(cache["k"], k.astype(cache["k"].dtype), (0, step, 0, 0))
    values = jax.lax.dynamic_update_slice(cache["v"], v.astype(cache["v"].dtype),
                                          (0, step, 0, 0))
    mask = (jnp.arange(keys.shape[1]) <= step)[None, None, None, :]
    y = self.self_attn.attend(x, keys, values, mask, deterministic)
    x = self._rest(x, y, cache["cross_k"], cache["cross_v"], source_mask, deterministic)
    return x, dict(cache, k=keys, v=values)


class TranslationTransformer(nn.Module):
  """fairseq's encoder-decoder Transformer (``transformer_iwslt_de_en`` conventions).

  ``apply(variables, {"source": [B, S], "target": [B, T]}, train=False)`` runs the decoder
  with teacher forcing on fairseq's ``prev_output_tokens``: the target shifted right with EOS
  first, PAD wherever the target is PAD. Dropout runs only when ``train=True`` and
  ``rngs={"dropout": key}`` is given. For search: `encode`, `init_cache` and `decode_step`
  (one target position per call, against a cache of the earlier positions' keys/values and
  of the encoder output's); `greedy_search` and `beam_search` use them.

  Attributes:
    num_classes: target vocabulary size (the class axis of the logits).
    vocab_size: source vocabulary size.
    embed_dim: model width (encoder and decoder).
    ffn_dim: hidden width of the feed-forward blocks.
    heads: attention heads.
    encoder_layers: encoder layers.
    decoder_layers: decoder layers.
    dropout: dropout after the embeddings, attention blocks and feed-forward blocks.
    attention_dropout: dropout on the attention weights.
    activation_dropout: dropout after the feed-forward ReLU.
    share_decoder_input_output_embed: the output projection is the decoder's embedding
      matrix (else a separate bias-free projection, init normal(0, embed_dim ** -0.5)).
    max_positions: longest source or target sequence (fairseq's max_source_positions and
      max_target_positions).
    dtype: computation dtype; parameters stay float32, logits and features are float32.
    cpu_conv: accepted like every zoo module; there is no convolution.
  """
  num_classes: int
  vocab_size: int
  embed_dim: int = 512
  ffn_dim: int = 1024
  heads: int = 4
  encoder_layers: int = 6
  decoder_layers: int = 6
  dropout: float = 0.3
  attention_dropout: float = 0.0
  activation_dropout: float = 0.0
  share_decoder_input_output_embed: bool = True
  max_positions: int = 1024
  dtype: Any = jnp.float32
  cpu_conv: str = "xla"

  def setup(self):
    embed = dict(embedding_init=_embed_init, dtype=self.dtype, param_dtype=jnp.float32)
    layer = dict(dim=self.embed_dim, ffn_dim=self.ffn_dim, heads=self.heads,
                 dropout=self.dropout, attention_dropout=self.attention_dropout,
                 activation_dropout=self.activation_dropout, dtype=self.dtype)
    self.encoder_embed_tokens = nn.Embed(self.vocab_size, self.embed_dim, **embed)
    self.encoder_layer = [_EncoderLayer(**layer)
                          for i in range(self.encoder_layers)]
    self.decoder_embed_tokens = nn.Embed(self.num_classes, self.embed_dim, **embed)
    self.decoder_layer = [_DecoderLayer(**layer)
                          for i in range(self.decoder_layers)]
    if not self.share_decoder_input_output_embed:
      self.decoder_output_projection = nn.Dense(
          self.num_classes, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
          kernel_init=nn.initializers.normal(self.embed_dim ** -0.5))
    self.drop = nn.Dropout(self.dropout)

  # ------------------------------------------------------------------ helpers

  def _deterministic(self, train: bool) -> bool:
    return not (train and self.has_rng("dropout"))

  def _check_length(self, field: str, length: int) -> None:
    if length > self.max_positions:
      raise ValueError(f"{field} length {length} exceeds max_positions={self.max_positions}")

  def _embed(self, table: nn.Embed, tokens, positions, deterministic):
    """scale * embed(tokens) + sinusoid(positions), then dropout."""
    x = table(tokens) * jnp.asarray(math.sqrt(self.embed_dim), self.dtype)
    x = x + sinusoidal_positions(positions, self.embed_dim).astype(self.dtype)
    return self.drop(x, deterministic=deterministic)

  def _project(self, x):
    """Output projection of decoder states, float32 logits."""
    if self.share_decoder_input_output_embed:
      logits = self.decoder_embed_tokens.attend(x)
    else:
      logits = self.decoder_output_projection(x)
    return logits.astype(jnp.float32)

  # ------------------------------------------------------------------ public

  def encode(self, source: jax.Array, train: bool = False):
    """Encoder output.

    Args:
      source: int ``[B, S]`` token ids, PAD-padded.
      train: dropout (with a ``"dropout"`` rng).

    Returns:
      ``(memory [B, S, D] in dtype, source_mask [B, S] bool, True at real tokens)``.
    """
    check_tokens(source, "TranslationTransformer source")
    self._check_length("source", source.shape[1])
    deterministic = self._deterministic(train)
    mask = source != PAD
    positions = jnp.cumsum(mask, axis=1) * mask + _FAIRSEQ_PAD  # fairseq make_positions
    x = self._embed(self.encoder_embed_tokens, source, positions, deterministic)
    x = x * mask[..., None].astype(x.dtype)  # fairseq zeroes the padded positions
    for layer in self.encoder_layer:
      x = layer(x, mask[:, None, None, :], deterministic)
    return x, mask

  def decode(self, prev_output_tokens: jax.Array, memory: jax.Array, source_mask: jax.Array,
             train: bool = False):
    """Teacher-forced decoder over all positions at once.

    Args:
      prev_output_tokens: int ``[B, T]`` decoder inputs (EOS first, PAD-padded).
      memory: ``[B, S, D]`` encoder output.
      source_mask: ``[B, S]`` bool, True at real source tokens.
      train: dropout (with a ``"dropout"`` rng).

    Returns:
      ``(logits [B, T, num_classes], features [B, T, D])``, both float32.
    """
    self._check_length("target", prev_output_tokens.shape[1])
    deterministic = self._deterministic(train)
    mask = prev_output_tokens != PAD
    positions = jnp.cumsum(mask, axis=1) * mask + _FAIRSEQ_PAD
    x = self._embed(self.decoder_embed_tokens, prev_output_tokens, positions, deterministic)
    length = prev_output_tokens.shape[1]
    causal = jnp.tril(jnp.ones((length, length), bool))
    self_mask = causal[None, None] & mask[:, None, None, :]
    for layer in self.decoder_layer:
      x = layer(x, self_mask, memory, source_mask, deterministic)
    return self._project(x), x.astype(jnp.float32)

  def init_cache(self, memory: jax.Array, max_len: int):
    """The decoding cache for `decode_step`: per decoder layer, zeroed self-attention
    keys/values ``k``, ``v`` ``[B, max_len, H, D/H]`` and the encoder output's ``cross_k``,
    ``cross_v`` ``[B, S, H, D/H]``."""
    self._check_length("max_len", max_len)
    return [layer.init_cache(memory, max_len) for layer in self.decoder_layer]

  def decode_step(self, tokens: jax.Array, step: jax.Array, cache: list,
                  source_mask: jax.Array, train: bool = False):
    """One incremental decoder step.

    Args:
      tokens: int ``[B]``, the decoder input at position ``step`` (EOS at step 0).
      step: int scalar (may be traced), the position, 0-based.
      cache: from `init_cache` or the previous `decode_step`.
      source_mask: ``[B, S]`` bool, True at real source tokens.
      train: dropout (with a ``"dropout"`` rng).

    Returns:
      ``(logits [B, num_classes] float32, new cache)``; the logits equal `decode`'s at
      position ``step`` given the same earlier inputs.
    """
    deterministic = self._deterministic(train)
    positions = jnp.full((tokens.shape[0], 1), step + 1 + _FAIRSEQ_PAD, jnp.int32)
    x = self._embed(self.decoder_embed_tokens, tokens[:, None], positions, deterministic)
    new_cache = []
    for layer, layer_cache in zip(self.decoder_layer, cache):
      x, layer_cache = layer.step(x, step, layer_cache, source_mask, deterministic)
      new_cache.append(layer_cache)
    return self._project(x)[:, 0], new_cache

  def __call__(self, inputs: dict, train: bool = False) -> dict:
    """Teacher-forced forward pass.

    Args:
      inputs: ``{"source": int [B, S], "target": int [B, T]}``; the source ends with EOS
        before its padding, the target is the gold output ending with EOS, then PAD.
      train: dropout (with a ``"dropout"`` rng).

    Returns:
      ``{"logits": [B, T, num_classes], "features": [B, T, embed_dim]}``, float32; features
      are the decoder's last hidden states, the input of the output projection.
    """
    if not isinstance(inputs, dict) or set(inputs) != {"source", "target"}:
      got = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
      raise ValueError(f"TranslationTransformer: inputs must be a dict with keys 'source' and "
                       f"'target'; got {got}")
    target = inputs["target"]
    check_tokens(target, "TranslationTransformer target")
    memory, source_mask = self.encode(inputs["source"], train)
    logits, features = self.decode(shift_right(target), memory, source_mask, train)
    return {"logits": logits, "features": features}


def shift_right(target: jax.Array) -> jax.Array:
  """fairseq's ``prev_output_tokens``: EOS, then the target without its last token, PAD
  wherever the target is PAD (so the target's own EOS does not become an input)."""
  shifted = jnp.concatenate(
      [jnp.full_like(target[:, :1], EOS), target[:, :-1]], axis=1)
  return jnp.where(target == PAD, PAD, shifted)


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
  ``min_len`` tokens and always at the last position. fairseq's generator takes ``max_len =
  max_len_a * src_len + max_len_b`` (``a=0``, ``b=200`` by default) tokens plus the EOS:
  ``max_len=201`` here.

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
  generated, EOS not before ``min_len`` tokens. fairseq's generator takes ``max_len =
  max_len_a * src_len + max_len_b`` (``a=0``, ``b=200`` by default) tokens plus the EOS:
  ``max_len=201`` here.

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
