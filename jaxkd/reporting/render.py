"""``REPORT.md`` and its figures, from a table's result records alone.

Everything printed is computed from ``<results>/<table>/runs/*/s*.json``: no timestamps, no
paths of this machine, records read in sorted order, so rendering twice gives the same bytes.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Sequence

import numpy as np

from jaxkd.reporting import _figures, _stats
from jaxkd.reporting import runner as runner_lib
from jaxkd.reporting._table import Table

__all__ = ["choose", "load_records", "render", "render_markdown"]

_COLUMNS = ("best_top1", "best_ece", "best_nll", "last_top1", "ece", "nll",
            "intra_class_variance")
# Translation rows: token accuracy, calibration and NLL per target token, and BLEU.
_TRANSLATION_COLUMNS = ("best_top1", "best_nll", "last_top1", "nll", "bleu")
# The tables' first columns: rows trained at unequal budgets say so in the table itself.
_BUDGET = "Columns: *epochs*, each row's training budget (its runs' last epoch); the others "
_FIGURE_ROWS = 6  # rows per curves/reliability figure beyond which panels get unreadable


def load_records(results_dir: str, table: Table) -> dict:
  """Row name -> its records sorted by seed (rows without any record are left out)."""
  by_row = {}
  for row in table.teachers + table.rows:
    paths = glob.glob(os.path.join(results_dir, table.name, "runs", row.name, "s*.json"))
    records = []
    for path in paths:
      with open(path) as f:
        records.append(json.load(f))
    if records:
      by_row[row.name] = sorted(records, key=lambda r: r["seed"])
  return by_row


def _cell(records, metric) -> str:
  _, scale, decimals, _ = _stats.METRICS[metric]
  return _stats.summarize(_stats.metric_values(records, metric)).format(scale, decimals)


def _published(row, records) -> list[str]:
  if row.published is None:
    return ["", ""]
  diff = 100.0 * _stats.metric_values(records, "best_top1").mean() - row.published
  return [f"{row.published:.2f}", f"{diff:+.2f}"]


def _columns(by_row) -> tuple[str, ...]:
  translation = any(r.get("task") == "translation" for rs in by_row.values() for r in rs)
  return _TRANSLATION_COLUMNS if translation else _COLUMNS


def _budget(records) -> str:
  """The epochs its runs trained (their last evaluation's), so rows of unequal budget show it."""
  epochs = sorted({round(r["summary"]["last"]["epoch"], 1) for r in records})
  return ",".join(f"{e:g}" for e in epochs)


def _table_lines(rows, by_row, with_published: bool) -> list[str]:
  columns = _columns(by_row)
  head = ["row", "seeds", "epochs"] + [_stats.METRICS[m][3] for m in columns]
  if with_published:
    head += ["published top-1 (%)", "best - published"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for row in rows:
    records = by_row.get(row.name)
    if not records:
      cells = [row.name, "none", "", "not run"] + [""] * (len(head) - 4)
    else:
      cells = [row.name, ",".join(str(r["seed"]) for r in records), _budget(records)]
      cells += [_cell(records, m) for m in columns]
      if with_published:
        cells += _published(row, records)
    lines.append("| " + " | ".join(cells) + " |")
  return lines


def _claim_lines(table: Table, by_row) -> list[str]:
  lines = ["| claim | metric | better row | worse row | difference | 95% CI | Welch p | "
           "verdict |", "|---|---|---|---|---|---|---|---|"]
  for claim in table.claims:
    _, scale, decimals, label = _stats.METRICS[claim.metric]
    if claim.better not in by_row or claim.worse not in by_row:
      lines.append(f"| {claim.text} | {label} | {claim.better} | {claim.worse} | | | | "
                   "not run |")
      continue
    result = _stats.check_claim(_stats.metric_values(by_row[claim.better], claim.metric),
                                _stats.metric_values(by_row[claim.worse], claim.metric))
    diff = result["diff"] * scale
    ci = "" if result["ci"] is None else (f"{diff - result['ci'] * scale:+.{decimals}f} to "
                                          f"{diff + result['ci'] * scale:+.{decimals}f}")
    p = "" if result["p"] is None else f"{result['p']:.3f}"
    lines.append(f"| {claim.text} | {label} | {claim.better} | {claim.worse} | "
                 f"{diff:+.{decimals}f} | {ci} | {p} | {result['verdict']} |")
  return lines


def _spread_lines(table: Table, by_row) -> list[str]:
  students = [r.name for r in table.rows if len(by_row.get(r.name, ())) > 1]
  if not students:
    return ["Every row has a single seed: no spread to judge differences by."]
  stds = [100 * _stats.summarize(_stats.metric_values(by_row[n], "best_top1")).std
          for n in students]
  seeds = sorted({len(by_row[n]) for n in students})
  n = seeds[0]
  median = float(np.median(stds))
  gap = [100 * float(np.mean(_stats.metric_values(by_row[r], "best_top1")
                             - _stats.metric_values(by_row[r], "last_top1"))) for r in students]
  # Two rows with this std each and n seeds: Welch's t at p = 0.05 needs about 2.8 SE (n=3).
  detectable = 2.8 * median * np.sqrt(2.0 / n)
  return [
      f"Seeds per row: {', '.join(map(str, seeds))}. The median standard deviation of best "
      f"top-1 over seeds is {median:.2f} points (range {min(stds):.2f} to {max(stds):.2f}); "
      f"with {n} seeds per row, a difference of two rows needs to be about {detectable:.2f} "
      "points before Welch's test calls it significant at p = 0.05. Claims below that size "
      "are reported as *not resolved*, not as support.",
      "",
      f"Best-epoch minus last-epoch top-1: {np.mean(gap):+.2f} points on average (from "
      f"{min(gap):+.2f} to {max(gap):+.2f} by row): " + _selection(table, by_row),
  ]


def _selection(table: Table, by_row) -> str:
  """How the best epoch was picked, in words."""
  if table.report_split:
    return (f"the best epoch is picked on each run's validation split and then evaluated on "
            f"the {table.report_split} split, so both numbers are honest.")
  splits = {r["config"]["data"].get("eval_split", "test") for rs in by_row.values() for r in rs
            if "config" in r}
  if splits and "test" not in splits:
    where = ", ".join(sorted(splits))
    return (f"the best epoch is picked on the split the numbers are on ({where}, carved from "
            "the training set), so it is an optimistic number for that split.")
  return ("the best epoch is picked on the test set, so it is an optimistic number; the last "
          "epoch is the honest one.")


def _convergence_lines(table: Table, by_row) -> list[str]:
  if not table.convergence or not all(r in by_row for r in table.convergence):
    return []
  short, long = table.convergence
  values = {r: _stats.metric_values(by_row[r], "last_top1") for r in table.convergence}
  epochs = {r: by_row[r][0]["summary"]["last"]["epoch"] for r in table.convergence}
  gap = 100 * (values[long].mean() - values[short].mean())
  spread = 100 * (_stats.summarize(values[short]).std or 0.0)
  verdict = ("the table's runs are not converged: its differences hold for this short budget, "
             "not necessarily for converged training" if gap > max(2 * spread, 0.5) else
             "the table's runs are close to converged")
  seeds = lambda r: f"{len(values[r])} seed" + ("s" if len(values[r]) > 1 else "")
  return [f"Convergence: `{short}` ({epochs[short]:.0f} epochs, {seeds(short)}) "
          f"reaches {values[short].mean() * 100:.2f} last-epoch top-1; `{long}` "
          f"({epochs[long]:.0f} epochs, {seeds(long)}) reaches "
          f"{values[long].mean() * 100:.2f}, {gap:+.2f} points: {verdict}.", ""]


def _library_default(choice, records) -> str:
  """Whether a row's settings are the library's defaults of ``choice.method``: ``yes``,
  or the keys where they differ, ``key=row value (library value)``."""
  from jaxkd import objectives  # pylint: disable=import-outside-toplevel
  defaults = objectives.defaults(choice.method)
  method = {k: v for k, v in records[0]["config"]["method"].items() if k != "name"}
  differ = [f"{k}={v} (library {defaults.get(k)})" for k, v in sorted(method.items())
            if defaults.get(k) != v]
  return "yes" if not differ else "no: " + ", ".join(differ)


def choose(choice, by_row) -> dict:
  """`jaxkd.reporting._stats.choose_default` applied to a table's `Choice` over its records:
  its result, with ``bound`` (the NLL bound) and ``worst`` (the worse baseline's mean NLL)."""
  values = lambda metric, names: {n: _stats.metric_values(by_row[n], metric) for n in names}
  worst = max(float(np.mean(v)) for v in values("nll", choice.baselines).values())
  bound = (1.0 + choice.nll_margin) * worst
  result = _stats.choose_default(values("best_top1", choice.rows), values("nll", choice.rows),
                                 values("ece", choice.rows), nll_bound=bound)
  return {**result, "bound": bound, "worst": worst}


def _bound_words(choice, result) -> str:
  return (f"{result['bound']:.3f} ({1 + choice.nll_margin:g} x {result['worst']:.3f}, the worse "
          f"last-epoch NLL of {' and '.join(choice.baselines)})")


def _choice_lines(table: Table, by_row) -> list[str]:
  """The rule applied to each choice of several settings, then every single-setting choice
  (a default checked against the bound) in one table."""
  lines, checks, above = [], [], False
  mark = lambda flag: "yes" if flag else "no"
  for choice in table.choices:
    if not all(n in by_row for n in choice.rows + choice.baselines):
      lines += [f"### {choice.method}", "", "Not every row of the rule has run.", ""]
      continue
    result = choose(choice, by_row)
    if len(choice.rows) == 1:
      name = choice.rows[0]
      above = above or name not in result["within"]
      checks.append(f"| {name} | {_cell(by_row[name], 'best_top1')} | "
                    f"{_cell(by_row[name], 'nll')} | {_cell(by_row[name], 'ece')} | "
                    f"{_bound_words(choice, result)} | {mark(name in result['within'])} |")
      continue
    lines += [f"### {choice.method}", "", f"NLL bound: {_bound_words(choice, result)}.", "",
              "| setting | best top-1 (%) | last-epoch NLL | last-epoch ECE (%) | "
              "within the NLL bound | within the spread of the best | chosen |",
              "|---|---|---|---|---|---|---|"]
    for name in choice.rows:
      lines.append(f"| {name} | {_cell(by_row[name], 'best_top1')} | "
                   f"{_cell(by_row[name], 'nll')} | {_cell(by_row[name], 'ece')} | "
                   f"{mark(name in result['within'])} | "
                   f"{mark(name in result['tied']) if name in result['admissible'] else '-'} | "
                   f"{'**chosen**' if name == result['chosen'] else ''} |")
    lines += ["", f"Chosen: `{result['chosen']}`; the library's default of `{choice.method}` "
              f"is this setting: {_library_default(choice, by_row[result['chosen']])}.", ""]
  if checks:
    lines += ["### Each default against the NLL bound", "",
              "| row | best top-1 (%) | last-epoch NLL | last-epoch ECE (%) | NLL bound | "
              "within the bound |", "|---|---|---|---|---|---|"] + checks + [""]
    if above:
      lines += ["A default above the bound stands only where its row's note says why.", ""]
  return lines


def _machine_lines(by_row) -> list[str]:
  machines = sorted({r["machine"] for rs in by_row.values() for r in rs})
  seconds = sum(r["summary"]["wall_time_s"] for rs in by_row.values() for r in rs)
  runs = sum(len(rs) for rs in by_row.values())
  smoke = ["**Smoke runs (a few steps of a tiny model on mock data): these numbers mean "
           "nothing.**", ""] if any(r.get("smoke") for rs in by_row.values() for r in rs) else []
  return smoke + [f"Machine of every number: {'; '.join(machines)}. {runs} runs, "
          f"{seconds / 60:.1f} minutes of training and evaluation in total (the sum over runs; "
          "runs overlapped)."]


def _groups(table: Table) -> list[tuple[str, list]]:
  groups: dict = {}
  for row in table.rows:
    groups.setdefault(row.group, []).append(row)
  return list(groups.items())


def _figure_sets(table: Table, by_row) -> list[tuple[str, str, list[str]]]:
  """(file stem, title, rows) of the curves and reliability figures: one set per group."""
  sets = []
  teachers = [t.name for t in table.teachers if t.name in by_row]
  if teachers:
    sets.append(("teachers", "Teachers", teachers))
  for i, (group, rows) in enumerate(_groups(table)):
    names = [r.name for r in rows if r.name in by_row]
    for j in range(0, len(names), _FIGURE_ROWS):
      chunk = names[j:j + _FIGURE_ROWS]
      part = f" ({j // _FIGURE_ROWS + 1})" if len(names) > _FIGURE_ROWS else ""
      sets.append((f"group{i + 1}_{j // _FIGURE_ROWS + 1}", f"{group}{part}", chunk))
  return sets


def _draw_figures(table: Table, by_row, directory: str, class_names) -> list[str]:
  """Draws every figure into ``directory``; returns the markdown lines that show them."""
  lines = []
  for stem, title, rows in _figure_sets(table, by_row):
    curves = _figures.curves(by_row, rows, os.path.join(directory, f"curves_{stem}.png"),
                             title=f"{title}: mean over seeds")
    diagram = _figures.reliability(by_row, rows,
                                   os.path.join(directory, f"reliability_{stem}.png"),
                                   title=f"{title}: last epoch, seeds pooled")
    lines += [f"### {title}", "",
              f"![training curves]({os.path.relpath(curves, os.path.dirname(directory))})", "",
              f"![reliability]({os.path.relpath(diagram, os.path.dirname(directory))})", ""]
  projected = [t.name for t in table.teachers if "projection" in by_row.get(t.name, [{}])[0]]
  projected += [r for r in table.projection_rows if r in by_row]
  if projected:
    path = _figures.projections(by_row, projected, os.path.join(directory, "projection.png"),
                                class_names=class_names,
                                title="Penultimate features of three classes (first seed)")
    lines += ["### Three-class feature projections (Mueller et al. 2019)", "",
              f"![projection]({os.path.relpath(path, os.path.dirname(directory))})", ""]
  names = [r.name for r in table.teachers + table.rows
           if r.name in by_row and by_row[r.name][0].get("stability")]
  if not names:  # translation: no stability
    return lines
  path = _figures.stability_bars(by_row, names, os.path.join(directory, "stability.png"),
                                 title="1 - S (Shen et al. Eq. 2), test set, last epoch")
  lines += ["### Intra-class variance 1 - S of the final probabilities", "",
            f"![stability]({os.path.relpath(path, os.path.dirname(directory))})", ""]
  return lines


def render_markdown(table: Table, by_row, figure_lines: Sequence[str]) -> str:
  """The report's text."""
  with_published = any(r.published is not None for r in table.rows)
  lines = [f"# {table.title}", "",
           "Generated by `jaxkd report render` from the JSON records under `runs/`; do not "
           "edit by hand.", "", table.description, ""]
  lines += _machine_lines(by_row) + [""]
  if _columns(by_row) == _TRANSLATION_COLUMNS:
    lines += [_BUDGET + "mean ± sample standard deviation over seeds. Top-1 and NLL are per "
              "target token under teacher forcing (*best*: the epoch of highest token "
              "accuracy; *last*: the final epoch); BLEU is the corpus BLEU of the last "
              "checkpoint's beam search on the evaluation split.", ""]
  elif table.report_split:
    lines += [_BUDGET + "mean ± sample standard deviation over seeds, on the "
              f"{table.report_split} "
              "split. Every run trains on the training split's first part and evaluates each "
              "epoch on a validation split carved from the rest (its data.eval_split; the "
              "curves below are on it); *best* is the checkpoint of highest validation top-1, "
              f"*last* the final one, both then evaluated once on the {table.report_split} "
              "split, which chooses nothing; ECE with 15 bins; 1 - S is the intra-class "
              "variance of Shen et al. (ICLR 2021, Eq. 2; the number of their Table 1) of the "
              "last checkpoint's softmax probabilities (T = 1) on that split (lower = more "
              "information erased; S is their stability).", ""]
  else:
    lines += [_BUDGET + "mean ± sample standard deviation over seeds. *best* is the epoch of "
              "highest test top-1 (as the papers report), *last* the final epoch; ECE with 15 "
              "bins; 1 - S is the intra-class variance of Shen et al. (ICLR 2021, Eq. 2; the "
              "number of their Table 1): the mean over classes of the mean squared distance of "
              "each test example's softmax probabilities (T = 1) to its class mean, at the last "
              "epoch (lower = more information erased; S is their stability).", ""]
  if table.teachers:
    lines += ["## Teacher stages", ""] + _table_lines(table.teachers, by_row, False) + [""]
  for group, rows in _groups(table):
    lines += [f"## {group or 'Rows'}", ""] + _table_lines(rows, by_row, with_published) + [""]
  notes = [r for r in table.teachers + table.rows if r.note]
  if notes:
    lines += ["Row notes:", ""] + [f"- `{r.name}` (`{r.arg}`"
                                   + (", teacher " + ", ".join(f"`{t}`" for t in r.teacher_stages)
                                      if r.teacher else "")
                                   + f"): {r.note}" for r in notes] + [""]
  if table.claims:
    lines += ["## The papers' claims against these numbers", ""]
    lines += _convergence_lines(table, by_row) + _spread_lines(table, by_row)
    lines += [""] + _claim_lines(table, by_row) + [""]
    lines += ["*supported*: the difference has the claimed sign and Welch's two-sided p < "
              "0.05; *contradicted*: the opposite sign with p < 0.05; *not resolved*: within "
              "the seed spread (for a claim that a method *matches* another, the confidence "
              "interval says how closely); *single runs*: one run on a side (teacher stages), "
              "no spread to judge by.", ""]
  if table.choices:
    lines += ["## The defaults rule applied", "",
              "Among the settings whose best-epoch top-1 is within the seed spread of the best "
              "setting's (Welch p >= 0.05), the one with the lowest last-epoch NLL, then ECE; "
              "a setting whose last-epoch NLL exceeds the worse of the baselines' by more than "
              "the margin stated with each method is out, unless its top-1 beats every setting "
              "within that bound beyond the spread (`jaxkd.reporting.Choice`; '-': out by the "
              "NLL bound, so not compared). A method with a single row is its default checked "
              "against the bound.", ""]
    lines += _choice_lines(table, by_row)
  lines += ["## Figures", ""] + list(figure_lines)
  return "\n".join(lines).rstrip("\n") + "\n"


def render(config_path: str, *, results_dir: str) -> str:
  """Writes ``<results_dir>/<table>/REPORT.md`` and ``figures/``; returns the report's path."""
  module, table = runner_lib.load_table(config_path)
  by_row = load_records(results_dir, table)
  if not by_row:
    raise FileNotFoundError(f"no result records under {os.path.join(results_dir, table.name)}"
                            f"/runs; run `jaxkd report run {config_path}` first")
  out_dir = os.path.join(results_dir, table.name)
  class_names = getattr(module, "CLASS_NAMES", None)
  figure_lines = _draw_figures(table, by_row, os.path.join(out_dir, "figures"), class_names)
  path = os.path.join(out_dir, "REPORT.md")
  with open(path, "w") as f:
    f.write(render_markdown(table, by_row, figure_lines))
  return path
