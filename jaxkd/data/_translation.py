"""Translation data: parallel corpora as token ids, batched by token count like fairseq.

A split is a `ParallelDataset`: source and target sentences as int32 token ids (each ending
with EOS), their vocabularies, and the reference text for BLEU. Its batches follow fairseq's
``--max-tokens``: sentences sorted by length are grouped so that a batch's rows times its
padded length stay within ``max_tokens``. For `jax.jit` every batch of a length bucket has one
shape: the padded length is the longest sentence rounded up to ``length_multiple`` (source and
target padded to the same length), and the rows are ``max_tokens // length`` rounded down to a
multiple of the devices, the last batch of a bucket filled with masked padding rows. A run
compiles once per bucket, not once per batch.

Datasets:
  ``iwslt14_de_en``: IWSLT'14 German-English as fairseq's ``examples/translation/
    prepare-iwslt14.sh`` writes it (Moses tokenised, lower-cased, 10k joint BPE codes with
    ``@@`` continuation marks, train/valid/test files ``{split}.de`` and ``{split}.en``); each
    side's vocabulary is built from its training file (fairseq-preprocess's dictionary: every
    word of the training text, most frequent first). BLEU is computed on the tokenised text
    after removing the BPE marks, what ``fairseq-generate --remove-bpe`` scores.
  ``mock_translation``: a synthetic task for tests: reverse a sequence of 2-7 words drawn from
    20.
"""
from __future__ import annotations

import collections
import dataclasses
import os
from typing import Iterator, Optional, Sequence

import numpy as np

from jaxkd.data._dataset import DatasetNotFoundError
# The token ids of the translation models' vocabularies (0 is padding everywhere in jaxkd).
from jaxkd.models._translation import BOS, EOS, PAD, UNK

__all__ = ["PAD", "BOS", "EOS", "UNK", "ParallelDataset", "Vocabulary", "load_translation",
           "mock_translation"]

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
# fairseq's IWSLT'14 recipe: --max-tokens 4096 (one GPU).
DEFAULT_MAX_TOKENS = 4096
DEFAULT_LENGTH_MULTIPLE = 16


class Vocabulary:
  """Words to ids and back: ids 0-3 are PAD, BOS, EOS, UNK, then the words.

  `build` orders the words as fairseq's ``Dictionary.finalize`` does with no threshold: most
  frequent first, ties alphabetically.
  """

  def __init__(self, words: Sequence[str]):
    self.words = tuple(SPECIALS) + tuple(words)
    self.index = {w: i for i, w in enumerate(self.words)}

  def __len__(self) -> int:
    return len(self.words)

  @classmethod
  def build(cls, sentences: Sequence[Sequence[str]]) -> "Vocabulary":
    counts = collections.Counter(w for s in sentences for w in s)
    return cls([w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))])

  def encode(self, words: Sequence[str]) -> np.ndarray:
    """int32 ids of ``words`` then EOS; unknown words become UNK."""
    return np.asarray([self.index.get(w, UNK) for w in words] + [EOS], np.int32)

  def decode(self, ids: Sequence[int]) -> list[str]:
    """The words of ``ids`` up to the first EOS (PAD and BOS dropped; UNK as ``<unk>``)."""
    words = []
    for i in np.asarray(ids).tolist():
      if i == EOS:
        break
      if i not in (PAD, BOS):
        words.append(self.words[i] if 0 <= i < len(self.words) else SPECIALS[UNK])
    return words


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


@dataclasses.dataclass(frozen=True, eq=False)
class ParallelDataset:
  """One split of a translation corpus, as token ids in host memory.

  Attributes:
    name: the dataset's registry name.
    split: ``"train"``, ``"validation"`` or ``"test"``, optionally sliced.
    source: one int32 array of ids per sentence, ending with EOS.
    target: the same for the target side.
    source_vocab: the source `Vocabulary` (the model's ``vocab_size``).
    target_vocab: the target `Vocabulary` (the class axis: ``num_classes``).
    references: the target sentences as text, for BLEU.
    bpe: the continuation mark removed before scoring (``"@@ "``), or "".
    max_tokens: the most (padded) tokens of one batch, over all devices.
    length_multiple: padded lengths are multiples of this (one compiled shape per bucket).
    rows_multiple: a batch's rows are a multiple of this (the devices of the mesh).
    max_length: training sentences longer than this (either side, EOS counted) are left out,
      as fairseq skips them; evaluation keeps every sentence.
  """
  name: str
  split: str
  source: tuple
  target: tuple
  source_vocab: Vocabulary
  target_vocab: Vocabulary
  references: tuple
  bpe: str = ""
  max_tokens: int = DEFAULT_MAX_TOKENS
  length_multiple: int = DEFAULT_LENGTH_MULTIPLE
  rows_multiple: int = 1
  max_length: int = 1024
  # What the engine reads of every dataset: the task it serves (`jaxkd.tasks`), int32 ids.
  task = "translation"
  input_dtype = np.int32

  def __post_init__(self):
    if not (len(self.source) == len(self.target) == len(self.references)):
      raise ValueError(f"{self.name} {self.split}: {len(self.source)} source and "
                       f"{len(self.target)} target sentences; they must pair up")

  @property
  def num_examples(self) -> int:
    return len(self.source)

  @property
  def num_classes(self) -> int:
    return len(self.target_vocab)

  @property
  def vocab_size(self) -> int:
    return len(self.source_vocab)

  @property
  def input_shape(self) -> tuple[int]:
    """A sample input's shape for building the model: one bucket's length."""
    return (self.length_multiple,)

  @property
  def ids(self) -> np.ndarray:
    return np.arange(self.num_examples)

  def select(self, lo: int, hi: int, split: str) -> "ParallelDataset":
    """Sentences ``[lo, hi)`` as split ``split``."""
    return dataclasses.replace(self, split=split, source=self.source[lo:hi],
                               target=self.target[lo:hi], references=self.references[lo:hi])

  def _lengths(self) -> np.ndarray:
    return np.maximum(np.fromiter(map(len, self.source), int, self.num_examples),
                      np.fromiter(map(len, self.target), int, self.num_examples))

  def rows(self, length: int) -> int:
    """The rows of a batch padded to ``length``: ``max_tokens // length``, a multiple of
    ``rows_multiple`` (at least one multiple)."""
    return max(self.rows_multiple,
               self.max_tokens // length // self.rows_multiple * self.rows_multiple)

  def plan(self, *, train: bool) -> list[np.ndarray]:
    """The batches as arrays of sentence ids (-1: a padding row), in length order.

    Training leaves out sentences longer than ``max_length`` and breaks length ties by a
    fixed shuffle; evaluation keeps every sentence in its order within a bucket.
    """
    lengths = self._lengths()
    keep = np.flatnonzero(lengths <= self.max_length) if train else np.arange(len(lengths))
    tie = (np.random.default_rng(0).permutation(len(lengths)) if train
           else np.arange(len(lengths)))
    order = keep[np.lexsort((tie[keep], lengths[keep]))]
    batches = []
    bucket = lambda i: _round_up(int(lengths[i]), self.length_multiple)
    start = 0
    while start < len(order):
      length = bucket(order[start])
      rows = self.rows(length)
      stop = start
      while stop < len(order) and stop - start < rows and bucket(order[stop]) == length:
        stop += 1
      ids = np.full(rows, -1, np.int64)
      ids[:stop - start] = order[start:stop]
      batches.append(ids)
      start = stop
    return batches

  def num_steps(self, global_batch_size: Optional[int] = None, *, train: bool) -> int:
    """Batches per epoch (``global_batch_size`` is ignored: batches are by token count)."""
    del global_batch_size
    return len(self.plan(train=train))

  def batch(self, ids: np.ndarray) -> dict:
    """Host arrays of the sentences ``ids`` (-1: padding rows): ``image`` the source and
    ``label`` the target, int32 ``[rows, L]`` padded with PAD to the bucket's length L,
    ``id`` (0 on padding rows) and ``mask`` (False on padding rows)."""
    real = ids >= 0
    longest = max((max(len(self.source[i]), len(self.target[i])) for i in ids[real]), default=1)
    length = _round_up(longest, self.length_multiple)
    source = np.full((len(ids), length), PAD, np.int32)
    target = np.full((len(ids), length), PAD, np.int32)
    for row, i in enumerate(ids[real]):
      source[row, :len(self.source[i])] = self.source[i]
      target[row, :len(self.target[i])] = self.target[i]
    return {"image": source, "label": target, "id": np.where(real, ids, 0).astype(np.int32),
            "mask": real}

  def batches(self, *, global_batch_size: Optional[int] = None, train: bool, seed: int = 0,
              epoch: int = 0, start_step: int = 0, process_index: Optional[int] = None,
              process_count: Optional[int] = None) -> Iterator[dict]:
    """This process's rows of every batch of an epoch, from ``start_step``.

    Training visits the batches in an order shuffled by ``(seed, epoch)`` (fairseq shuffles
    its batches every epoch); evaluation in length order. Pure in its arguments, so a resumed
    run reads what an uninterrupted one reads. ``global_batch_size`` is ignored.
    """
    del global_batch_size
    import jax  # pylint: disable=import-outside-toplevel
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    plan = self.plan(train=train)
    order = np.arange(len(plan))
    if train:
      order = np.random.default_rng([seed, epoch, 7]).permutation(len(plan))
    for b in order[start_step:]:
      ids = plan[b]
      per = len(ids) // count
      yield self.batch(ids[index * per:(index + 1) * per])

  def detokenize(self, words: Sequence[str]) -> str:
    """Words back to the text BLEU scores: joined, BPE marks removed."""
    text = " ".join(words)
    if self.bpe:
      text = (text + " ").replace(self.bpe, "").rstrip()
    return text


def mock_translation(num_examples: int, *, seed: int, split: str, vocabulary: int = 20,
                     lengths: tuple[int, int] = (2, 7)) -> ParallelDataset:
  """A synthetic task: the target is the source reversed (words ``w0 .. w19``); 2-7 words and
  the EOS fit one length bucket of 8, so a test run compiles one train step."""
  rng = np.random.default_rng(seed)
  words = [f"w{i}" for i in range(vocabulary)]
  vocab = Vocabulary(words)
  source, target, refs = [], [], []
  for _ in range(num_examples):
    sentence = list(rng.choice(words, rng.integers(lengths[0], lengths[1] + 1)))
    source.append(vocab.encode(sentence))
    target.append(vocab.encode(sentence[::-1]))
    refs.append(" ".join(sentence[::-1]))
  return ParallelDataset("mock_translation", split, tuple(source), tuple(target), vocab, vocab,
                         tuple(refs), max_tokens=512, length_multiple=8)


_IWSLT_FILES = {"train": "train", "validation": "valid", "test": "test"}


def _iwslt_dir(data_dir: Optional[str]) -> str:
  base = os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR")
                            or "~/tensorflow_datasets")
  for candidate in (base, os.path.join(base, "iwslt14.tokenized.de-en")):
    if os.path.isfile(os.path.join(candidate, "train.de")):
      return candidate
  raise DatasetNotFoundError(
      f"iwslt14_de_en: no train.de under {base!r} or {base}/iwslt14.tokenized.de-en; prepare "
      "it with fairseq's examples/translation/prepare-iwslt14.sh (it writes "
      "iwslt14.tokenized.de-en/{train,valid,test}.{de,en}) and pass that folder or its parent "
      "as data.data_dir")


def _read_lines(path: str) -> list[list[str]]:
  with open(path, encoding="utf-8") as f:
    return [line.split() for line in f]


def load_translation(name: str, split: str, data_dir: Optional[str], *,
                     max_tokens: int = DEFAULT_MAX_TOKENS,
                     max_length: int = 1024) -> ParallelDataset:
  """One whole split (``"train"``, ``"validation"`` or ``"test"``) of a translation dataset.

  Raises:
    DatasetNotFoundError: the prepared files are absent (the message says how to prepare them).
    ValueError: a split the dataset does not have, or unpaired files.
  """
  if split not in _IWSLT_FILES:
    raise ValueError(f"{name}: split={split!r}; allowed: {', '.join(_IWSLT_FILES)}")
  if name == "mock_translation":
    sizes = {"train": 4000, "validation": 200, "test": 200}
    seeds = {"train": 0, "validation": 1, "test": 2}
    data = mock_translation(sizes[split], seed=seeds[split], split=split)
    return dataclasses.replace(data, max_tokens=max_tokens if max_tokens else data.max_tokens,
                               max_length=max_length)
  if name != "iwslt14_de_en":
    raise ValueError(f"unknown translation dataset {name!r}; allowed: iwslt14_de_en, "
                     "mock_translation")
  folder = _iwslt_dir(data_dir)
  read = lambda part, lang: _read_lines(os.path.join(folder, f"{_IWSLT_FILES[part]}.{lang}"))
  source_vocab = Vocabulary.build(read("train", "de"))
  target_vocab = Vocabulary.build(read("train", "en"))
  src, tgt = read(split, "de"), read(split, "en")
  if len(src) != len(tgt):
    raise ValueError(f"{folder}: {_IWSLT_FILES[split]}.de has {len(src)} lines and "
                     f"{_IWSLT_FILES[split]}.en {len(tgt)}; they must pair up")
  dataset = ParallelDataset(
      name, split, tuple(source_vocab.encode(s) for s in src),
      tuple(target_vocab.encode(t) for t in tgt), source_vocab, target_vocab,
      tuple(" ".join(t) for t in tgt), bpe="@@ ", max_tokens=max_tokens, max_length=max_length)
  return dataclasses.replace(dataset, references=tuple(dataset.detokenize(t) for t in tgt))
