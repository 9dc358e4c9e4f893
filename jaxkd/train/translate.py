"""BLEU of a translation run: beam search over the evaluation split, scored by sacrebleu.

The evaluation split's batches (`Trainer.eval_batches`: one bucket of source lengths each)
are decoded by `jaxkd.models.beam_search` with ``config.generate``'s settings, fairseq-generate's
``--beam``, ``--lenpen``, ``--max-len-a`` and ``--max-len-b`` (one compiled program per source
bucket). The hypotheses, turned back into text (`ParallelDataset.detokenize`: BPE marks
removed), are scored against the split's references with ``sacrebleu.corpus_bleu`` on the
tokenised text (``tokenize="none"``): the number fairseq-generate prints for IWSLT'14 with
``--remove-bpe``, not the detokenised SacreBLEU of WMT papers.
"""
from __future__ import annotations

import jax
import numpy as np

from jaxkd import models
from jaxkd.train import trainer as trainer_lib

__all__ = ["bleu", "translate"]


def _max_len(generate, source_length: int, max_positions: int) -> int:
  """fairseq's ``max_len_a * src_len + max_len_b`` tokens then EOS (`beam_search`'s
  ``max_len`` counts the EOS), within the model's positions."""
  return max(2, min(int(generate.max_len_a * source_length + generate.max_len_b) + 1,
                    max_positions))


def translate(trainer: trainer_lib.Trainer, params, batch_stats=None) -> dict[int, list[str]]:
  """The model's translation of every sentence of the evaluation split: ``{id: words}``."""
  run, generate = trainer.run, trainer.run.config.generate
  model = run.model
  variables = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}

  out = {}
  for batch in trainer.eval_batches():
    source = batch["images"]
    # beam_search is jitted itself: one program per source bucket, kept across calls.
    tokens, _ = models.beam_search(
        model, variables, source, beam_size=generate.beam_size,
        max_len=_max_len(generate, source.shape[1], model.max_positions),
        len_penalty=generate.len_penalty)
    tokens, ids, mask = (np.asarray(_gather(x)) for x in (tokens, batch["indices"],
                                                         batch["mask"]))
    for row in np.flatnonzero(mask):
      out[int(ids[row])] = run.eval_data.target_vocab.decode(tokens[row])
  return out


def _gather(x: jax.Array) -> np.ndarray:
  """A global array on the host of every process."""
  if jax.process_count() == 1:
    return jax.device_get(x)
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return multihost_utils.process_allgather(x, tiled=True)


def bleu(trainer: trainer_lib.Trainer, params, batch_stats=None) -> float:
  """Corpus BLEU (0-100) of the beam-search translations of the evaluation split."""
  import sacrebleu  # pylint: disable=import-outside-toplevel
  data = trainer.run.eval_data
  hypotheses = translate(trainer, params, batch_stats)
  order = range(data.num_examples)
  return float(sacrebleu.corpus_bleu(
      [data.detokenize(hypotheses[i]) for i in order],
      [[data.references[i] for i in order]], tokenize="none").score)
