"""What a paper table is: rows (config arguments), teacher stages, published values.

A config file in ``configs/`` that reproduces a table defines ``get_config(arg)`` (one row per
argument, ``"model=resnet18,method=tfkd_reg"``) and ``table()`` returning a `Table`; the
runner trains the teacher stages first, then every row for several seeds.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

__all__ = ["Choice", "Claim", "Row", "Table", "parse_arg"]


@dataclasses.dataclass(frozen=True)
class Row:
  """One line of a table (or one teacher stage).

  Attributes:
    name: the row's label, unique in its table and usable as a directory name.
    arg: the config argument that builds the row, e.g. ``"model=resnet18,method=kd"``.
    teacher: the name of the teacher stage whose run is this row's frozen teacher, or a
      tuple of names: an ensemble of those stages' runs (``teacher.workdir`` lists them).
    published: the published top-1 in percent (None where no number is published).
    group: the report section the row belongs to.
    note: a short remark printed beside the row (teacher, reconstructed method, ...).
    seeds: the seeds of this row when they differ from the table's (e.g. one seed of a
      longer convergence check); None: the seeds the runner is given.
    init_from: the name of another (non-teacher) row whose run with the same seed
      initialises this row's model (``model.init_from``; ReActNet's stage 2 starts from
      stage 1); None: a random initialisation.
  """
  name: str
  arg: str
  teacher: Optional[str | tuple[str, ...]] = None
  published: Optional[float] = None
  group: str = ""
  note: str = ""
  seeds: Optional[tuple[int, ...]] = None
  init_from: Optional[str] = None

  @property
  def teacher_stages(self) -> tuple[str, ...]:
    """The teacher stages this row distils from (empty: none)."""
    if not self.teacher:
      return ()
    return (self.teacher,) if isinstance(self.teacher, str) else tuple(self.teacher)


@dataclasses.dataclass(frozen=True)
class Claim:
  """A paper's claim, checked by comparing two rows (or two teacher stages) of a table.

  Attributes:
    text: the claim in words.
    better: the row expected to be higher on ``metric``.
    worse: the row it is compared with.
    metric: a name in ``jaxkd.reporting._stats.METRICS``: ``"best_top1"``, ``"last_top1"``,
      ``"ece"``, ``"nll"``, ``"stability"`` (Shen et al.'s S: higher = more information
      erased), ``"intra_class_variance"`` (their 1 - S), ``"feature_stability"`` (ours).
  """
  text: str
  better: str
  worse: str
  metric: str = "best_top1"


@dataclasses.dataclass(frozen=True)
class Choice:
  """A method's default, chosen among rows (its settings) by the defaults rule.

  The rule (`jaxkd.reporting._stats.choose_default`): among the settings whose best-epoch
  top-1 is within the seed spread of the best setting's (Welch p >= 0.05), the one with the
  lowest last-epoch NLL, then ECE; a setting whose last-epoch NLL exceeds the worse of the
  ``baselines``' by more than ``nll_margin`` (a fraction) is out, unless its top-1 beats every
  setting within that bound beyond the spread.

  Attributes:
    method: the method's name in `jaxkd.objectives` (its library defaults are compared with
      the chosen row's settings).
    rows: the candidate rows, each a setting of ``method``.
    baselines: the rows whose worse mean NLL bounds the candidates'.
    nll_margin: how far above that NLL a candidate may be (0.25: 25%).
  """
  method: str
  rows: tuple[str, ...]
  baselines: tuple[str, ...] = ("ce", "lsr")
  nll_margin: float = 0.25


@dataclasses.dataclass(frozen=True)
class Table:
  """A paper table: teacher stages and rows, trained in that order.

  Attributes:
    name: directory name under ``experiments/results/``.
    title: the report's heading (paper and table).
    rows: the rows, in report order.
    teachers: stages other rows distil from; each is trained once, with ``teacher_seed``.
    teacher_seed: the seed of the teacher stages (apart from the rows' seeds).
    claims: the papers' claims that the report checks against the numbers.
    description: the setting in words (data, model, recipe), printed under the heading.
    projection_classes: the three classes whose features the report projects (Mueller et
      al. 2019), for the teacher stages and ``projection_rows``.
    projection_rows: rows (besides the teacher stages) whose features are projected.
    convergence: ``(row, longer_row)``: a row and the same row trained longer, whose gap the
      report states (how far the table's budget is from converged); None: no such check.
    report_split: None: the report reads each run's own numbers on its ``data.eval_split``
      (the best epoch is the best on that split). A split name (``"test"``): the runs select on
      a validation split carved from the training set (``data.eval_split``, with
      ``train.keep_best`` keeping the best state), and the report evaluates this split at the
      validation-selected checkpoint (*best*) and at the last one (*last*): the test split is
      read once per run, at the end, and never chooses anything.
    choices: defaults chosen among rows by the defaults rule (`Choice`); the report shows the
      rule applied to each, with the NLL and ECE columns, and whether the library's default
      is the one chosen.
  """
  name: str
  title: str
  rows: tuple[Row, ...]
  teachers: tuple[Row, ...] = ()
  teacher_seed: int = 100
  claims: tuple[Claim, ...] = ()
  description: str = ""
  projection_classes: tuple[int, int, int] = (0, 1, 2)
  projection_rows: tuple[str, ...] = ()
  convergence: Optional[tuple[str, str]] = None
  report_split: Optional[str] = None
  choices: tuple[Choice, ...] = ()

  def __post_init__(self):
    names = [r.name for r in self.teachers + self.rows]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
      raise ValueError(f"table {self.name!r}: row names {duplicates} are not unique")
    stages = {t.name for t in self.teachers}
    for row in self.rows + self.teachers:
      for teacher in row.teacher_stages:
        if teacher not in stages:
          raise ValueError(f"table {self.name!r}, row {row.name!r}: teacher={teacher!r} is "
                           f"not a teacher stage; allowed: {', '.join(sorted(stages)) or 'none'}")
    students = {r.name for r in self.rows} - stages
    for row in self.rows:
      if row.init_from is not None and (row.init_from not in students
                                        or row.init_from == row.name):
        raise ValueError(f"table {self.name!r}, row {row.name!r}: init_from={row.init_from!r} "
                         "is not another row of the table; allowed: "
                         f"{', '.join(sorted(students - {row.name})) or 'none'}")
    known = set(names)
    for name in self.convergence or ():
      if name not in known:
        raise ValueError(f"table {self.name!r}: convergence names row {name!r}, which is not "
                         "in the table")
    for claim in self.claims:
      for name in (claim.better, claim.worse):
        if name not in known:
          raise ValueError(f"table {self.name!r}: claim {claim.text!r} names row {name!r}, "
                           "which is not in the table")

    for choice in self.choices:
      for name in choice.rows + choice.baselines:
        if name not in known:
          raise ValueError(f"table {self.name!r}: the choice of {choice.method!r} names row "
                           f"{name!r}, which is not in the table")

  def row(self, name: str) -> Row:
    """The row or teacher stage called ``name``."""
    for row in self.teachers + self.rows:
      if row.name == name:
        return row
    raise KeyError(f"table {self.name!r} has no row {name!r}; rows: "
                   f"{', '.join(r.name for r in self.teachers + self.rows)}")


def parse_arg(arg: Optional[str], allowed: dict) -> tuple[dict, bool]:
  """Parses ``"key=value,key=value[,smoke]"`` against ``allowed`` (key -> allowed values).

  The first allowed value of each key is its default.

  Returns:
    ``(values, smoke)``: every key with its value, and whether ``smoke`` was given.

  Raises:
    ValueError: an unknown key, a value that is not allowed, or a part without ``=``.
  """
  values = {key: options[0] for key, options in allowed.items()}
  smoke = False
  for part in (arg or "").split(","):
    part = part.strip()
    if not part:
      continue
    if part == "smoke":
      smoke = True
      continue
    key, sep, value = part.partition("=")
    if not sep:
      raise ValueError(f"config argument part {part!r}: write key=value or 'smoke'")
    if key not in allowed:
      raise ValueError(f"config argument key {key!r} is not known; allowed: "
                       f"{', '.join(allowed)}, smoke")
    if value not in allowed[key]:
      raise ValueError(f"config argument {key}={value!r} is not allowed; allowed: "
                       f"{', '.join(allowed[key])}")
    values[key] = value
  return values, smoke
