"""The fairseq-convention translation Transformer: parameter count, cached decoding, padding,
causality, dtypes, and greedy/beam search against each other and against exhaustive search."""
import itertools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd import models
from jaxkd.models import _translation
from jaxkd.models import beam_search, greedy_search
from jaxkd.models._translation import BOS, EOS, PAD, shift_right

V_SRC, V_TGT = 19, 17


def _count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _formula(v_src, v_tgt, dim, ffn, enc_layers, dec_layers, shared=True):
  """fairseq's transformer: q/k/v/out projections with biases, LayerNorms with weight and bias,
  fc1/fc2 with biases, source and target embeddings, and an output projection unless shared."""
  attn = 4 * (dim * dim + dim)
  norm = 2 * dim
  mlp = dim * ffn + ffn + ffn * dim + dim
  encoder_layer = attn + norm + mlp + norm
  decoder_layer = 2 * attn + 3 * norm + mlp
  return (v_src * dim + v_tgt * dim + enc_layers * encoder_layer + dec_layers * decoder_layer
          + (0 if shared else dim * v_tgt))


def _abstract_params(model, s=5, t=4):
  batch = {"source": jax.ShapeDtypeStruct((2, s), jnp.int32),
           "target": jax.ShapeDtypeStruct((2, t), jnp.int32)}
  return jax.eval_shape(lambda b: model.init(jax.random.PRNGKey(0), b), batch)["params"]


def _sequences(rng, batch, length, vocab, min_len=2):
  """Token rows: words (ids >= 4), then EOS, then PAD; lengths vary, the first row is full."""
  rows = np.zeros((batch, length), np.int32)
  for i in range(batch):
    n = length if i == 0 else int(rng.integers(min_len, length + 1))
    rows[i, :n - 1] = rng.integers(4, vocab, n - 1)
    rows[i, n - 1] = EOS
  return rows


@pytest.fixture(scope="module")
def tiny():
  model = models.get("transformer_translation_tiny", num_classes=V_TGT, vocab_size=V_SRC)
  rng = np.random.default_rng(0)
  source = jnp.asarray(_sequences(rng, 3, 7, V_SRC))
  target = jnp.asarray(_sequences(rng, 3, 6, V_TGT))
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), {"source": source, "target": target})
  return model, variables, source, target


def test_registry_names_and_vocab_size():
  assert models.is_translation("transformer_iwslt_de_en")
  assert models.is_translation("transformer_translation_tiny")
  assert not models.is_translation("transformer_text") and not models.is_text(
      "transformer_iwslt_de_en")
  with pytest.raises(ValueError, match="needs vocab_size"):
    models.get("transformer_iwslt_de_en", num_classes=10)
  model = models.get("transformer_iwslt_de_en", num_classes=6632, vocab_size=8848)
  assert (model.embed_dim, model.ffn_dim, model.heads, model.encoder_layers,
          model.decoder_layers, model.dropout) == (512, 1024, 4, 6, 6, 0.3)
  assert model.share_decoder_input_output_embed


@pytest.mark.slow
def test_iwslt_parameter_count_equals_the_formula():
  # fairseq's IWSLT'14 de-en dictionaries (prepare-iwslt14.sh, then fairseq-preprocess without
  # --joined-dictionary): "[de] Dictionary: 8848 types", "[en] Dictionary: 6632 types".
  model = models.get("transformer_iwslt_de_en", num_classes=6632, vocab_size=8848)
  params = _abstract_params(model)
  assert _count(params) == _formula(8848, 6632, 512, 1024, 6, 6) == 39_469_056
  assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
  # fairseq's default generation (beam 5, max_len_b=200: 200 tokens + EOS) traces at this size.
  search = jax.eval_shape(partial(beam_search, model, beam_size=5, max_len=201),
                          {"params": params}, jax.ShapeDtypeStruct((2, 30), jnp.int32))
  assert search[0].shape == (2, 201) and search[1].shape == (2,)
  unshared = models.get("transformer_translation_tiny", num_classes=V_TGT, vocab_size=V_SRC)
  unshared = unshared.clone(share_decoder_input_output_embed=False)
  assert _count(_abstract_params(unshared)) == _formula(V_SRC, V_TGT, 64, 128, 2, 2, False)


@pytest.mark.slow
def test_init_follows_fairseq(tiny):
  model, variables, _, _ = tiny
  params = variables["params"]
  for table in ("encoder_embed_tokens", "decoder_embed_tokens"):
    emb = np.asarray(params[table]["embedding"])
    assert not emb[PAD].any() and emb[1:].std() == pytest.approx(64 ** -0.5, rel=0.1)
  layer = params["decoder_layer_0"]
  assert not np.asarray(layer["self_attn"]["out_proj"]["bias"]).any()
  bound = np.sqrt(6 / 128)  # xavier_uniform, fan_in + fan_out = 128
  assert np.abs(layer["encoder_attn"]["out_proj"]["kernel"]).max() <= bound
  assert np.abs(layer["self_attn"]["q_proj"]["kernel"]).max() <= bound / np.sqrt(2)
  assert model.max_positions == 1024


def test_sinusoids_are_fairseqs():
  # fairseq get_embedding(num, dim=6, padding_idx=1): half 3, rates exp(-i log(1e4) / 2),
  # sines then cosines, row 1 (padding) zero.
  rows = np.asarray(_translation.sinusoidal_positions(jnp.arange(4), 6))
  rates = np.exp(-np.arange(3) * np.log(10000) / 2)
  angles = np.arange(4)[:, None] * rates
  expected = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
  expected[1] = 0
  np.testing.assert_allclose(rows, expected, atol=1e-6)
  assert _translation.sinusoidal_positions(jnp.arange(3), 7).shape == (3, 7)


def test_prev_output_tokens_shift_right_with_eos_first():
  target = jnp.array([[5, 6, EOS, PAD, PAD], [7, 8, 9, 4, EOS]])
  np.testing.assert_array_equal(shift_right(target),
                                [[EOS, 5, 6, PAD, PAD], [EOS, 7, 8, 9, 4]])


@pytest.mark.slow
def test_outputs_shapes_and_dropout(tiny):
  model, variables, source, target = tiny
  batch = {"source": source, "target": target}
  out = jax.jit(model.apply)(variables, batch)
  assert set(out) == {"logits", "features"}
  assert out["logits"].shape == (3, 6, V_TGT) and out["features"].shape == (3, 6, 64)
  assert {v.dtype for v in out.values()} == {jnp.dtype(jnp.float32)}
  # The shared projection: logits = features @ decoder embedding^T.
  emb = variables["params"]["decoder_embed_tokens"]["embedding"]
  np.testing.assert_allclose(out["logits"], out["features"] @ emb.T, atol=1e-4)
  train = jax.jit(partial(model.apply, train=True))
  same = train(variables, batch)  # no dropout rng: deterministic
  np.testing.assert_allclose(same["logits"], out["logits"], atol=1e-6)
  dropped = train(variables, batch, rngs={"dropout": jax.random.PRNGKey(1)})
  assert np.abs(dropped["logits"] - out["logits"]).max() > 1e-3
  with pytest.raises(ValueError, match="'source' and 'target'"):
    model.apply(variables, {"source": source})
  with pytest.raises(ValueError, match="exceeds max_positions=4"):
    model.clone(max_positions=4).apply(variables, batch)


@pytest.mark.slow
def test_bfloat16_computes_with_float32_params_and_outputs(tiny):
  model, variables, source, target = tiny
  batch = {"source": source, "target": target}
  half = models.get("transformer_translation_tiny", num_classes=V_TGT, vocab_size=V_SRC,
                    dtype=jnp.bfloat16)
  assert {leaf.dtype for leaf in jax.tree.leaves(_abstract_params(half))} == {
      jnp.dtype(jnp.float32)}
  out = jax.jit(half.apply)(variables, batch)
  assert {v.dtype for v in out.values()} == {jnp.dtype(jnp.float32)}
  full = model.apply(variables, batch)["logits"]
  assert np.abs(out["logits"] - full).max() < 0.25 * max(1.0, np.abs(full).max())
  tokens, scores = beam_search(half, variables, source, beam_size=2, max_len=5)
  assert tokens.dtype == jnp.int32 and scores.dtype == jnp.float32
  assert np.isfinite(np.asarray(scores)).all()


def _incremental_logits(model, variables, source, prev):
  @jax.jit
  def run(variables, source, prev):
    memory, mask = model.apply(variables, source, method=model.encode)
    cache = model.apply(variables, memory, prev.shape[1], method=model.init_cache)

    def step(cache, t):
      logits, cache = model.apply(variables, prev[:, t], t, cache, mask,
                                  method=model.decode_step)
      return cache, logits

    return jax.lax.scan(step, cache, jnp.arange(prev.shape[1]))[1].swapaxes(0, 1)

  return run(variables, source, prev)


@pytest.mark.slow
def test_incremental_decoding_equals_teacher_forcing(tiny):
  model, variables, source, target = tiny
  full = model.apply(variables, {"source": source, "target": target})["logits"]
  steps = _incremental_logits(model, variables, source, shift_right(target))
  real = np.asarray(target) != PAD  # inputs are the same up to each real position
  np.testing.assert_allclose(np.asarray(steps)[real], np.asarray(full)[real], atol=1e-5)


@pytest.mark.slow
def test_padding_does_not_change_real_positions(tiny):
  model, variables, source, target = tiny
  apply = jax.jit(model.apply)
  out = apply(variables, {"source": source, "target": target})["logits"]
  padded = apply(variables, {"source": jnp.pad(source, ((0, 0), (0, 5))),
                             "target": jnp.pad(target, ((0, 0), (0, 3)))})["logits"]
  real = np.asarray(target) != PAD
  np.testing.assert_allclose(np.asarray(padded)[:, :6][real], np.asarray(out)[real], atol=1e-5)
  # A row alone equals the same row in a batch with longer rows (shorter rows are padded).
  row = 2
  length = int((np.asarray(source[row]) != PAD).sum())
  t_len = int(real[row].sum())
  alone = apply(variables, {"source": source[row:row + 1, :length],
                            "target": target[row:row + 1, :t_len]})["logits"]
  np.testing.assert_allclose(alone[0], out[row, :t_len], atol=1e-5)


def test_decoder_is_causal(tiny):
  model, variables, source, target = tiny
  apply = jax.jit(model.apply)
  out = np.asarray(apply(variables, {"source": source, "target": target})["logits"])
  for t in (0, 2, 4):
    changed = target.at[0, t].set(4 if int(target[0, t]) != 4 else 5)
    new = np.asarray(apply(variables, {"source": source, "target": changed})["logits"])
    np.testing.assert_allclose(new[0, :t + 1], out[0, :t + 1], atol=1e-6)
    assert np.abs(new[0, t + 1] - out[0, t + 1]).max() > 1e-4
    np.testing.assert_allclose(new[1:], out[1:], atol=1e-6)


def _score(model, variables, source, tokens, len_penalty=1.0):
  """fairseq's normalised score of each row of ``tokens`` (EOS-terminated, PAD after) by the
  teacher-forced forward: the sum of log-softmax values over length ** len_penalty."""
  batch = {"source": source, "target": jnp.asarray(tokens)}
  logits = np.asarray(jax.jit(model.apply)(variables, batch)["logits"], np.float64)
  logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
      - logits.max(-1, keepdims=True)
  tokens = np.asarray(tokens)
  picked = np.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]
  real = tokens != PAD
  return (picked * real).sum(1) / real.sum(1) ** len_penalty


def _check_hypotheses(tokens, max_len):
  tokens = np.asarray(tokens)
  assert tokens.shape[1] == max_len and tokens.dtype == np.int32
  for row in tokens:
    ends = np.flatnonzero(row == EOS)
    assert len(ends) == 1 and ends[0] >= 1  # min_len=1: never empty
    assert not np.isin(row[:ends[0]], (PAD, BOS)).any() and (row[ends[0] + 1:] == PAD).all()


@pytest.mark.slow
def test_beam_of_one_is_greedy_and_wider_beams_score_higher(tiny):
  model, variables, source, _ = tiny
  max_len = 8
  greedy = jax.jit(partial(greedy_search, model, max_len=max_len))(variables, source)
  _check_hypotheses(greedy, max_len)
  one, one_scores = jax.jit(partial(beam_search, model, beam_size=1, max_len=max_len))(
      variables, source)
  np.testing.assert_array_equal(one, greedy)
  greedy_scores = _score(model, variables, source, greedy)
  np.testing.assert_allclose(one_scores, greedy_scores, atol=1e-5)
  wide, wide_scores = beam_search(model, variables, source, beam_size=5, max_len=max_len)
  _check_hypotheses(wide, max_len)
  np.testing.assert_allclose(wide_scores, _score(model, variables, source, wide), atol=1e-5)
  # Not a theorem for beam search with fairseq's stopping rule, but true of this model.
  assert (np.asarray(wide_scores) >= greedy_scores - 1e-6).all()


@pytest.mark.parametrize("len_penalty", [1.0, 0.0])
@pytest.mark.slow
def test_wide_beam_equals_exhaustive_search(len_penalty):
  # 7 tokens: PAD, BOS, EOS and 4 words (UNK included, fairseq generates it). With max_len 3
  # (EOS included) and min_len 1 the outputs are w EOS and w w EOS: 4 + 16 = 20 sequences, so a
  # beam of 20 keeps every one of them.
  model = models.get("transformer_translation_tiny", num_classes=7, vocab_size=V_SRC)
  source = jnp.asarray(_sequences(np.random.default_rng(1), 2, 5, V_SRC))
  variables = jax.jit(model.init)(jax.random.PRNGKey(3),
                                  {"source": source, "target": source[:, :3] % 7})
  words = (3, 4, 5, 6)
  candidates = [list(w) + [EOS] + [PAD] * (2 - len(w))
                for n in (1, 2) for w in itertools.product(words, repeat=n)]
  assert len(candidates) == 20
  tokens, scores = beam_search(model, variables, source, beam_size=20, max_len=3,
                               len_penalty=len_penalty)
  for row in range(2):
    exhaustive = _score(model, variables, jnp.repeat(source[row:row + 1], 20, 0),
                        jnp.asarray(candidates, jnp.int32), len_penalty)
    best = int(np.argmax(exhaustive))
    assert np.sort(exhaustive)[-1] - np.sort(exhaustive)[-2] > 1e-4  # no near tie
    np.testing.assert_array_equal(tokens[row], candidates[best])
    np.testing.assert_allclose(scores[row], exhaustive[best], atol=1e-5)


def test_search_arguments_are_checked(tiny):
  model, variables, source, _ = tiny
  with pytest.raises(ValueError, match="max_len=0 must be an int"):
    greedy_search(model, variables, source, max_len=0)
  with pytest.raises(ValueError, match="beam_size=0 must be a positive int"):
    beam_search(model, variables, source, beam_size=0, max_len=4)
  with pytest.raises(ValueError, match="min_len=4 must be an int"):
    beam_search(model, variables, source, max_len=4, min_len=4)


def _torch_reference_logits(torch, params, source, prev, heads):
  """The same network from PyTorch's own post-norm layers (``nn.TransformerEncoderLayer`` /
  ``nn.TransformerDecoderLayer``, the layout of fairseq's layers with normalize_before=False),
  fairseq's ``forward_embedding`` (scaled embeddings + ``make_positions`` sinusoids with
  padding index 1, padded positions zeroed in the encoder) and the shared output projection."""
  t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
  dim = params["encoder_embed_tokens"]["embedding"].shape[1]

  def sinusoids(tokens):
    half = dim // 2
    rates = torch.exp(torch.arange(half, dtype=torch.float) * -(np.log(10000) / (half - 1)))
    mask = (tokens != PAD).long()
    positions = torch.cumsum(mask, dim=1) * mask + 1  # fairseq's padding index is 1
    angles = positions.float()[..., None] * rates
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    return emb * (positions != 1)[..., None].float()

  def attention(module, p):
    module.in_proj_weight.copy_(torch.cat([t(p[n]["kernel"]).T for n in
                                           ("q_proj", "k_proj", "v_proj")]))
    module.in_proj_bias.copy_(torch.cat([t(p[n]["bias"]) for n in ("q_proj", "k_proj", "v_proj")]))
    module.out_proj.weight.copy_(t(p["out_proj"]["kernel"]).T)
    module.out_proj.bias.copy_(t(p["out_proj"]["bias"]))

  def norm(module, p):
    module.weight.copy_(t(p["scale"]))
    module.bias.copy_(t(p["bias"]))

  def ffn(layer, p):
    layer.linear1.weight.copy_(t(p["fc1"]["kernel"]).T)
    layer.linear1.bias.copy_(t(p["fc1"]["bias"]))
    layer.linear2.weight.copy_(t(p["fc2"]["kernel"]).T)
    layer.linear2.bias.copy_(t(p["fc2"]["bias"]))

  src, tgt = torch.tensor(np.asarray(source)), torch.tensor(np.asarray(prev))
  ffn_dim = params["encoder_layer_0"]["fc1"]["kernel"].shape[1]
  kw = dict(d_model=dim, nhead=heads, dim_feedforward=ffn_dim, dropout=0.0, batch_first=True)
  with torch.no_grad():
    x = t(params["encoder_embed_tokens"]["embedding"])[src] * dim ** 0.5 + sinusoids(src)
    x = x * (src != PAD)[..., None].float()
    for i in range(sum(name.startswith("encoder_layer_") for name in params)):
      p, layer = params[f"encoder_layer_{i}"], torch.nn.TransformerEncoderLayer(**kw).eval()
      attention(layer.self_attn, p["self_attn"])
      norm(layer.norm1, p["self_attn_layer_norm"])
      ffn(layer, p)
      norm(layer.norm2, p["final_layer_norm"])
      x = layer(x, src_key_padding_mask=src == PAD)
    memory, emb = x, t(params["decoder_embed_tokens"]["embedding"])
    y = emb[tgt] * dim ** 0.5 + sinusoids(tgt)
    causal = torch.triu(torch.ones(tgt.shape[1], tgt.shape[1], dtype=torch.bool), 1)
    for i in range(sum(name.startswith("decoder_layer_") for name in params)):
      p, layer = params[f"decoder_layer_{i}"], torch.nn.TransformerDecoderLayer(**kw).eval()
      attention(layer.self_attn, p["self_attn"])
      norm(layer.norm1, p["self_attn_layer_norm"])
      attention(layer.multihead_attn, p["encoder_attn"])
      norm(layer.norm2, p["encoder_attn_layer_norm"])
      ffn(layer, p)
      norm(layer.norm3, p["final_layer_norm"])
      y = layer(y, memory, tgt_mask=causal, tgt_key_padding_mask=tgt == PAD,
                memory_key_padding_mask=src == PAD)
    return (y @ emb.T).numpy()


def test_forward_equals_pytorch_post_norm_layers(tiny):
  torch = pytest.importorskip("torch")
  model, variables, source, target = tiny
  logits = model.apply(variables, {"source": source, "target": target})["logits"]
  reference = _torch_reference_logits(torch, variables["params"], source, shift_right(target),
                                      model.heads)
  real = np.asarray(target) != PAD
  np.testing.assert_allclose(np.asarray(logits)[real], reference[real], atol=1e-4)
