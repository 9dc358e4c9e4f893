"""A fairseq-convention Transformer for translation (its greedy and beam search:
``_search.py``).

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

Parameter names follow fairseq's (``encoder_embed_tokens``, ``encoder_layer_0/self_attn/q_proj``,
``decoder_layer_0/encoder_attn``, ``fc1``, ``final_layer_norm``, ``decoder_output_projection``
when unshared), with Flax's ``[in, out]`` kernels.
"""
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxkd.models._common import TORCH_WEIGHT, torch_bias
from jaxkd.models._text import check_tokens

__all__ = ["PAD", "BOS", "EOS", "UNK", "TranslationTransformer", "shift_right",
           "sinusoidal_positions"]

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
