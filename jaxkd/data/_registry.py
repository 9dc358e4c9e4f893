"""Datasets by name: ``names()`` and ``load(name, split, data_dir)``."""
import dataclasses
import re
from typing import NamedTuple, Optional

from jaxkd.data import _offline
from jaxkd.data import _text
from jaxkd.data import _tfds
from jaxkd.data import _translation
from jaxkd.data._dataset import ArrayDataset, DatasetNotFoundError, mock

__all__ = ["DatasetSpec", "names", "spec", "load", "parse_split", "SPLITS", "token_settings"]

SPLITS = ("train", "validation", "test")  # "validation": translation corpora only


class DatasetSpec(NamedTuple):
  """Where a named dataset comes from and how it is normalised.

  Attributes:
    tfds_name: the tensorflow-datasets builder (None for purely offline sets).
    test_split: the tfds split that plays "test" (ImageNet's is "validation").
    mean: per-channel mean in [0, 1] units, of the training split.
    std: per-channel standard deviation in [0, 1] units.
    in_memory: whether ``load`` may hold it in memory (else ``open_stream``).
    kind: ``"image"`` (an `ArrayDataset`), ``"text"`` (a `TokenDataset` of token ids) or
      ``"translation"`` (a `ParallelDataset` of source and target token ids).
  """
  tfds_name: Optional[str]
  test_split: str
  mean: tuple[float, ...]
  std: tuple[float, ...]
  in_memory: bool = True
  kind: str = "image"

  @property
  def task(self) -> str:
    """The `jaxkd.tasks` task the dataset serves."""
    return {"image": "image_classification", "text": "text_classification",
            "translation": "translation"}[self.kind]


# mean/std: the constants of the reference code bases, so normalised inputs
# match: CIFAR-10 as CS-KD (alinlab/cs-kd datasets.py); CIFAR-100 as Tf-KD
# (yuanli2333/Teacher-free-Knowledge-Distillation data_loader.py, which applies
# them to CIFAR-10 too); ImageNet as torchvision. A recipe that differs replaces
# them with dataclasses.replace(dataset, mean=..., std=...).
_SPECS = {
    "digits": DatasetSpec(None, "test", (), ()),
    "mnist": DatasetSpec("mnist", "test", (0.1307,), (0.3081,)),
    "fashion_mnist": DatasetSpec("fashion_mnist", "test", (0.2860,), (0.3530,)),
    "svhn_cropped": DatasetSpec("svhn_cropped", "test", (0.4377, 0.4438, 0.4728),
                                (0.1980, 0.2010, 0.1970)),
    "cifar10": DatasetSpec("cifar10", "test", (0.4914, 0.4822, 0.4465),
                           (0.2023, 0.1994, 0.2010)),
    "cifar100": DatasetSpec("cifar100", "test",
                            (0.5070751592371323, 0.48654887331495095, 0.4409178433670343),
                            (0.2673342858792401, 0.2564384629170883, 0.27615047132568404)),
    "imagenet2012": DatasetSpec("imagenet2012", "validation", (0.485, 0.456, 0.406),
                                (0.229, 0.224, 0.225), in_memory=False),
    # CUB-200-2011 (200 bird species; 5,994 train and 5,794 test images of varying size):
    # streamed at data.image_size like ImageNet, with ImageNet's constants, as the recipes
    # that fine-tune ImageNet networks on it normalise it.
    "caltech_birds2011": DatasetSpec("caltech_birds2011", "test", (0.485, 0.456, 0.406),
                                     (0.229, 0.224, 0.225), in_memory=False),
    "mock": DatasetSpec(None, "test", (), ()),
    # Text classification (jaxkd.data._text): token ids of a sentencepiece tokenizer trained
    # on the training split. AG News and Yelp polarity through tensorflow-datasets; Yahoo
    # Answers and Yelp-Full (5 stars) from Zhang et al.'s (2015) CSV release under data_dir.
    "ag_news_subset": DatasetSpec("ag_news_subset", "test", (), (), kind="text"),
    "yelp_polarity_reviews": DatasetSpec("yelp_polarity_reviews", "test", (), (), kind="text"),
    "yahoo_answers": DatasetSpec(None, "test", (), (), kind="text"),
    "yelp_review_full": DatasetSpec(None, "test", (), (), kind="text"),
    "mock_text": DatasetSpec(None, "test", (), (), kind="text"),
    # Translation (jaxkd.data._translation): IWSLT'14 de-en as fairseq's prepare script writes
    # it (train, validation, test), and a synthetic reversal task.
    "iwslt14_de_en": DatasetSpec(None, "test", (), (), kind="translation"),
    "mock_translation": DatasetSpec(None, "test", (), (), kind="translation"),
}
# load("mock", ...): a small learnable set (8x8x3, 10 classes).
_MOCK_SIZES = {"train": 256, "test": 64}


def names() -> tuple[str, ...]:
  """Names accepted by ``load`` (and ``open_stream`` for tfds-backed ones)."""
  return tuple(_SPECS)


def spec(name: str) -> DatasetSpec:
  """The ``DatasetSpec`` of ``name``; ValueError listing the names when unknown."""
  if name not in _SPECS:
    raise ValueError(f"Unknown dataset name {name!r}; known: {', '.join(_SPECS)}.")
  return _SPECS[name]


def token_settings(name: str) -> tuple[str, ...]:
  """The ``data`` config keys that set text dataset ``name``'s token ids.

  ``("vocab_size", "max_length")``: the tokenizer (its cache is kept per dataset and
  vocabulary size, so equal settings on the same data give the same ids) and the length. None
  for ``mock_text``, whose vocabulary and length are fixed, and for the translation corpora,
  whose vocabularies are their training files' words whatever the config.
  """
  if name == "mock_text" or spec(name).kind == "translation":
    return ()
  return ("vocab_size", "max_length")


def _load_fashion_mnist(split: str, data_dir: Optional[str]) -> ArrayDataset:
  """IDX files first (Debian's directory, or data_dir); a tfds copy in data_dir second."""
  try:
    return _offline.load_fashion_mnist(data_dir, split)
  except DatasetNotFoundError as idx_error:
    if data_dir is None:
      raise
    try:
      return _load_tfds("fashion_mnist", split, data_dir)
    except DatasetNotFoundError as tfds_error:
      raise DatasetNotFoundError(f"{idx_error} Alternatively: {tfds_error}") from None


def _load_tfds(name: str, split: str, data_dir: Optional[str]) -> ArrayDataset:
  s = _SPECS[name]
  tfds_split = s.test_split if split == "test" else "train"
  return _tfds.load_in_memory(name, split, s.tfds_name, tfds_split, data_dir,
                              s.mean, s.std)


def load(name: str, split: str = "train", data_dir: Optional[str] = None, *,
         vocab_size: int = _text.DEFAULT_VOCAB_SIZE,
         max_length: int = _text.DEFAULT_MAX_LENGTH,
         max_tokens: int = _translation.DEFAULT_MAX_TOKENS
         ) -> ArrayDataset | _text.TokenDataset | _translation.ParallelDataset:
  """Loads one split of a named dataset into memory.

  ``digits`` (scikit-learn) and ``mock`` need no files. ``fashion_mnist`` reads
  IDX files (Debian's package directory, or ``data_dir``). The others read a
  tensorflow-datasets copy prepared in array_record format under ``data_dir``
  (default: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``); nothing downloads. Text
  datasets (``spec(name).kind == "text"``) come back as a `TokenDataset` of token ids
  (`jaxkd.data._text`); ``yahoo_answers`` and ``yelp_review_full`` read Zhang et al.'s CSV
  release under ``data_dir``; ``mock_text`` is synthetic. Translation datasets (``kind ==
  "translation"``) come back as a `ParallelDataset` batched by token count; they alone have a
  ``"validation"`` split.

  Args:
    name: one of ``names()``.
    split: ``"train"`` or ``"test"`` (ImageNet's "test" is its validation set), optionally
      sliced as tensorflow-datasets writes it: ``"train[:90%]"``, ``"train[90%:]"``,
      ``"test[:500]"`` (see `parse_split`). A validation split carved from the training set
      is ``"train[90%:]"`` beside ``"train[:90%]"``; the normalisation constants stay those
      of the whole training split.
    data_dir: directory holding the data, or None for the default.
    vocab_size: text datasets: the largest vocabulary of the tokenizer (ignored by images and
      ``mock_text``).
    max_length: text datasets: pieces kept per example (ignored by images and ``mock_text``);
      translation: the longest training sentence kept.
    max_tokens: translation: the most padded tokens of one batch.

  Returns:
    An ``ArrayDataset`` or ``TokenDataset``; ``ids`` are positions in the (sliced) split.

  Raises:
    ValueError: unknown name or split, or a dataset too large for memory.
    DatasetNotFoundError: the data is absent; the message says how to prepare it.
  """
  s = spec(name)
  base, start, stop = parse_split(split, name)
  if (start, stop) != (None, None):
    whole = load(name, base, data_dir, vocab_size=vocab_size, max_length=max_length,
                 max_tokens=max_tokens)
    n = whole.num_examples
    lo, hi = _bound(start, n, 0), _bound(stop, n, n)
    if not 0 <= lo < hi <= n:
      raise ValueError(f"split={split!r} selects examples [{lo}, {hi}) of the {n} in "
                       f"{base!r}; allowed: a non-empty slice")
    if s.kind == "translation":
      return whole.select(lo, hi, split)
    inputs = "tokens" if s.kind == "text" else "images"
    return dataclasses.replace(whole, split=split, labels=whole.labels[lo:hi],
                               **{inputs: whole.inputs[lo:hi]})
  if not s.in_memory:
    raise ValueError(f"{name!r} is too large to hold in memory; read it with "
                     "jaxkd.data.open_stream(...) instead (in a run: data.in_memory=False).")
  if s.kind == "translation":
    return _translation.load_translation(name, split, data_dir, max_tokens=max_tokens,
                                         max_length=max_length)
  if s.kind == "text":
    return _text.load_text(name, split, data_dir, vocab_size=vocab_size, max_length=max_length)
  if name == "mock":
    return mock(_MOCK_SIZES[split], seed=0, split=split)
  if name == "digits":
    return _offline.load_digits(split)
  if name == "fashion_mnist":
    return _load_fashion_mnist(split, data_dir)
  return _load_tfds(name, split, data_dir)


_SPLIT = re.compile(r"^(?P<base>[a-z]+)(\[(?P<start>-?\d+%?)?:(?P<stop>-?\d+%?)?\])?$")


def parse_split(split: str, name: Optional[str] = None) -> tuple[str, Optional[str],
                                                                  Optional[str]]:
  """``"train[:90%]"`` -> ``("train", None, "90%")``; bounds are ints or percentages.

  ``name``: the dataset the split is of, whose kind decides whether it has a ``"validation"``
  split (translation corpora only); None: not checked.

  Raises:
    ValueError: not one of `SPLITS`, a slice tensorflow-datasets would not accept, or a
      validation split of a dataset without one.
  """
  match = _SPLIT.match(split) if isinstance(split, str) else None
  if match is None or match["base"] not in SPLITS:
    raise ValueError(f"split={split!r} is not allowed; allowed: one of {SPLITS}, optionally "
                     "sliced like 'train[:90%]', 'train[90%:]' or 'test[:500]'.")
  if match["base"] == "validation" and name is not None and spec(name).kind != "translation":
    raise ValueError(f"split={split!r}: dataset {name!r} has no validation split; allowed: "
                     "'train', 'test', or a validation split carved from the training set "
                     "such as 'train[90%:]'")
  return match["base"], match["start"], match["stop"]


def _bound(text: Optional[str], n: int, default: int) -> int:
  if text is None:
    return default
  value = (round(float(text[:-1]) * n / 100) if text.endswith("%") else int(text))
  return value + n if value < 0 else value
