"""Seed statistics of a table's result records: mean, std, and the check of a claim."""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np

__all__ = ["METRICS", "Summary", "check_claim", "choose_default", "metric_values", "summarize"]

# metric name -> (how to read it from a record, scale for printing, decimals, label)
def _at(record: dict, which: str) -> dict:
  """The ``best`` or ``last`` metrics of a record: on the table's report split when the run
  selected its best epoch on a validation split (``reported``), else the run's own."""
  return record.get("reported", record["summary"])[which]


METRICS = {
    "best_top1": (lambda r: _at(r, "best")["top1"], 100.0, 2, "best top-1 (%)"),
    "best_ece": (lambda r: _at(r, "best")["ece"], 100.0, 2, "best-epoch ECE (%)"),
    "best_nll": (lambda r: _at(r, "best")["nll"], 1.0, 3, "best-epoch NLL"),
    "last_top1": (lambda r: _at(r, "last")["top1"], 100.0, 2, "last top-1 (%)"),
    "ece": (lambda r: _at(r, "last")["ece"], 100.0, 2, "last-epoch ECE (%)"),
    "nll": (lambda r: _at(r, "last")["nll"], 1.0, 3, "last-epoch NLL"),
    # Shen et al.'s Eq. 2 on the test probabilities at T = 1: S, and 1 - S (their Table 1).
    "stability": (lambda r: r["stability"]["probabilities"], 1.0, 4, "S (Shen Eq. 2)"),
    "intra_class_variance": (lambda r: 1.0 - r["stability"]["probabilities"], 1.0, 4,
                             "1 - S (Shen Eq. 2)"),
    "feature_stability": (lambda r: r["stability"]["features"], 1.0, 3,
                          "feature stability (ours)"),
    "best_epoch": (lambda r: _at(r, "best")["epoch"], 1.0, 1, "best epoch"),
    # Translation: corpus BLEU of the last checkpoint's beam search (top-1, NLL and ECE are
    # then per target token).
    "bleu": (lambda r: r["summary"]["last"]["bleu"], 1.0, 2, "BLEU"),
}


@dataclasses.dataclass(frozen=True)
class Summary:
  """Mean and sample standard deviation (ddof 1; None for one seed) of a metric."""
  mean: float
  std: Optional[float]
  n: int

  def format(self, scale: float, decimals: int) -> str:
    mean = f"{self.mean * scale:.{decimals}f}"
    if self.std is None:
      return mean
    return f"{mean} ± {self.std * scale:.{decimals}f}"


def metric_values(records: Sequence[dict], metric: str) -> np.ndarray:
  """The metric of every record (one per seed)."""
  if metric not in METRICS:
    raise ValueError(f"metric={metric!r} is not known; allowed: {', '.join(METRICS)}")
  return np.asarray([METRICS[metric][0](r) for r in records], np.float64)


def summarize(values: np.ndarray) -> Summary:
  values = np.asarray(values, np.float64)
  std = float(np.std(values, ddof=1)) if len(values) > 1 else None
  return Summary(float(np.mean(values)), std, len(values))


def check_claim(better: np.ndarray, worse: np.ndarray) -> dict:
  """Difference of means (better - worse) and Welch's t-test of it.

  Returns:
    ``diff``, ``se`` (standard error of the difference; None with one value on a side),
    ``p`` (two-sided Welch p-value; None likewise), ``ci`` (half-width of the 95% confidence
    interval of the difference, Welch-Satterthwaite degrees of freedom; None likewise) and
    ``verdict``: ``supported`` (diff > 0,
    p < 0.05), ``contradicted`` (diff < 0, p < 0.05), ``not resolved`` (p >= 0.05: the
    difference is within the seed spread) or ``single runs`` (no spread to judge by).
  """
  from scipy import stats  # pylint: disable=import-outside-toplevel
  better, worse = np.asarray(better, np.float64), np.asarray(worse, np.float64)
  diff = float(better.mean() - worse.mean())
  if len(better) < 2 or len(worse) < 2:
    return {"diff": diff, "se": None, "p": None, "ci": None, "verdict": "single runs"}
  v_better, v_worse = better.var(ddof=1) / len(better), worse.var(ddof=1) / len(worse)
  se = math.sqrt(v_better + v_worse)
  if se == 0.0:
    p, ci = (0.0 if diff != 0.0 else 1.0), 0.0
  else:
    p = float(stats.ttest_ind(better, worse, equal_var=False).pvalue)
    dof = (v_better + v_worse) ** 2 / (v_better ** 2 / (len(better) - 1)
                                       + v_worse ** 2 / (len(worse) - 1))
    ci = float(stats.t.ppf(0.975, dof) * se)
  if p < 0.05:
    verdict = "supported" if diff > 0 else "contradicted"
  else:
    verdict = "not resolved"
  return {"diff": diff, "se": se, "p": p, "ci": ci, "verdict": verdict}


def choose_default(top1: dict, nll: dict, ece: dict, *, nll_bound: float) -> dict:
  """The defaults rule: which setting of a method becomes its default.

  Among the settings whose top-1 is within the seed spread of the best one's (Welch p >= 0.05,
  `check_claim` not ``supported``), the one with the lowest mean NLL, then ECE. A setting whose
  mean NLL exceeds ``nll_bound`` is out, unless its top-1 beats every setting within the bound
  beyond the spread (then the bound does not apply to it). Top-1 alone is blind to how much a
  target mix smooths: settings within the spread of each other can differ 3x in NLL.

  Args:
    top1, nll, ece: setting name -> its values over seeds (higher top-1 is better; lower NLL and
      ECE are).
    nll_bound: the highest mean NLL a setting may have.

  Returns:
    ``chosen`` (a name), ``best`` (the admissible setting of highest mean top-1), and the
    sets ``within`` (mean NLL within the bound), ``admissible`` (within it, or beyond it but
    winning top-1 beyond the spread; every setting where none is within) and ``tied``
    (admissible and within the spread of ``best``).
  """
  names = list(top1)
  mean = lambda values: float(np.mean(values))
  within = [n for n in names if mean(nll[n]) <= nll_bound]
  wins = lambda n, others: bool(others) and all(
      check_claim(top1[n], top1[o])["verdict"] == "supported" for o in others if o != n)
  admissible = [n for n in names if n in within or wins(n, within)]
  if not admissible:  # every setting smooths past the bound: the rule falls back to top-1
    admissible = names
  best = max(admissible, key=lambda n: mean(top1[n]))
  tied = [n for n in admissible
          if n == best or check_claim(top1[best], top1[n])["verdict"] != "supported"]
  chosen = min(tied, key=lambda n: (mean(nll[n]), mean(ece[n])))
  return {"chosen": chosen, "best": best, "within": set(within), "admissible": set(admissible),
          "tied": set(tied)}
