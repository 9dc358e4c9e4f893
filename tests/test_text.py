"""Text classification: token datasets, the CSV and tfds sources, the tokenizer cache, the two
text models, the engine on token ids, and the alr_text table through the CLI."""
import csv
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd import cli, data, models, tasks
from jaxkd import config as config_lib
from jaxkd.data import _text
from jaxkd.train import ConfigError, build, build_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT_MODELS = ("cnn_text", "fasttext_text", "transformer_text")

# A synthetic corpus: the topic words present set the class (10 classes, as Yahoo Answers).
_TOPICS = [("goal", "match", "league"), ("vote", "senate", "party"), ("stock", "market", "bank"),
           ("atom", "energy", "physics"), ("guitar", "song", "album"), ("pasta", "recipe", "oven"),
           ("virus", "doctor", "fever"), ("python", "compiler", "code"),
           ("flight", "hotel", "beach"), ("movie", "actor", "scene")]
_FILLER = "the a of to and in is it that for on with as was at by this be from or have".split()


def _corpus(n, seed):
  rng = np.random.default_rng(seed)
  rows = []
  for i in range(n):
    label = i % len(_TOPICS)
    words = list(rng.choice(_FILLER, rng.integers(4, 12)))
    for word in rng.choice(_TOPICS[label], 2):
      words.insert(int(rng.integers(0, len(words) + 1)), str(word))
    rows.append((label, " ".join(words)))
  return rows


def _write_yahoo(root, n_train=200, n_test=40):
  """Zhang et al.'s layout: 1-based class, title, content, answer (a \\n escaped)."""
  folder = os.path.join(root, "yahoo_answers_csv")
  os.makedirs(folder, exist_ok=True)
  for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
    with open(os.path.join(folder, f"{split}.csv"), "w", newline="", encoding="utf-8") as f:
      writer = csv.writer(f, quoting=csv.QUOTE_ALL)
      for label, text in _corpus(n, seed):
        words = text.split()
        writer.writerow([label + 1, " ".join(words[:3]), "", "\\n".join(words[3:])])


def _config(model="fasttext_text", method="ce", steps=3, **data):
  config = config_lib.default()
  config.data.name = "mock_text"
  config.model.name, config.method.name = model, method
  config.mesh.data = 1
  config.train.batch_size, config.train.num_steps = 32, steps
  opt = config.train.optimizer
  opt.name, opt.weight_decay, opt.warmup_epochs = "adamw", 0.0, 0.0
  opt.learning_rate = {"fasttext_text": 1e-2, "cnn_text": 5e-3}.get(model, 2e-3)
  for key, value in data.items():
    config.data[key] = value
  return config


# ---------------------------------------------------------------- data


def test_mock_text_class_words_set_the_label():
  train, test = data.load("mock_text", "train"), data.load("mock_text", "test")
  assert train.tokens.shape == (256, 16) and train.tokens.dtype == np.int32
  assert train.input_shape == (16,) and train.inputs is train.tokens
  assert train.task == "text_classification" and not hasattr(train, "images")
  assert test.num_examples == 64 and train.vocab_size == test.vocab_size == 64
  for row, label in zip(train.tokens, train.labels):
    words = set(row[(row >= 2) & (row < 2 + 3 * train.num_classes)].tolist())
    assert words and {(w - 2) // 3 for w in words} == {label}
  length = (train.tokens != 0).sum(1)
  assert all((row[n:] == 0).all() and (row[:n] != 0).all()
             for row, n in zip(train.tokens, length))  # padding only at the end
  np.testing.assert_array_equal(data.load("mock_text", "train[:25%]").tokens, train.tokens[:64])


def test_token_dataset_rejects_bad_arrays():
  tokens, labels = np.ones((4, 5), np.int32), np.zeros(4, np.int32)
  with pytest.raises(ValueError, match="tokens must be int32"):
    data.TokenDataset("t", "train", tokens.astype(np.int64), labels, 2, 8)
  with pytest.raises(ValueError, match="example 1 has label 2; allowed: \\[0, 2\\)"):
    data.TokenDataset("t", "train", tokens, np.array([0, 2, 0, 0], np.int32), 2, 8)
  with pytest.raises(ValueError, match="token ids outside \\[0, 8\\)"):
    data.TokenDataset("t", "train", tokens * 8, labels, 2, 8)


def test_read_csv_makes_classes_zero_based_and_joins_fields(tmp_path):
  path = tmp_path / "train.csv"
  path.write_text('"3","How do magnets work?","","Electrons spin.\\nThat is all."\n'
                  '"1","Great ""pizza""!"\n', encoding="utf-8")
  texts, labels = data.read_csv(str(path))
  np.testing.assert_array_equal(labels, [2, 0])
  assert labels.dtype == np.int32
  assert texts == ["How do magnets work? Electrons spin. That is all.", 'Great "pizza"!']
  path.write_text('"0","zero is not a class"\n', encoding="utf-8")
  with pytest.raises(ValueError, match="train.csv:1: a row must be a 1-based class"):
    data.read_csv(str(path))


def test_csv_dataset_tokenizes_once_then_reads_the_cache(tmp_path, monkeypatch):
  _write_yahoo(str(tmp_path))
  kw = dict(data_dir=str(tmp_path), vocab_size=80, max_length=24)
  train = data.load("yahoo_answers", "train", **kw)
  test = data.load("yahoo_answers", "test", **kw)
  assert isinstance(train, data.TokenDataset) and train.num_classes == 10
  assert train.tokens.shape == (200, 24) and test.tokens.shape == (40, 24)
  np.testing.assert_array_equal(train.labels, np.arange(200) % 10)  # 1-based -> 0-based
  assert 2 < train.vocab_size <= 80 and test.vocab_size == train.vocab_size
  assert (train.tokens[:, 0] != 0).all() and (train.tokens == 0).any()  # padded rows
  cache = tmp_path / "jaxkd_text"
  assert sorted(os.listdir(cache)) == ["yahoo_answers_test_unigram80_len24.npz",
                                       "yahoo_answers_train_unigram80_len24.npz",
                                       "yahoo_answers_unigram80.model"]
  # A second load reads the cache: the CSVs are no longer consulted.
  monkeypatch.setattr(_text, "_raw", lambda *a: pytest.fail("read the raw text again"))
  again = data.load("yahoo_answers", "train", **kw)
  np.testing.assert_array_equal(again.tokens, train.tokens)
  # The cached tokenizer gives the same ids as the cached arrays.
  processor = _text.tokenizer("yahoo_answers", None, 80, str(cache))
  texts, _ = data.read_csv(str(tmp_path / "yahoo_answers_csv" / "train.csv"))
  np.testing.assert_array_equal(_text.encode(processor, texts, 24), train.tokens)
  half = data.load("yahoo_answers", "train[:50%]", **kw)
  np.testing.assert_array_equal(half.tokens, train.tokens[:100])


def test_missing_csv_says_how_to_prepare_and_names_the_stand_in(tmp_path):
  with pytest.raises(data.DatasetNotFoundError,
                     match="yelp_review_full_csv.*yelp_polarity_reviews"):
    data.load("yelp_review_full", "train", data_dir=str(tmp_path))


def test_tfds_ag_news_and_yelp_polarity_through_mock_data(tmp_path):
  """tfds's mock data works without TensorFlow: random strings, the real features."""
  tfds = pytest.importorskip("tensorflow_datasets")
  kw = dict(data_dir=str(tmp_path), vocab_size=60, max_length=16)
  with tfds.testing.mock_data(num_examples=30):
    ag_train = data.load("ag_news_subset", "train", **kw)
    ag_test = data.load("ag_news_subset", "test", **kw)
    yelp = data.load("yelp_polarity_reviews", "train", **kw)
  assert ag_train.num_classes == 4 and yelp.num_classes == 2
  assert ag_train.tokens.shape == ag_test.tokens.shape == (30, 16)
  assert ag_train.vocab_size == ag_test.vocab_size and (ag_train.tokens[:, 0] != 0).all()


@pytest.mark.slow
def test_a_text_run_needs_no_image_key(tmp_path):
  """The default config on prepared text data with a text model: the task turns the image
  augmentation off by itself (config.json holds the values it ran with)."""
  tfds = pytest.importorskip("tensorflow_datasets")
  workdir = tmp_path / "run"
  # 160 mock examples: the default run trains on train[:90%], at least its batch of 64.
  with tfds.testing.mock_data(num_examples=160):
    assert cli.main(["train", "--config", os.path.join(ROOT, "configs", "default.py"),
                     "--workdir", str(workdir), "--config.data.name=ag_news_subset",
                     "--config.model.name=cnn_text", f"--config.data.data_dir={tmp_path}",
                     "--config.train.num_steps=2"]) == 0
  saved = json.loads((workdir / "config.json").read_text())["data"]
  assert (saved["crop_padding"], saved["flip"], saved["rotation_degrees"]) == (0, False, 0.0)
  # An image run still gets the image defaults.
  image = config_lib.default()
  build_run(image)
  assert (image.data.crop_padding, image.data.flip, image.data.rotation_degrees) == (
      1, False, 10.0)


# ---------------------------------------------------------------- models


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_text_models_ignore_padding(name):
  model = models.get(name, num_classes=3, vocab_size=50)
  tokens = np.zeros((2, 10), np.int32)
  tokens[0, :4], tokens[1, :7] = [5, 9, 2, 7], [3, 3, 8, 1, 4, 6, 2]
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.asarray(tokens))
  apply = jax.jit(model.apply)
  out = apply(variables, jnp.asarray(tokens))
  assert out["logits"].shape == (2, 3) and out["features"].shape[0] == 2
  assert out["feature_map"].shape[:3] == (2, 10, 1) and out["dense_logits"].shape == (2, 10, 1, 3)
  if name == "transformer_text":  # the positions of padding may hold anything
    params = jax.tree_util.tree_map(lambda x: x, variables["params"])
    params["positions"] = params["positions"].at[7:].set(5.0)
    changed = apply({"params": params}, jnp.asarray(tokens))
  else:  # the same words with more padding behind them
    changed = apply(variables, jnp.asarray(np.pad(tokens, ((0, 0), (0, 6)))))
  np.testing.assert_allclose(changed["logits"], out["logits"], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_cnn_text_matches_a_numpy_forward():
  """Kim's CNN by hand: embedding lookup, each width's convolution as explicit sums over the
  window (zero words past the row's end), ReLU, max over the windows starting at real tokens,
  then the linear classifier."""
  model = models.get("cnn_text", num_classes=3, vocab_size=30)
  tokens = np.zeros((3, 7), np.int32)
  tokens[0, :5], tokens[1, :2], tokens[2, :7] = [4, 9, 2, 7, 11], [3, 29], np.arange(1, 8)
  variables = model.init(jax.random.PRNGKey(1), jnp.asarray(tokens))
  out = jax.jit(model.apply)(variables, jnp.asarray(tokens))
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), variables["params"])
  length = (tokens != 0).sum(1)
  features = np.zeros((3, 300))
  for b in range(3):
    x = p["embed"]["embedding"][tokens[b]] * (tokens[b] != 0)[:, None]
    pooled = []
    for k in (3, 4, 5):
      kernel, bias = p[f"conv{k}"]["kernel"], p[f"conv{k}"]["bias"]
      windows = []
      for i in range(length[b]):  # the windows starting at real tokens
        h = bias.copy()
        for t in range(k):
          if i + t < tokens.shape[1]:
            h = h + x[i + t] @ kernel[t]
        windows.append(np.maximum(h, 0.0))
      pooled.append(np.max(windows, axis=0))
    features[b] = np.concatenate(pooled)
  logits = features @ p["head"]["kernel"] + p["head"]["bias"]
  np.testing.assert_allclose(out["features"], features, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out["logits"], logits, rtol=1e-5, atol=1e-5)
  # The feature map holds the same windows at every token; features are its max over real ones.
  real = (tokens != 0)[:, :, None]
  np.testing.assert_allclose(np.where(real, out["feature_map"][:, :, 0], 0).max(1), features,
                             rtol=1e-5, atol=1e-5)


def test_models_get_checks_vocab_size_against_the_kind():
  with pytest.raises(ValueError, match="needs vocab_size"):
    models.get("transformer_text", num_classes=3)
  with pytest.raises(ValueError, match="vocab_size=10: model 'mlp' reads images"):
    models.get("mlp", num_classes=3, vocab_size=10)
  assert models.is_text("fasttext_text") and not models.is_text("resnet18")


# ---------------------------------------------------------------- engine


@pytest.mark.parametrize("key,value,match", [
    ("data.crop_padding", 1, "config.data.crop_padding=1: dataset 'mock_text' holds token ids"),
    ("data.flip", True, "config.data.flip=True: .*no image augmentation; allowed: False"),
    ("model.name", "mlp", "config.model.name='mlp': .*token ids; allowed: cnn_text, "
                          "fasttext_text, transformer_text"),
    ("method.name", "zipf", "config.method.name='zipf': .*dense_logits"),
    ("data.in_memory", False, "config.data.in_memory=False: .*is text"),
    ("data.vocab_size", 4, "config.data.vocab_size=4: must be an int >= 16"),
])
def test_config_errors_on_text_name_the_key(key, value, match):
  config = _config()
  section, field = key.split(".")
  config[section][field] = value
  with pytest.raises(ConfigError, match=match):
    build_run(config)


def test_text_model_on_images_is_refused():
  config = _config()
  config.data.name = "mock"
  with pytest.raises(ConfigError, match="model.name='fasttext_text': .*holds images"):
    build_run(config)


def _top1(trainer, state):
  totals = trainer.predict({"params": state.params, "batch_stats": state.batch_stats},
                           [tasks.metrics()], batches=trainer.eval_batches(64))
  return int(totals["metrics"]["correct_top1"]) / int(totals["metrics"]["count"])


@pytest.mark.slow
@pytest.mark.parametrize("name,steps", [("fasttext_text", 40), ("transformer_text", 20),
                                        ("cnn_text", 20)])
def test_text_models_learn_the_class_words(name, steps):
  """Chance is 25%; a few dozen steps find the class words."""
  trainer = build(_config(name, steps=steps))
  state, batches = trainer.init_state(), trainer.batches()
  for step in range(steps):
    state, metrics = trainer.steps.train(state, trainer.consts, batches.get(step))
  assert np.isfinite(float(metrics["loss"]))
  assert _top1(trainer, state) > 0.9


@pytest.mark.parametrize("method", ["cskd", "pskd", "ras_kd"])
@pytest.mark.slow
def test_methods_beyond_the_logits_train_on_text(method):
  """Partner rows gathered by index (CS-KD), example ids (PS-KD), pooled features (RAS-KD)."""
  trainer = build(_config(method=method, steps=2))
  state, batches = trainer.init_state(), trainer.batches()
  for step in range(2):
    state, metrics = trainer.steps.train(state, trainer.consts, batches.get(step))
  assert np.isfinite(float(metrics["loss"]))


@pytest.mark.slow
def test_alr_text_smoke_row_through_the_cli(tmp_path, capsys):
  workdir = tmp_path / "run"
  config = os.path.join(ROOT, "configs", "alr_text.py") + ":method=alr,smoke"
  assert cli.main(["train", "--config", config, "--workdir", str(workdir)]) == 0
  saved = json.loads((workdir / "config.json").read_text())
  assert saved["data"]["name"] == "mock_text" and saved["model"]["name"] == "fasttext_text"
  records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert records[-1]["step"] == 3 and 0.0 <= records[-1]["eval/top1"] <= 1.0
  captured = capsys.readouterr()
  assert captured.out.startswith("best top-1 ")
  assert "data mock_text: 256 train / 64 eval examples, 16 tokens, vocabulary 64" in captured.err
  assert " examples/s\n" in captured.err and "images/s" not in captured.err  # not images


@pytest.mark.slow
def test_alr_text_smoke_report_collects_the_text_run(tmp_path):
  """`jaxkd report run`'s record of a text run: the final metrics from token ids."""
  from jaxkd.reporting import _collect  # pylint: disable=import-outside-toplevel
  from jaxkd.train import train_and_evaluate  # pylint: disable=import-outside-toplevel
  config = _config(steps=3)
  summary = train_and_evaluate(config, str(tmp_path))
  record = _collect.collect(config, str(tmp_path), summary, projection_classes=(0, 1, 2))
  assert record["final"]["count"] == 64 and len(record["projection"]["labels"]) > 0


@pytest.mark.slow
def test_kd_from_a_text_teacher_run(tmp_path):
  """A frozen teacher read from a text run's checkpoint: its model is rebuilt with the
  student's vocabulary. mock_text ignores data.vocab_size, so a teacher run with another fits."""
  from jaxkd.train import train_and_evaluate  # pylint: disable=import-outside-toplevel
  teacher_dir = str(tmp_path / "teacher")
  train_and_evaluate(_config(steps=2, vocab_size=4000), teacher_dir)
  config = _config(method="kd", steps=2)
  config.teacher.workdir = teacher_dir
  summary = train_and_evaluate(config, str(tmp_path / "student"))
  assert summary["method"] == "kd" and summary["steps"] == 2


def _yahoo_config(root, method="ce", **data):
  """Yahoo Answers from the CSVs `_write_yahoo` put under ``root``: 80 pieces, 24 per example."""
  settings = dict(name="yahoo_answers", data_dir=str(root), vocab_size=80, max_length=24)
  return _config(method=method, steps=2, **{**settings, **data})


@pytest.mark.parametrize("section,teacher,match", [
    ("data", {"vocab_size": 60}, "the teacher was trained with data.vocab_size=60, the student "
                                 "with data.vocab_size=80"),
    ("data", {"max_length": 32}, "the teacher was trained with data.max_length=32, the student "
                                 "with data.max_length=24"),
    ("data", {"name": "ag_news_subset"}, "the teacher was trained on 'ag_news_subset' .*the "
                                         "student on 'yahoo_answers'"),
    ("image", {}, "the teacher was trained on 'mock' .*the student on 'yahoo_answers'"),
])
def test_text_teacher_of_other_tokens_fails_before_loading(tmp_path, monkeypatch, section,
                                                           teacher, match):
  """The teacher run's config.json alone decides: no checkpoint is read (there is none)."""
  _write_yahoo(str(tmp_path))
  if section == "image":
    saved = config_lib.default()
    saved.data.name, saved.model.name = "mock", "small_cnn"
  else:
    saved = _yahoo_config(tmp_path, **teacher)
  teacher_dir = tmp_path / "teacher"
  teacher_dir.mkdir()
  (teacher_dir / "config.json").write_text(json.dumps(saved.to_dict()))
  from jaxkd.teachers import _frozen  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(_frozen, "load_variables", lambda *a, **k: pytest.fail("restored"))
  config = _yahoo_config(tmp_path, method="kd")
  config.teacher.workdir = str(teacher_dir)
  with pytest.raises(ConfigError, match=f"config.teacher.workdir='{teacher_dir}': {match}"):
    build(config)


@pytest.mark.slow
def test_text_teacher_needs_the_students_tokenizer(tmp_path, monkeypatch):
  """Equal settings on the same data bind; another corpus's tokenizer, with the same settings
  but fewer pieces (76 of 80), fails on the checkpoint's metadata before it is restored."""
  from jaxkd.teachers import _frozen  # pylint: disable=import-outside-toplevel
  from jaxkd.train import train_and_evaluate  # pylint: disable=import-outside-toplevel
  _write_yahoo(str(tmp_path / "a"))
  teacher_dir = str(tmp_path / "teacher")
  train_and_evaluate(_yahoo_config(tmp_path / "a"), teacher_dir)
  config = _yahoo_config(tmp_path / "a", method="kd")
  config.teacher.workdir = teacher_dir
  assert build(config).run.teacher.name == "frozen"
  _write_yahoo(str(tmp_path / "b"), n_train=40)
  monkeypatch.setattr(_frozen, "load_variables", lambda *a, **k: pytest.fail("restored"))
  config = _yahoo_config(tmp_path / "b", method="kd")
  config.teacher.workdir = teacher_dir
  with pytest.raises(ConfigError, match=f"config.teacher.workdir='{teacher_dir}': the "
                                        "teacher's embedding table has 80 rows .*the student's "
                                        "data 76 pieces"):
    build(config)
