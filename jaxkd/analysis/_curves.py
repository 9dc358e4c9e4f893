"""Reading a run's ``metrics.jsonl`` into per-key series for training curves."""
import json
import os
import warnings
from typing import List, Tuple

import numpy as np

from jaxkd import rundir

__all__ = ["load_metrics", "metric_series"]


def _metrics_path(path):
  path = os.fspath(path)
  return rundir.RunDir(path).metrics if os.path.isdir(path) else path


def _parse_line(line):
  """Returns ``(value, torn)``: the line's JSON value, or the record after a torn prefix."""
  try:
    return json.loads(line), False
  except json.JSONDecodeError:
    pass
  # A resumed run appends its first record right after the fragment a killed run left;
  # the leftmost "{" from which the rest parses as a record (every record has a "step";
  # a nested object inside the fragment has none) starts that whole record.
  for start in range(1, len(line)):
    if line[start] == "{":
      try:
        value = json.loads(line[start:])
      except json.JSONDecodeError:
        continue
      if isinstance(value, dict) and "step" in value:
        return value, True
  return None, True


def load_metrics(path) -> List[dict]:
  """Reads the JSON records of a run's ``metrics.jsonl``.

  A run killed while writing leaves a torn line. At the end of the file it is skipped
  silently; glued before the first record of a resumed run that appended after it, the
  fragment is dropped and that record kept, with a warning naming the line (the resumed
  run logs the lost steps again). A line that parses but is not a JSON object is an error.

  Args:
    path: a workdir (containing ``metrics.jsonl``) or the path of the file itself.

  Returns:
    The records, in file order.
  """
  path = _metrics_path(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"path={path!r}: no {rundir.METRICS} there; pass a run's workdir "
                            f"or its {rundir.METRICS}.")
  with open(path, encoding="utf-8") as f:
    lines = f.read().split("\n")
  records = []
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    record, torn = _parse_line(line)
    if torn and number != len(lines):  # the last piece, without a newline, may be torn
      warnings.warn(f"{path}, line {number}: dropped a torn record: {line[:80]!r}.")
    if record is None:
      continue
    if not isinstance(record, dict):
      raise ValueError(f"{path}, line {number}: expected a JSON object, got {line[:80]!r}.")
    records.append(record)
  return records


def metric_series(records, key, *, x="step") -> Tuple[np.ndarray, np.ndarray]:
  """The values of one metric against ``x``, sorted by ``x``.

  When ``x`` repeats (a resumed run re-logs the steps after its last checkpoint), the
  record written last wins, as it comes from the run that continued.

  Args:
    records: records from ``load_metrics``.
    key: the metric, e.g. ``"train/loss"`` or ``"eval/top1"``.
    x: the abscissa key, ``"step"`` or ``"epoch"``.

  Returns:
    ``(xs, ys)``, float64 arrays of equal length (empty when no record has ``key``).
  """
  latest = {}
  for record in records:
    if key in record and x in record and record[key] is not None:
      latest[float(record[x])] = float(record[key])
  xs = np.asarray(sorted(latest), np.float64)
  return xs, np.asarray([latest[v] for v in xs], np.float64)
