"""Text classifiers on token ids: a small Transformer encoder, a fastText-style baseline and
Kim's (2014) CNN.

All take int32 ``[B, L]`` token ids, 0 being padding (the mask is ``tokens != 0``), and
return the zoo's output dict (`jaxkd.models._common.outputs`): ``features`` is the pooled
per-token states (masked mean; the CNN: masked max), ``feature_map`` the per-token states as a
``[B, L, 1, D]`` map and ``dense_logits`` the classifier at every token (padding included; the
engine refuses methods that read it on text). The sizes are ours: ALR's abstract names neither
networks nor sizes.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxkd.models._common import TORCH_WEIGHT, linear, outputs, torch_bias, wide

__all__ = ["CNNClassifier", "FastTextClassifier", "TransformerClassifier", "check_tokens"]

_EMBED_INIT = nn.initializers.normal(0.02)


def check_tokens(tokens: jax.Array, model: str) -> None:
  """Reject anything but an integer ``[B, L]`` batch of token ids."""
  if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
    raise ValueError(f"{model}: input must be integer token ids [B, L]; got {tokens.dtype} "
                     f"with shape {tuple(tokens.shape)}")


def _masked_mean(states: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean over the real tokens (a row of padding only gives zeros)."""
  weights = mask.astype(wide(states.dtype))[..., None]
  total = jnp.sum(states.astype(weights.dtype) * weights, axis=1)
  return (total / jnp.maximum(weights.sum(axis=1), 1.0)).astype(states.dtype)


def _outputs(states: jax.Array, mask: jax.Array, head: nn.Dense) -> dict:
  features = _masked_mean(states, mask)
  return outputs(states[:, :, None, :], head, features=features)


class FastTextClassifier(nn.Module):
  """fastText (Joulin et al., 2017): the mean of word and hashed word-bigram embeddings,
  then a linear classifier.

  Attributes:
    num_classes: K.
    vocab_size: the token vocabulary.
    embed_dim: embedding width D (fastText's text classification runs use 10; ours 64).
    bigram_buckets: hashed bigram embeddings (0: words only).
    dtype: computation dtype; parameters stay float32 (float64 for float64).
    cpu_conv: accepted like every zoo module; there is no convolution.
  """
  num_classes: int
  vocab_size: int
  embed_dim: int = 64
  bigram_buckets: int = 1 << 16
  dtype: Any = jnp.float32
  cpu_conv: str = "xla"

  @nn.compact
  def __call__(self, tokens: jax.Array, train: bool = False) -> dict:
    del train  # no dropout, no BatchNorm
    check_tokens(tokens, "fasttext_text")
    mask = tokens != 0
    states = nn.Embed(self.vocab_size, self.embed_dim, embedding_init=_EMBED_INIT,
                      dtype=self.dtype, param_dtype=wide(self.dtype), name="embed")(tokens)
    if self.bigram_buckets:
      nxt = jnp.pad(tokens[:, 1:], ((0, 0), (0, 1)))
      # Bigram i: tokens i and i + 1, hashed into buckets; at the last real token the next is
      # padding, so its bigram is the word alone, as fastText pads with an end marker.
      ids = (tokens.astype(jnp.uint32) * jnp.uint32(1_000_003) + nxt.astype(jnp.uint32)) \
          % jnp.uint32(self.bigram_buckets)
      states = states + nn.Embed(self.bigram_buckets, self.embed_dim,
                                 embedding_init=_EMBED_INIT, dtype=self.dtype,
                                 param_dtype=wide(self.dtype), name="bigrams")(ids.astype(jnp.int32))
    head = linear(self.embed_dim, self.num_classes, dtype=self.dtype, name="head")
    return _outputs(states, mask, head)


class _EncoderBlock(nn.Module):
  """Pre-LayerNorm Transformer block: masked self-attention, then a GELU MLP."""
  dim: int
  heads: int
  mlp_dim: int
  dropout: float
  dtype: Any

  @nn.compact
  def __call__(self, x, mask, train):
    kw = dict(dtype=self.dtype, param_dtype=wide(self.dtype))
    norm = dict(kw, force_float32_reductions=wide(self.dtype) == jnp.float32)
    y = nn.LayerNorm(**norm)(x)
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.heads, dropout_rate=self.dropout, deterministic=not train, **kw)(
            y, y, mask=nn.make_attention_mask(mask, mask))
    x = x + nn.Dropout(self.dropout, deterministic=not train)(y)
    y = nn.LayerNorm(**norm)(x)
    y = nn.Dense(self.mlp_dim, **kw)(y)
    y = nn.Dense(self.dim, **kw)(nn.gelu(y))
    return x + nn.Dropout(self.dropout, deterministic=not train)(y)


class TransformerClassifier(nn.Module):
  """A small Transformer encoder (pre-LayerNorm), masked mean pooling, a linear classifier.

  Learned positional embeddings, as long as the inputs (set at ``init``). Dropout runs only
  when ``train=True`` and ``rngs={"dropout": key}`` is given.

  Attributes:
    num_classes: K.
    vocab_size: the token vocabulary.
    dim: model width.
    depth: encoder blocks.
    heads: attention heads.
    mlp_dim: hidden width of each block's MLP.
    dropout: dropout rate on attention weights and residual branches.
    dtype: computation dtype; parameters stay float32 (float64 for float64).
    cpu_conv: accepted like every zoo module; there is no convolution.
  """
  num_classes: int
  vocab_size: int
  dim: int = 128
  depth: int = 2
  heads: int = 4
  mlp_dim: int = 512
  dropout: float = 0.1
  dtype: Any = jnp.float32
  cpu_conv: str = "xla"

  @nn.compact
  def __call__(self, tokens: jax.Array, train: bool = False) -> dict:
    check_tokens(tokens, "transformer_text")
    mask = tokens != 0
    x = nn.Embed(self.vocab_size, self.dim, embedding_init=_EMBED_INIT, dtype=self.dtype,
                 param_dtype=wide(self.dtype), name="embed")(tokens)
    positions = self.param("positions", _EMBED_INIT, (tokens.shape[1], self.dim),
                           wide(self.dtype))
    x = nn.Dropout(self.dropout, deterministic=not train)(x + positions.astype(x.dtype))
    for _ in range(self.depth):
      x = _EncoderBlock(self.dim, self.heads, self.mlp_dim, self.dropout, self.dtype)(
          x, mask, train)
    x = nn.LayerNorm(dtype=self.dtype, param_dtype=wide(self.dtype),
                     force_float32_reductions=wide(self.dtype) == jnp.float32)(x)
    head = linear(self.dim, self.num_classes, dtype=self.dtype, name="head")
    return _outputs(x, mask, head)


class CNNClassifier(nn.Module):
  """Kim's (2014) CNN for sentence classification (CNN-rand): embeddings, parallel 1-D
  convolutions, ReLU, max-over-time pooling, dropout, a linear classifier.

  The window of width k starting at each token (tokens i .. i + k - 1) is convolved; padding
  embeds as zeros, so windows running past the last real token see zero words, as in Kim's
  code, which pads every sentence with zero vectors (a sentence shorter than k still has
  windows). Max-over-time pooling takes only windows starting at a real token, so padding
  appended to a row changes nothing. Kim's l2 max-norm constraint (3) on the classifier is not
  applied, and the embeddings are random (CNN-rand), not word2vec.

  ``feature_map`` is ``[B, L, 1, len(widths) * filters]``: at token i, the ReLU outputs of
  every width's window starting there (padding positions included, as the other text
  models'); ``features`` is its max over the real tokens (zeros for a row of padding only).

  Attributes:
    num_classes: K.
    vocab_size: the token vocabulary.
    embed_dim: embedding width D (Kim: 300, the word2vec width; ours 128).
    widths: the convolution widths (Kim: 3, 4, 5).
    filters: feature maps per width (Kim: 100).
    dropout: dropout rate on the pooled features (Kim: 0.5); only with ``train=True`` and
      ``rngs={"dropout": key}``.
    dtype: computation dtype; parameters stay float32 (float64 for float64).
    cpu_conv: accepted like every zoo module; these 1-D convolutions are XLA's own everywhere.
  """
  num_classes: int
  vocab_size: int
  embed_dim: int = 128
  widths: tuple = (3, 4, 5)
  filters: int = 100
  dropout: float = 0.5
  dtype: Any = jnp.float32
  cpu_conv: str = "xla"

  @nn.compact
  def __call__(self, tokens: jax.Array, train: bool = False) -> dict:
    check_tokens(tokens, "cnn_text")
    mask = tokens != 0
    x = nn.Embed(self.vocab_size, self.embed_dim, embedding_init=_EMBED_INIT, dtype=self.dtype,
                 param_dtype=wide(self.dtype), name="embed")(tokens)
    x = x * mask[..., None].astype(x.dtype)  # padding embeds as zero words
    maps = []
    for k in self.widths:
      fan_in = k * self.embed_dim  # PyTorch's nn.Conv1d default init
      maps.append(nn.Conv(self.filters, (k,), padding=((0, k - 1),), kernel_init=TORCH_WEIGHT,
                          bias_init=torch_bias(fan_in), dtype=self.dtype,
                          param_dtype=wide(self.dtype), name=f"conv{k}")(x))
    states = nn.relu(jnp.concatenate(maps, axis=-1))
    # ReLU outputs are >= 0, so zeroing the windows that start in padding leaves the max over
    # the real ones (and zeros for a row of padding only).
    features = jnp.max(jnp.where(mask[..., None], states, 0), axis=1)
    head = linear(states.shape[-1], self.num_classes, dtype=self.dtype, name="head")
    logits = head(nn.Dropout(self.dropout, deterministic=not train)(features))
    return outputs(states[:, :, None, :], head, features=features, pooled_logits=logits)
