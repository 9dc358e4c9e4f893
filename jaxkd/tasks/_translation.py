"""Translation: sentence pairs in token-count batches, every objective per target token.

The model reads the source ids and the target ids (it shifts them right itself: teacher
forcing); its logits ``[B, T, V]`` become ``B*T`` examples weighed 1 on the real target tokens
and 0 on the padding (`per_token`), so every objective gives fairseq's per-token loss.
Evaluation: per-token top-1/top-5/NLL/ECE under teacher forcing, and at the end of a run (and
in `jaxkd eval`) the BLEU of a beam search (`bleu`).

BLEU: the evaluation split's batches (one bucket of source lengths each) are decoded by
`jaxkd.models.beam_search` with ``config.generate``'s settings, fairseq-generate's ``--beam``,
``--lenpen``, ``--max-len-a`` and ``--max-len-b`` (one compiled program per source bucket).
The hypotheses, turned back into text (the dataset's ``detokenize``: BPE marks removed), are
scored against the split's references with ``sacrebleu.corpus_bleu`` on the tokenised text
(``tokenize="none"``): the number fairseq-generate prints for IWSLT'14 with ``--remove-bpe``,
not the detokenised SacreBLEU of WMT papers.
"""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jaxkd import data as data_lib
from jaxkd import models
from jaxkd import objectives
from jaxkd.tasks import _evaluators as ev
from jaxkd.tasks._base import Task, check
from jaxkd.tasks._classification import _no_augmentation

__all__ = ["bleu", "per_token", "per_token_refusal", "translation"]


def per_token(logits, labels, teacher_logits: Any = None, mask: Any = None):
  """A translation batch's logits ``[B, T, V]``, labels ``[B, T]`` and teacher logits
  (``[..., B, T, V]``) as ``B*T`` examples, with weights 1 on the real target tokens and 0 on
  the padding: every objective then gives fairseq's per-token loss, averaged over the real
  tokens of the batch. With ``mask`` (``[B]``, False on padded rows) the weights are a bool
  mask, False on the padding tokens and rows. Returns ``(logits, labels, teacher_logits,
  weights)``."""
  vocab = logits.shape[-1]
  tokens = labels.shape[-1]
  labels = labels.reshape(-1)
  if teacher_logits is not None:
    teacher_logits = teacher_logits.reshape(teacher_logits.shape[:-3] + (-1, vocab))
  real = (labels != data_lib.PAD).astype(jnp.float32)
  weights = real if mask is None else jnp.repeat(mask, tokens) & (real > 0)
  return logits.reshape(-1, vocab), labels, teacher_logits, weights


_NOT_PER_TOKEN = {
    "example_ids": "a table row per training example (one distribution per example, not per "
                   "token)",
    "dense_logits": "per-position class votes of an image feature map",
    "features": "penultimate features and class representatives of a classifier",
    "class_embeddings": "class representatives of a classifier"}


def per_token_refusal(objective) -> str | None:
  """Why ``objective`` cannot apply per target token of a translation batch, or None: it needs
  an input a sequence model does not give per token, a term that is a statistic of the whole
  batch (DIST's intra-class relation), or its teacher reads other examples (partner rows),
  which token-count batches do not carry."""
  needs = sorted(objective.requires & set(_NOT_PER_TOKEN))
  if needs:
    return _NOT_PER_TOKEN[needs[0]]
  if any(term.kind == "dist_intra" for term in objective.terms):
    return ("each class's probabilities over the whole batch (DIST's intra-class relation), "
            "a statistic that per-token weights cannot weigh")
  teacher = objective.teacher
  if teacher is not None and teacher.host_batch is not None:
    return (f"other examples' outputs through its {getattr(teacher, 'name', '')} teacher "
            "(partner rows, which token-count batches do not carry)")
  return None


def _setup(config, dataset) -> None:
  """Translation runs take no image augmentation, one step per dispatch (batches change shape
  with their length bucket) and a valid beam search."""
  _no_augmentation(config, dataset)
  check(config.train.steps_per_dispatch == 1, "train.steps_per_dispatch",
        config.train.steps_per_dispatch, "translation batches change shape with their length "
        "bucket, so steps cannot be stacked into one dispatch; allowed: 1")
  gen = config.generate
  check(isinstance(gen.beam_size, int) and gen.beam_size >= 1, "generate.beam_size",
        gen.beam_size, "must be an int >= 1")
  check(gen.max_len_a >= 0 and isinstance(gen.max_len_b, int) and gen.max_len_b >= 1,
        "generate.max_len_b", gen.max_len_b, "must be an int >= 1 (and max_len_a >= 0)")


# A one-step run: placeholders for the hparams a method derives from its run.
_PLACEHOLDER_RUN = objectives.RunInfo(num_examples=1, steps_per_epoch=1, total_steps=1)


def _as_listed(name: str):
  """Method ``name`` built for a placeholder run (`objectives.RunInfo`): only the kinds of its
  terms, its inputs and its teacher are read."""
  return objectives.get(name, run_info=_PLACEHOLDER_RUN)


def _check_objective(config, objective) -> None:
  reason = per_token_refusal(objective)
  if reason is not None:
    allowed = [name for name in objectives.names()
               if per_token_refusal(_as_listed(name)) is None]
    check(False, "method.name", config.method.name,
          f"it reads {reason}, which a translation model does not give per target token; "
          f"allowed on translation: {', '.join(allowed)}")


def _max_len(generate, source_length: int, max_positions: int) -> int:
  """fairseq's ``max_len_a * src_len + max_len_b`` tokens then EOS (`beam_search`'s
  ``max_len`` counts the EOS), within the model's positions."""
  return max(2, min(int(generate.max_len_a * source_length + generate.max_len_b) + 1,
                    max_positions))


def bleu(run) -> ev.Evaluator:
  """Corpus BLEU (0-100) of the beam-search translations of the split (``{"bleu": ...}``)."""
  generate, data = run.config.generate, run.eval_data

  def rows(p):
    variables = {k: v for k, v in p.variables.items() if k == "params" or v}
    tokens, _ = models.beam_search(
        p.model, variables, p.inputs, beam_size=generate.beam_size,
        max_len=_max_len(generate, p.inputs.shape[1], p.model.max_positions),
        len_penalty=generate.len_penalty)
    return {"tokens": tokens, "ids": p.ids}

  def keep(found):  # decoded as the batches arrive: words, not padded token arrays
    return {"ids": found["ids"], "words": [data.target_vocab.decode(t) for t in found["tokens"]]}

  def finalize(parts):
    import sacrebleu  # pylint: disable=import-outside-toplevel
    hypotheses = {int(i): w for part in parts for i, w in zip(part["ids"], part["words"])}
    order = range(data.num_examples)
    return {"bleu": float(sacrebleu.corpus_bleu(
        [data.detokenize(hypotheses[i]) for i in order],
        [[data.references[i] for i in order]], tokenize="none").score)}

  return ev.Evaluator("bleu", rows=rows, keep=keep, finalize=finalize)


def _evaluators(run, purpose: str) -> tuple:
  """Per-token metrics; with the BLEU of beam search at the end of a run and in `jaxkd eval`."""
  if purpose in ("final", "checkpoint"):
    return (ev.metrics(), bleu(run))
  return (ev.metrics(),)


def _describe(run) -> tuple[str, str]:
  data = run.train_data
  return (f"sentence pairs, source vocabulary {data.vocab_size}, target vocabulary "
          f"{data.num_classes}", f"at most {data.max_tokens} tokens a batch")


translation = Task(
    name="translation", input_kind="sentence pairs", unit="sentences",
    defaults={"crop_padding": 0, "flip": False, "rotation_degrees": 0.0},
    setup=_setup, preprocess=lambda settings, rng, tokens: tokens,
    feed=lambda x, labels: {"source": x, "target": labels},
    examples=per_token, evaluators=_evaluators, describe=_describe,
    check_objective=_check_objective, by_token_count=True,
    result_words={"bleu": "BLEU {:.2f}"},
    # Per target token (teacher forcing), and the corpus BLEU of beam search.
    eval_columns=(("top1", "token top-1"), ("nll", "token NLL"), ("ece", "token ECE"),
                  ("bleu", "BLEU")))
