"""Translation: token-count batches, per-token objectives, the engine and BLEU end to end."""
import dataclasses
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd import data as data_lib
from jaxkd import objectives
from jaxkd.data import _translation as tr
from jaxkd.train import ConfigError


# --------------------------------------------------------------------------- data


def _tiny_iwslt(folder):
  """A prepared-IWSLT-style folder: tokenised, BPE'd text, one sentence per line."""
  lines = {
      "train": (["das ist gut .", "ein hau@@ s", "das hau@@ s ist gut ."],
                ["this is good .", "a hou@@ se", "the hou@@ se is good ."]),
      "valid": (["ist das gut ?"], ["is that good ?"]),
      "test": (["das hau@@ s", "ein neu@@ es wort"], ["the hou@@ se", "a new word"]),
  }
  os.makedirs(folder, exist_ok=True)
  for split, (de, en) in lines.items():
    for lang, text in (("de", de), ("en", en)):
      with open(os.path.join(folder, f"{split}.{lang}"), "w") as f:
        f.write("\n".join(text) + "\n")
  return folder


def test_iwslt_files_vocabulary_and_references(tmp_path):
  folder = _tiny_iwslt(tmp_path / "iwslt14.tokenized.de-en")
  train = data_lib.load("iwslt14_de_en", "train", str(tmp_path))  # the parent works too
  test = data_lib.load("iwslt14_de_en", "test", str(folder))
  # fairseq's dictionary: the specials, then the words by count (ties alphabetically).
  assert train.source_vocab.words[:4] == tr.SPECIALS
  assert train.source_vocab.words[4:] == (".", "das", "gut", "hau@@", "ist", "s", "ein")
  assert train.num_classes == len(train.target_vocab) and train.vocab_size == 4 + 7
  assert list(train.source[0]) == [train.source_vocab.index[w] for w in "das ist gut .".split()
                                   ] + [tr.EOS]
  # Unknown words become UNK; references are the de-BPE'd text BLEU scores.
  assert tr.UNK in test.source[1]
  assert test.references == ("the house", "a new word")
  assert test.detokenize(["the", "hou@@", "se"]) == "the house"
  assert data_lib.load("iwslt14_de_en", "validation", str(folder)).num_examples == 1
  with pytest.raises(data_lib.DatasetNotFoundError, match="prepare-iwslt14.sh"):
    data_lib.load("iwslt14_de_en", "train", str(tmp_path / "absent"))
  with pytest.raises(ValueError, match="no validation split"):
    data_lib.load("mock", "validation")


def test_token_count_batches_cover_each_sentence_once_within_the_budget():
  data = dataclasses.replace(data_lib.mock_translation(600, seed=0, split="train",
                                                      lengths=(2, 20)),
                             max_tokens=96, rows_multiple=4)
  lengths = data._lengths()
  plan = data.plan(train=True)
  ids = np.concatenate(plan)
  real = ids[ids >= 0]
  np.testing.assert_array_equal(np.sort(real), np.arange(data.num_examples))
  shapes = set()
  for batch_ids in plan:
    batch = data.batch(batch_ids)
    rows, length = batch["label"].shape
    shapes.add((rows, length))
    assert rows % 4 == 0 and (rows * length <= 96 or rows == 4)
    assert length % data.length_multiple == 0
    assert length >= lengths[batch_ids[batch_ids >= 0]].max()
    np.testing.assert_array_equal(batch["mask"], batch_ids >= 0)
    assert (batch["label"][~batch["mask"]] == tr.PAD).all()
  # One shape per length bucket: a run compiles once per bucket, not per batch.
  assert len(shapes) == len({s[1] for s in shapes}) == 3  # lengths 8, 16 and 24
  # The order is a pure function of (seed, epoch); a resumed epoch reads the same batches.
  whole = list(data.batches(train=True, seed=3, epoch=1))
  again = list(data.batches(train=True, seed=3, epoch=1, start_step=2))
  for a, b in zip(whole[2:], again):
    chex.assert_trees_all_equal(a, b)
  other = list(data.batches(train=True, seed=3, epoch=2))
  assert any((a["id"] != b["id"]).any() for a, b in zip(whole, other))
  # Two processes read disjoint halves of every global batch.
  halves = [list(data.batches(train=True, seed=0, epoch=0, process_index=i, process_count=2))
            for i in range(2)]
  first = next(data.batches(train=True, seed=0, epoch=0))
  np.testing.assert_array_equal(np.concatenate([halves[0][0]["id"], halves[1][0]["id"]]),
                                first["id"])


def test_evaluation_batches_keep_long_sentences_and_training_drops_them():
  data = dataclasses.replace(data_lib.mock_translation(100, seed=1, split="test"),
                             max_tokens=64, max_length=5)
  lengths = data._lengths()
  kept_train = np.concatenate(data.plan(train=True))
  assert set(kept_train[kept_train >= 0]) == set(np.flatnonzero(lengths <= 5))
  kept_eval = np.concatenate(data.plan(train=False))
  assert sorted(kept_eval[kept_eval >= 0]) == list(range(data.num_examples))


# --------------------------------------------------------------------------- objectives


def _fairseq_label_smoothed_nll(logits, target, eps, pad=tr.PAD):
  """fairseq's label_smoothed_nll_loss (reduce, ignore_index=pad) / number of real tokens."""
  lprobs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1,
                                                                                keepdims=True)
                           ) - logits.max(-1, keepdims=True)
  nll = -np.take_along_axis(lprobs, target[..., None], -1)[..., 0]
  smooth = -lprobs.sum(-1)
  real = target != pad
  eps_i = eps / (lprobs.shape[-1] - 1)
  loss = (1.0 - eps - eps_i) * nll + eps_i * smooth
  return (loss * real).sum() / real.sum()


def test_label_smoothing_per_token_is_fairseqs_criterion():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 5, 11)).astype(np.float32)
  target = rng.integers(4, 11, size=(3, 5))
  target[0, 3:] = tr.PAD
  target[2, 1:] = tr.PAD
  obj = objectives.get("lsr", smoothing=0.1, convention="others")
  from jaxkd import tasks
  flat, labels, _, weights = tasks.per_token(jnp.asarray(logits), jnp.asarray(target))
  loss, metrics, _ = obj.loss(flat, labels, obj.init(num_classes=11), step=0, weights=weights)
  np.testing.assert_allclose(float(loss), _fairseq_label_smoothed_nll(logits, target, 0.1),
                             rtol=1e-5)
  np.testing.assert_allclose(float(metrics["ce"]),
                             _fairseq_label_smoothed_nll(logits, target, 0.0), rtol=1e-5)


def test_word_level_kd_per_token_matches_numpy():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 4, 7)).astype(np.float32)
  teacher = rng.normal(size=(2, 4, 7)).astype(np.float32)
  target = rng.integers(4, 7, size=(2, 4))
  target[1, 2:] = tr.PAD
  from jaxkd import tasks
  flat, labels, t, weights = tasks.per_token(jnp.asarray(logits), jnp.asarray(target),
                                             jnp.asarray(teacher))
  obj = objectives.get("kd", alpha=0.5, temperature=1.0, temperature_squared=False)
  loss, _, _ = obj.loss(flat, labels, {}, step=0, teacher_logits=t, weights=weights)
  log_s = jax.nn.log_softmax(logits)
  p_t = jax.nn.softmax(teacher)
  kl = (p_t * (jnp.log(p_t) - log_s)).sum(-1)
  ce = -np.take_along_axis(np.asarray(log_s), target[..., None], -1)[..., 0]
  real = target != tr.PAD
  want = ((0.5 * ce + 0.5 * np.asarray(kl)) * real).sum() / real.sum()
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)


def test_online_class_matrix_ignores_padding_tokens():
  """OLS accumulates its class matrix over real tokens only: padding rows change nothing."""
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(6, 5)).astype(np.float32) * 3
  labels = rng.integers(0, 5, size=6)
  obj = objectives.get("ols", steps_per_epoch=1)
  state = obj.init(num_classes=5)
  _, _, plain = obj.loss(logits, labels, state, step=0)
  padded_logits = np.concatenate([logits, rng.normal(size=(4, 5)).astype(np.float32)])
  padded_labels = np.concatenate([labels, np.zeros(4, int)])
  weights = np.concatenate([np.ones(6), np.zeros(4)]).astype(np.float32)
  _, _, padded = obj.loss(padded_logits, padded_labels, state, step=0, weights=weights)
  chex.assert_trees_all_close(plain, padded, atol=1e-6)


# --------------------------------------------------------------------------- engine


def _config(method="ce", **method_kwargs):
  from jaxkd.config import defaults
  config = defaults.base_config()
  config.method = {"name": method, **method_kwargs}
  config.data.name = "mock_translation"
  config.data.crop_padding, config.data.rotation_degrees = 0, 0.0
  config.data.max_tokens, config.data.max_length = 256, 64
  config.model.name = "transformer_translation_tiny"
  config.train.num_steps, config.train.log_every_steps = 2, 1
  config.train.checkpoint_every_steps = 2
  opt = config.train.optimizer
  opt.name, opt.learning_rate, opt.betas, opt.weight_decay = "adam", 1e-3, (0.9, 0.98), 0.0
  opt.schedule, opt.warmup_steps, opt.warmup_epochs = "inverse_sqrt", 2, 0.0
  config.generate.beam_size, config.generate.max_len_b = 2, 10
  config.mesh.data = 1
  return config


@pytest.mark.parametrize("method, why", [
    ("pskd", "a table row per training example"),
    ("zipf", "per-position class votes"),
    ("ras_kd", "penultimate features"),
    ("cskd", "partner rows"),
    ("dist", "intra-class relation"),
])
def test_methods_that_cannot_apply_per_token_are_refused_by_name(method, why):
  from jaxkd.train import build_run
  with pytest.raises(ConfigError, match=f"config.method.name='{method}'.*{why}") as err:
    build_run(_config(method))
  # The list of what is allowed is derived from the methods' inputs and teachers; this is it.
  assert str(err.value).rstrip(".").endswith(
      "allowed on translation: ce, lsr, kd, tfkd_self, tfkd_reg, lsrkd, lsrkd_tc, mrkd, "
      "mrkd_tc, alr, ols, ema_kd, dkd, ctkd")


def test_translation_config_errors_name_the_key():
  from jaxkd.train import build, build_run
  config = _config()
  config.train.steps_per_dispatch = 4
  with pytest.raises(ConfigError, match="train.steps_per_dispatch=4.*length bucket"):
    build_run(config)
  config = _config()
  config.model.name = "transformer_text"
  with pytest.raises(ConfigError, match="holds sentence pairs; allowed: transformer_"):
    build_run(config)
  config = _config()
  config.data.flip = True
  with pytest.raises(ConfigError, match="data.flip=True.*token ids"):
    build_run(config)
  config = _config()
  config.train.optimizer.warmup_steps = 0
  with pytest.raises(ConfigError, match="warmup_steps=0.*inverse_sqrt"):
    build(config)


@pytest.mark.parametrize("method, kwargs", [
    ("mrkd", {"refresh_every": 1}),  # the replay copies of the model as per-token teachers
    ("tfkd_reg", {}),
    ("ols", {}),  # an online class matrix over the target vocabulary, padding excluded
])
@pytest.mark.slow
def test_per_token_objectives_train(method, kwargs, tmp_path):
  from jaxkd.train import train_and_evaluate
  config = _config(method, **kwargs)
  config.train.num_steps = 3
  config.train.checkpoint_every_steps = 3
  summary = train_and_evaluate(config, str(tmp_path))
  assert summary["steps"] == 3 and np.isfinite(summary["last"]["nll"])
  assert 0.0 <= summary["last"]["bleu"] <= 100.0
  with open(tmp_path / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  train = [r for r in records if "train/loss" in r]
  assert all(np.isfinite(r["train/loss"]) for r in train)
  if method == "mrkd":  # the replay teacher was filled after step 1 and counted after
    assert train[-1]["train/teacher_active"] == 1.0


@pytest.mark.slow
def test_transformer_learns_to_reverse_and_beam_search_agrees_with_greedy(tmp_path):
  """End to end through `jaxkd train`: the tiny Transformer learns the reversal task (BLEU of
  beam search on the held-out test split, by sacrebleu) within seconds on a CPU; on the trained
  model, beam search of width 1 is greedy search, and a wider beam scores at least as well."""
  from jaxkd import cli, models
  from jaxkd.train import build
  from jaxkd.train import checkpoint
  workdir = str(tmp_path / "reverse")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  # The README's first translation command (the config's demo variant), as printed there.
  demo = "configs/ls_vs_kd_iwslt.py:method=lsr,size=demo"
  with open(os.path.join(root, "README.md"), encoding="utf-8") as f:
    assert f"jaxkd train --config {demo} --workdir" in f.read()
  assert cli.main(["train", "--config", os.path.join(root, demo), "--workdir", workdir]) == 0
  with open(os.path.join(workdir, "summary.json")) as f:
    summary = json.load(f)
  assert summary["last"]["bleu"] >= 90.0, summary["last"]
  assert summary["last"]["epoch"] == REVERSE_EPOCHS
  # Beam 1 is greedy, token for token; a wider beam's length-normalised score is no lower.
  from ml_collections import ConfigDict
  with open(os.path.join(workdir, "config.json")) as f:
    trainer = build(ConfigDict(json.load(f)))
  variables, _ = checkpoint.load_variables(workdir)
  batch = next(iter(trainer.eval_batches()))
  source = batch["inputs"]
  model = trainer.run.model
  greedy = models.greedy_search(model, variables, source, max_len=12)
  beam1, _ = models.beam_search(model, variables, source, beam_size=1, max_len=12)
  np.testing.assert_array_equal(np.asarray(beam1), np.asarray(greedy))
  _, scores1 = models.beam_search(model, variables, source, beam_size=1, max_len=12)
  _, scores4 = models.beam_search(model, variables, source, beam_size=4, max_len=12)
  assert (np.asarray(scores4) >= np.asarray(scores1) - 1e-5).all()
  # `jaxkd eval` decodes the split again to the same BLEU; the report's record and table carry
  # it (per-token metrics, no stability).
  from jaxkd.reporting import Claim, Row, Table, _collect, render
  from jaxkd.train import evaluate
  result = evaluate.evaluate_checkpoint(workdir)
  assert result["metrics"]["bleu"] == pytest.approx(summary["last"]["bleu"], abs=1e-6)
  assert "| BLEU |" in evaluate.format_table(result)
  record = _collect.collect(trainer.run.config, workdir, summary)
  assert record["task"] == "translation" and record["stability"] is None
  assert record["final"]["count"] == sum(len(t) for t in trainer.run.eval_data.target)
  table = Table("t", "t", rows=(Row("a", "method=lsr"), Row("b", "method=lsr")),
                claims=(Claim("a beats b", "a", "b", metric="bleu"),))
  text = render.render_markdown(table, {"a": [dict(record, seed=0)], "b": [dict(record, seed=0)]},
                                [])
  assert "| BLEU |" in text and f"{summary['last']['bleu']:.2f}" in text and "1 - S" not in text


REVERSE_EPOCHS = 4  # BLEU 93.3 on the test split (2 CPU cores: about 20 s)


@pytest.mark.slow
def test_every_method_trains_per_token_or_is_refused_by_name():
  """No method is silently wrong on sentence pairs: each builds, or says why it cannot."""
  from jaxkd.train import build_run
  refused = {"pskd", "cskd", "zipf", "ras_kd", "dist"}
  # kd is trained from a teacher run in test_configs' smoke rows
  needs_teacher_run = {"kd", "tfkd_self", "dkd", "ctkd"}
  for method in objectives.names():
    config = _config(method)
    if method in refused:
      with pytest.raises(ConfigError, match=f"method.name='{method}'"):
        build_run(config)
    elif method in needs_teacher_run:
      with pytest.raises(ConfigError, match="teacher.workdir"):
        build_run(config)
    else:
      assert build_run(config).task.task.name == "translation", method


@pytest.mark.slow
def test_eight_devices_train_what_one_trains():
  """Token-count batches sharded over 8 devices: the same parameters as on one device (256
  tokens at length 8 is 32 rows, a multiple of both, so both read the same batches)."""
  from jaxkd.train import build
  params = []
  for devices in (1, 8):
    config = _config("lsr", smoothing=0.1, convention="others")
    config.mesh.data = devices
    trainer = build(config)
    state, batches = trainer.init_state(), trainer.batches()
    for step in range(3):
      state, metrics = trainer.steps.train(state, trainer.consts, batches.get(step))
      metrics["loss"].block_until_ready()
    params.append(jax.device_get(state.params))
  # The attention key projections' biases add the same q.b to every key of a query, which the
  # softmax cancels: their gradient is zero up to float noise, and Adam turns that noise into
  # full-size steps of either sign. Every other parameter must agree.
  flat = [{jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(p)}
          for p in params]
  keys = [k for k in flat[0] if not ("k_proj" in k and "bias" in k)]
  assert len(keys) > 40
  chex.assert_trees_all_close([flat[0][k] for k in keys], [flat[1][k] for k in keys],
                              rtol=1e-4, atol=1e-6)
