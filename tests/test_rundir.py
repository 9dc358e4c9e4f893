"""The run directory's layout (`jaxkd.rundir`): names, complete checkpoints, reading."""
import json

import pytest

from jaxkd import rundir


def test_checkpoint_steps_are_the_complete_ones_in_numeric_order(tmp_path):
  # orbax writes a step under a temporary name and renames it to the number once complete.
  for name in ("10", "9", "100", "12.orbax-checkpoint-tmp-3", "notes"):
    (tmp_path / rundir.CHECKPOINTS / name).mkdir(parents=True)
  (tmp_path / rundir.BEST / "7").mkdir(parents=True)
  run = rundir.RunDir(str(tmp_path))
  assert run.checkpoint_steps() == [9, 10, 100]
  assert run.checkpoint_steps(rundir.BEST) == [7]
  assert rundir.checkpoint_steps(str(tmp_path / "elsewhere")) == []
  assert run.state(10) == str(tmp_path / "checkpoints" / "10" / "state")
  with pytest.raises(ValueError, match="checkpoint folder 'checkpoint' is not allowed; allowed: "
                     "checkpoints, checkpoints_best, checkpoints_unreadable"):
    run.checkpoints("checkpoint")


def test_files_are_read_as_json_or_none(tmp_path):
  run = rundir.RunDir(str(tmp_path))
  assert run.read(rundir.SUMMARY) is None
  (tmp_path / "summary.json").write_text(json.dumps({"best": {"step": 4}}))
  assert run.read(rundir.SUMMARY) == {"best": {"step": 4}}
  assert (run.config, run.run, run.metrics) == tuple(
      str(tmp_path / f) for f in ("config.json", "run.json", "metrics.jsonl"))


def test_loading_a_run_without_checkpoints_says_where_it_looked(tmp_path):
  with pytest.raises(FileNotFoundError, match="holds no checkpoint under .*checkpoints_best; "
                     "train the teacher there first"):
    rundir.load_variables(str(tmp_path), name=rundir.BEST)
