"""Text classification data: token datasets, their raw sources and the subword tokenizer.

A text split is a `TokenDataset`: int32 token ids ``[N, L]`` (0 is padding) and int32 labels.
Raw text comes from tensorflow-datasets (``ag_news_subset``, ``yelp_polarity_reviews``, read
through ``tfds.data_source`` without TensorFlow) or from the CSV release of Zhang, Zhao and
LeCun (2015) (``yahoo_answers``, ``yelp_review_full``). A sentencepiece unigram tokenizer is
trained once per (dataset, vocabulary size) on the training split's text and cached beside the
data, under ``<data_dir>/jaxkd_text/``, with the token ids of each split; later loads read the
cache. ``mock_text`` is a synthetic corpus for tests, already in token ids.
"""
from __future__ import annotations

import csv
import dataclasses
import importlib
import io
import logging
import os
from typing import NamedTuple, Optional, Sequence

import numpy as np

from jaxkd.data._dataset import DatasetNotFoundError

__all__ = ["TokenDataset", "TextSource", "TEXT_SOURCES", "DEFAULT_VOCAB_SIZE",
           "DEFAULT_MAX_LENGTH", "encode", "load_text", "mock_text", "read_csv",
           "tokenizer", "text_cache_dir"]

# Ours: ALR's abstract gives no preprocessing. 16k unigram pieces cover these corpora well;
# 256 pieces keep most AG News and Yahoo examples whole and cut long Yelp reviews.
DEFAULT_VOCAB_SIZE = 16000
DEFAULT_MAX_LENGTH = 256
PAD_ID, UNK_ID = 0, 1
# The tokenizer's training text: at most this many examples, drawn with a fixed seed (ours;
# sentencepiece's own guidance is a few hundred thousand to millions of sentences).
_MAX_TRAINING_SENTENCES = 300_000
# mock_text: its fixed vocabulary and length.
MOCK_VOCAB_SIZE, MOCK_LENGTH = 64, 16

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, eq=False)
class TokenDataset:
  """One split of a text classification dataset, as token ids held in host memory.

  Attributes:
    name: registry name of the dataset.
    split: ``"train"`` or ``"test"`` (optionally sliced).
    tokens: ``int32 [N, L]`` in ``[0, vocab_size)``; 0 is padding (at the end of a row).
    labels: ``int32 [N]`` in ``[0, num_classes)``.
    num_classes: number of classes.
    vocab_size: size of the token vocabulary (the models' embedding tables).

  It serves `jaxkd.tasks.text_classification`; the engine reads its token ids as ``inputs``.
  """
  name: str
  split: str
  tokens: np.ndarray
  labels: np.ndarray
  num_classes: int
  vocab_size: int

  def __post_init__(self):
    tokens, labels = self.tokens, self.labels
    where = f"dataset {self.name!r} ({self.split})"
    if tokens.dtype != np.int32 or tokens.ndim != 2:
      raise ValueError(f"{where}: tokens must be int32 [N, L]; got {tokens.dtype} with shape "
                       f"{tokens.shape}")
    if tokens.shape[0] == 0 or tokens.shape[1] == 0:
      raise ValueError(f"{where}: tokens have shape {tokens.shape}; allowed: at least 1 "
                       "example of at least 1 position")
    if labels.dtype != np.int32 or labels.shape != tokens.shape[:1]:
      raise ValueError(f"{where}: labels must be int32 [{tokens.shape[0]}]; got "
                       f"{labels.dtype} with shape {labels.shape}")
    if self.num_classes < 1 or self.vocab_size < 2:
      raise ValueError(f"{where}: num_classes={self.num_classes}, vocab_size="
                       f"{self.vocab_size}; allowed: num_classes >= 1, vocab_size >= 2")
    bad = np.flatnonzero((labels < 0) | (labels >= self.num_classes))
    if bad.size:
      raise ValueError(f"{where}: example {bad[0]} has label {labels[bad[0]]}; allowed: "
                       f"[0, {self.num_classes}) ({bad.size} bad labels in all)")
    bad = np.flatnonzero(((tokens < 0) | (tokens >= self.vocab_size)).any(1))
    if bad.size:
      raise ValueError(f"{where}: example {bad[0]} has token ids outside [0, "
                       f"{self.vocab_size}) ({bad.size} bad examples in all)")

  # What the engine reads of every dataset: the task it serves (`jaxkd.tasks`) and its inputs.
  task = "text_classification"
  input_dtype = np.int32

  @property
  def inputs(self) -> np.ndarray:
    """The engine's name for a split's inputs: the token ids."""
    return self.tokens

  @property
  def input_shape(self) -> tuple[int]:
    """``(L,)``: the shape of one example's inputs."""
    return tuple(self.tokens.shape[1:])

  @property
  def ids(self) -> np.ndarray:
    """``int32 [N]`` example ids: the position of each example in the split."""
    return np.arange(self.num_examples, dtype=np.int32)

  @property
  def num_examples(self) -> int:
    return self.tokens.shape[0]


class TextSource(NamedTuple):
  """Where a text dataset's raw text comes from.

  Attributes:
    tfds_fields: tensorflow-datasets text features joined (with a space) into one text; empty
      for a CSV dataset.
    csv_folder: the folder of the CSV release (``train.csv``, ``test.csv``) under data_dir.
    num_classes: the number of classes of a CSV dataset (tfds datasets say their own).
    tfds_module: a module to import first: tfds registers some legacy builders
      (``yelp_polarity_reviews``) only when their module is imported.
  """
  tfds_fields: tuple[str, ...] = ()
  csv_folder: str = ""
  num_classes: int = 0
  tfds_module: str = ""


TEXT_SOURCES = {
    "ag_news_subset": TextSource(tfds_fields=("title", "description")),
    "yelp_polarity_reviews": TextSource(tfds_fields=("text",),
                                        tfds_module="tensorflow_datasets.text.yelp_polarity"),
    "yahoo_answers": TextSource(csv_folder="yahoo_answers_csv", num_classes=10),
    "yelp_review_full": TextSource(csv_folder="yelp_review_full_csv", num_classes=5),
}


def mock_text(num_examples: int = 256, num_classes: int = 4, seed: int = 0, *,
              split: str = "train") -> TokenDataset:
  """A synthetic corpus whose class is set by the words present, for tests.

  Ids 2 .. 2 + 3K - 1 are class words (three per class), the rest of the 64 ids filler. Each
  example has 4 to 16 tokens of filler, one to three of which are replaced by words of its
  class, then padding. Labels cycle through the classes, then are shuffled.
  """
  if num_examples < 1 or not 1 <= num_classes <= (MOCK_VOCAB_SIZE - 3) // 4 or seed < 0:
    raise ValueError(f"mock_text needs num_examples >= 1, 1 <= num_classes <= 15, seed >= 0; "
                     f"got {num_examples}, {num_classes}, {seed}.")
  rng = np.random.default_rng((seed, 0 if split.startswith("train") else 1))
  labels = rng.permutation(np.arange(num_examples) % num_classes).astype(np.int32)
  first_filler = 2 + 3 * num_classes
  tokens = np.zeros((num_examples, MOCK_LENGTH), np.int32)
  for i, label in enumerate(labels):
    n = int(rng.integers(4, MOCK_LENGTH + 1))
    row = rng.integers(first_filler, MOCK_VOCAB_SIZE, n)
    where = rng.choice(n, int(rng.integers(1, 4)), replace=False)
    row[where] = 2 + 3 * label + rng.integers(0, 3, where.size)
    tokens[i, :n] = row
  return TokenDataset("mock_text", split, tokens, labels, num_classes, MOCK_VOCAB_SIZE)


def _csv_text(fields: Sequence[str]) -> str:
  # The release escapes line breaks as a backslash and an n.
  return " ".join(f.replace("\\n", " ").strip() for f in fields if f.strip())


def read_csv(path: str) -> tuple[list[str], np.ndarray]:
  """The texts and 0-based labels of one CSV file of Zhang et al.'s (2015) release.

  Each row is ``"class","field",...``: a 1-based class index, then the text fields (Yahoo
  Answers: question title, question content, best answer; Yelp: the review), joined here with
  spaces into one text.

  Raises:
    ValueError: a row without text fields or whose class is not a positive integer, naming
      the file and the line.
  """
  texts, labels = [], []
  with open(path, newline="", encoding="utf-8") as f:
    for line, row in enumerate(csv.reader(f), start=1):
      if len(row) < 2 or not row[0].strip().isdigit() or int(row[0]) < 1:
        raise ValueError(f"{path}:{line}: a row must be a 1-based class then text fields; "
                         f"got {row[:2]!r}")
      labels.append(int(row[0]) - 1)
      texts.append(_csv_text(row[1:]))
  return texts, np.asarray(labels, np.int32)


def _csv_hint(name: str, folder: str, data_dir: str) -> str:
  stand_in = (" As a stand-in without the CSVs, data.name='yelp_polarity_reviews' (tfds, 2 "
              "classes) reads Yelp reviews through tensorflow-datasets."
              if name == "yelp_review_full" else "")
  return (f"dataset {name!r}: {os.path.join(data_dir, folder)}/{{train,test}}.csv not found. "
          f"Download {folder}.tar.gz of Zhang et al. (2015) (the 'Character-level "
          "Convolutional Networks for Text Classification' release) and unpack it into "
          f"DATA_DIR so that DATA_DIR/{folder}/train.csv exists, then pass data_dir=DATA_DIR."
          f"{stand_in} Nothing is downloaded automatically.")


def _raw(name: str, split: str, data_dir: str) -> tuple[list[str], np.ndarray, int]:
  """The texts, labels and number of classes of one whole split (``"train"`` or ``"test"``)."""
  source = TEXT_SOURCES[name]
  if source.csv_folder:
    path = os.path.join(data_dir, source.csv_folder, f"{split}.csv")
    if not os.path.isfile(path):
      raise DatasetNotFoundError(_csv_hint(name, source.csv_folder, data_dir))
    texts, labels = read_csv(path)
    bad = np.flatnonzero(labels >= source.num_classes)
    if bad.size:
      raise ValueError(f"{path}: row {bad[0] + 1} has class {labels[bad[0]] + 1}; allowed: "
                       f"1 .. {source.num_classes}")
    return texts, labels, source.num_classes
  from jaxkd.data import _tfds  # pylint: disable=import-outside-toplevel
  if source.tfds_module:
    importlib.import_module(source.tfds_module)
  records = _tfds.open_source(name, split, data_dir)
  if len(records) == 0:
    raise DatasetNotFoundError(f"'{name}' split '{split}' is empty. "
                               + _tfds.prepare_hint(name, data_dir))
  num_classes = int(records.dataset_info.features["label"].num_classes)
  texts, labels = [], np.empty((len(records),), np.int32)
  # Record by record: the mocked sources of tfds.testing break `__getitems__`.
  for i in range(len(records)):
    example = records[i]
    fields = [example[f] for f in source.tfds_fields]
    texts.append(" ".join((f.decode("utf-8") if isinstance(f, bytes) else str(f)).strip()
                          for f in fields))
    labels[i] = example["label"]
  return texts, labels, num_classes


def text_cache_dir(data_dir: Optional[str]) -> str:
  """``<data_dir>/jaxkd_text`` (data_dir default: ``$TFDS_DATA_DIR`` or ~/tensorflow_datasets)."""
  return os.path.join(_data_dir(data_dir), "jaxkd_text")


def _data_dir(data_dir: Optional[str]) -> str:
  return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR")
                            or "~/tensorflow_datasets")


def _write_atomically(path: str, payload: bytes) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(payload)
  os.replace(tmp, path)


def tokenizer(name: str, texts: Optional[Sequence[str]], vocab_size: int, cache_dir: str):
  """The sentencepiece unigram tokenizer of ``name``: read from the cache, or trained and cached.

  Trained on at most 300,000 of ``texts`` (the training split's), drawn with a fixed seed and
  kept in order; the file is cached, so every run on one data_dir shares one tokenizer. Ids: 0
  padding, 1 unknown, no begin/end markers. ``vocab_size`` is an upper bound (a small corpus may give
  fewer pieces).

  Args:
    name: the dataset's name (the cache file's).
    texts: the training texts; None when the caller knows the cache holds the tokenizer.
    vocab_size: the largest vocabulary.
    cache_dir: where ``<name>_unigram<vocab_size>.model`` is kept.

  Returns:
    A ``sentencepiece.SentencePieceProcessor``.
  """
  import sentencepiece as spm  # pylint: disable=import-outside-toplevel
  path = os.path.join(cache_dir, f"{name}_unigram{vocab_size}.model")
  if not os.path.isfile(path):
    if texts is None:
      raise FileNotFoundError(path)
    order = np.arange(len(texts))
    if len(texts) > _MAX_TRAINING_SENTENCES:
      order = np.sort(np.random.default_rng(0).choice(len(texts), _MAX_TRAINING_SENTENCES,
                                                      replace=False))
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=(texts[i] for i in order if texts[i]), model_writer=model,
        vocab_size=vocab_size, model_type="unigram", hard_vocab_limit=False,
        pad_id=PAD_ID, unk_id=UNK_ID, bos_id=-1, eos_id=-1, input_sentence_size=0,
        shuffle_input_sentence=False, num_threads=min(8, os.cpu_count() or 1),
        character_coverage=0.9995,
        max_sentence_length=1 << 16, minloglevel=2)
    _write_atomically(path, model.getvalue())
  return spm.SentencePieceProcessor(model_file=path)


def encode(processor, texts: Sequence[str], max_length: int) -> np.ndarray:
  """``int32 [N, max_length]`` ids of ``texts``: the first ``max_length`` pieces, 0-padded."""
  tokens = np.zeros((len(texts), max_length), np.int32)
  for i, ids in enumerate(processor.encode(list(texts), out_type=int)):
    ids = ids[:max_length]
    tokens[i, :len(ids)] = ids
  return tokens


def load_text(name: str, split: str, data_dir: Optional[str], *,
              vocab_size: int = DEFAULT_VOCAB_SIZE,
              max_length: int = DEFAULT_MAX_LENGTH) -> TokenDataset:
  """One whole split (``"train"`` or ``"test"``) of a text dataset as token ids.

  The first load trains the tokenizer on the training split (`tokenizer`) and writes the
  split's ids to ``<data_dir>/jaxkd_text/<name>_<split>_unigram<V>_len<L>.npz``; later loads
  read that file. Delete the folder to tokenize again.

  Raises:
    DatasetNotFoundError: the raw data is absent; the message says how to prepare it.
  """
  if name == "mock_text":
    return mock_text(256 if split == "train" else 64, seed=0, split=split)
  for key, value, low in (("vocab_size", vocab_size, 16), ("max_length", max_length, 1)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
      raise ValueError(f"{key}={value!r}: must be an int >= {low}")
  data_dir = _data_dir(data_dir)
  cache = text_cache_dir(data_dir)
  tag = f"unigram{vocab_size}"
  path = os.path.join(cache, f"{name}_{split}_{tag}_len{max_length}.npz")
  if not os.path.isfile(path):
    texts, labels, num_classes = _raw(name, split, data_dir)
    model = os.path.join(cache, f"{name}_{tag}.model")
    train_texts = texts if split == "train" else (
        None if os.path.isfile(model) else _raw(name, "train", data_dir)[0])
    processor = tokenizer(name, train_texts, vocab_size, cache)
    tokens = encode(processor, texts, max_length)
    buffer = io.BytesIO()
    np.savez(buffer, tokens=tokens, labels=labels, num_classes=num_classes,
             vocab_size=processor.get_piece_size())
    _write_atomically(path, buffer.getvalue())
    _log.info("tokenized %s %s (%d texts) into %s", name, split, len(texts), path)
  with np.load(path) as cached:
    return TokenDataset(name, split, cached["tokens"], cached["labels"],
                        int(cached["num_classes"]), int(cached["vocab_size"]))
