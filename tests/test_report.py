"""The table runner and the report: job order, statistics, claim checks, byte-stable rendering.

Statistics are checked against numbers computed by hand here (means, sample standard
deviations, Welch's t), not against the code under test.
"""
import dataclasses
import json
import math
import os
import sys
import textwrap

import numpy as np
import pytest

from jaxkd import cli
from jaxkd.reporting import Row, _stats, render, runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FASHION = os.path.join(ROOT, "configs", "fashion_mnist.py")
SWEEP = os.path.join(ROOT, "configs", "defaults_sweep.py")
COMMITTED = os.path.join(ROOT, "experiments", "results")

TINY_TABLE = textwrap.dedent('''
    """A two-row table for the tests."""
    from jaxkd.config import recipes
    from jaxkd.reporting import Claim, Row, Table

    def get_config(arg=None):
      config = recipes.base_config()
      config.method.name = arg.split(",")[0].split("=")[1]
      return recipes.smoke(config)

    def table():
      return Table(
          name="tiny", title="Tiny", description="Two rows.",
          teachers=(Row("teacher", "method=ce"),),
          rows=(Row("ce", "method=ce", published=50.0), Row("kd", "method=kd", teacher="teacher"),
                Row("lsr", "method=lsr")),
          convergence=("ce", "kd"),
          claims=(Claim("KD beats CE", "kd", "ce"),
                  Claim("the teacher is more stable", "teacher", "ce", metric="stability")))
''')


def _record(row, seed, top1, *, last_top1=None, stability=0.9, teacher=None):
  """A result record as `runner.run_one` writes it, with the fields the report reads."""
  bins = [0] * 15
  bins[-1] = 100
  epochs = [1.0, 2.0]
  curve = lambda v: {"epoch": epochs, "value": [v / 2, v]}
  last = top1 if last_top1 is None else last_top1
  return {
      "table": "tiny", "row": row, "seed": seed, "arg": "", "teacher": teacher, "smoke": True,
      "machine": "cpu: test",
      "summary": {"best": {"top1": top1, "ece": 0.05, "nll": 0.5, "epoch": 2.0},
                  "last": {"top1": last, "ece": 0.04 + seed / 100, "nll": 0.6, "epoch": 2.0},
                  "wall_time_s": 30.0},
      "curves": {k: curve(v) for k, v in (("eval/top1", last), ("eval/ece", 0.04),
                                          ("eval/nll", 0.6), ("train/loss", 1.0))},
      "final": {"correct_top1": round(100 * last), "correct_top5": 100, "count": 100,
                "nll_sum": 60.0, "ece_bin_count": bins, "ece_bin_correct":
                [0] * 14 + [round(100 * last)], "ece_bin_confidence": [0.0] * 14 + [97.0]},
      "stability": {"features": 0.5, "probabilities": stability},
  }


def _write(results, record):
  path = os.path.join(results, "tiny", "runs", record["row"], f"s{record['seed']}.json")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(record, f)


@pytest.fixture
def tiny(tmp_path):
  config = tmp_path / "tiny.py"
  config.write_text(TINY_TABLE)
  results = tmp_path / "results"
  _write(str(results), _record("teacher", 100, 0.9, stability=0.95))
  for seed, (ce, kd) in enumerate(((0.70, 0.80), (0.72, 0.83), (0.74, 0.83))):
    _write(str(results), _record("ce", seed, ce, last_top1=ce - 0.01))
    _write(str(results), _record("kd", seed, kd, teacher="teacher"))
  return str(config), str(results)


def test_stats_against_hand_computed_values():
  values = np.asarray([0.70, 0.72, 0.74])
  summary = _stats.summarize(values)
  assert summary.mean == pytest.approx(0.72)
  assert summary.std == pytest.approx(0.02)  # sqrt(((-.02)^2 + 0 + .02^2) / 2)
  assert summary.format(100, 2) == "72.00 ± 2.00"
  better, worse = np.asarray([0.80, 0.83, 0.83]), values
  se = math.sqrt(np.var(better, ddof=1) / 3 + np.var(worse, ddof=1) / 3)
  t = (better.mean() - worse.mean()) / se
  # Welch-Satterthwaite degrees of freedom, then the two-sided p from Student's t.
  v1, v2 = np.var(better, ddof=1) / 3, np.var(worse, ddof=1) / 3
  dof = (v1 + v2) ** 2 / (v1 ** 2 / 2 + v2 ** 2 / 2)
  from scipy import special, stats
  p = special.betainc(dof / 2, 0.5, dof / (dof + t * t))
  result = _stats.check_claim(better, worse)
  assert result["diff"] == pytest.approx(0.10)
  assert result["se"] == pytest.approx(se)
  assert result["p"] == pytest.approx(p, rel=1e-6)
  assert result["ci"] == pytest.approx(stats.t.ppf(0.975, dof) * se)
  assert result["verdict"] == "supported"
  assert _stats.check_claim(worse, better)["verdict"] == "contradicted"
  assert _stats.check_claim(values, values + 0.001)["verdict"] == "not resolved"
  assert _stats.check_claim(np.asarray([0.9]), values)["verdict"] == "single runs"


@pytest.mark.slow
def test_report_numbers_published_difference_and_claims(tiny):
  config, results = tiny
  path = render.render(config, results_dir=results)
  text = open(path).read()
  assert "| ce | 0,1,2 | 2 | 72.00 ± 2.00 |" in text
  assert "| 71.00 ± 2.00 |" in text  # last-epoch top-1 is its own column
  assert "| 50.00 | +22.00 |" in text  # published, then best mean - published
  assert "| lsr | none |  | not run |" in text
  assert "| KD beats CE | best top-1 (%) | kd | ce | +10.00 |" in text
  assert "single runs" in text  # teacher vs CE stability: one teacher run
  # Shen et al.'s S = 0.95 (teacher) and 0.9 (every ce seed): the table prints 1 - S, the
  # claim compares S.
  assert "| 1 - S (Shen Eq. 2) |" in text
  assert "| 0.600 | 0.0500 |\n" in text and "| 0.1000 ± 0.0000 | 50.00 |" in text
  assert "| the teacher is more stable | S (Shen Eq. 2) | teacher | ce | +0.0500 |" in text
  # Last-epoch means 71.00 and 82.00: an 11-point gap is far beyond the 2-point spread.
  assert ("`ce` (2 epochs, 3 seeds) reaches 71.00 last-epoch top-1; `kd` (2 epochs, 3 seeds) "
          "reaches 82.00, +11.00 points: the table's runs are not converged") in text
  assert "cpu: test" in text
  for figure in ("curves_teachers.png", "reliability_group1_1.png", "stability.png"):
    assert os.path.getsize(os.path.join(results, "tiny", "figures", figure)) > 1000
    assert f"figures/{figure}" in text


@pytest.mark.slow
def test_render_twice_gives_the_same_bytes(tiny):
  config, results = tiny
  first = open(render.render(config, results_dir=results), "rb").read()
  second = open(render.render(config, results_dir=results), "rb").read()
  assert first == second


@pytest.mark.skipif(not os.path.isfile(os.path.join(COMMITTED, "fashion_mnist", "REPORT.md")),
                    reason="the Fashion-MNIST study's results are not committed")
@pytest.mark.slow
def test_committed_fashion_mnist_report_is_reproduced_from_its_json(tmp_path):
  import shutil
  shutil.copytree(os.path.join(COMMITTED, "fashion_mnist", "runs"),
                  tmp_path / "fashion_mnist" / "runs")
  _, table = runner.load_table(FASHION)
  path = render.render(FASHION, results_dir=str(tmp_path))
  with open(os.path.join(COMMITTED, "fashion_mnist", "REPORT.md"), "rb") as f:
    assert open(path, "rb").read() == f.read()
  assert table.name == "fashion_mnist"


@pytest.mark.skipif(not os.path.isfile(os.path.join(COMMITTED, "fashion_mnist", "REPORT.md")),
                    reason="the Fashion-MNIST study's results are not committed")
def test_the_report_marks_each_rows_budget_in_its_table():
  """Each row's budget is in its own line, read against each record's config
  (train.num_epochs), not the summary the column is computed from: the committed study's
  rows at 60 epochs, its convergence check at 120."""
  _, table = runner.load_table(FASHION)
  by_row = render.load_records(COMMITTED, table)
  text = render.render_markdown(table, by_row, [])
  lines = text.splitlines()
  assert sum(l.startswith("| row | seeds | epochs | best top-1 (%) |") for l in lines) == 4
  budgets = set()
  for name, records in by_row.items():
    (epochs,) = {r["config"]["train"]["num_epochs"] for r in records}
    seeds = ",".join(str(r["seed"]) for r in records)
    assert f"| {name} | {seeds} | {epochs} | " in text, name
    budgets.add(epochs)
  assert budgets == {60, 120}


def test_plan_trains_teachers_first_in_seed_major_order(tiny):
  config, _ = tiny
  _, table = runner.load_table(config)
  keys = [job.key for job in runner.plan(table, [0, 1])]
  assert keys == ["teacher/s100", "ce/s0", "kd/s0", "lsr/s0", "ce/s1", "kd/s1", "lsr/s1"]
  assert [j.key for j in runner.plan(table, [0], rows=["ce"])] == ["ce/s0"]
  assert runner.plan(table, [0], rows=["kd"])[1].needs == ("teacher/s100",)


def test_a_row_of_several_teacher_stages_waits_for_all_and_distils_from_their_ensemble(tiny):
  config, _ = tiny
  module, table = runner.load_table(config)
  table = dataclasses.replace(
      table, teachers=table.teachers + (Row("teacher_b", "method=lsr"),),
      rows=table.rows + (Row("kd_two", "method=kd", teacher=("teacher", "teacher_b")),))
  jobs = runner.plan(table, [0], rows=["kd_two"])
  assert [j.key for j in jobs] == ["teacher/s100", "teacher_b/s100", "kd_two/s0"]
  assert jobs[-1].needs == ("teacher/s100", "teacher_b/s100")
  run = runner.job_config(module, table, table.row("kd_two"), 3, workroot="/w", smoke=True)
  assert run.seed == 3
  assert run.teacher.workdir == "/w/tiny/teacher/s100,/w/tiny/teacher_b/s100"
  with pytest.raises(ValueError, match="teacher='teacher_c' is not a teacher stage"):
    dataclasses.replace(table, rows=(Row("kd_c", "method=kd", teacher=("teacher", "teacher_c")),))


def _fake_command(fail: set):
  """A stand-in for `jaxkd report one`: records the start order, fails for ``fail``."""
  def command(config_path, job, *, workroot, results_dir, smoke):
    del config_path, smoke
    code = (f"import json, os, sys\n"
            f"open(os.path.join({workroot!r}, 'order'), 'a').write({job.key!r} + '\\n')\n"
            f"sys.exit(1) if {job.row.name in fail} else None\n"
            f"p = os.path.join({results_dir!r}, 'tiny', 'runs', {job.row.name!r}, "
            f"'s{job.seed}.json')\n"
            f"os.makedirs(os.path.dirname(p), exist_ok=True)\n"
            f"json.dump({{}}, open(p, 'w'))\n")
    return [sys.executable, "-c", code]
  return command


def test_run_table_skips_done_runs_and_dependants_of_failures(tiny, tmp_path, monkeypatch):
  config, _ = tiny
  results, workroot = str(tmp_path / "fresh"), str(tmp_path / "work")
  os.makedirs(workroot)
  monkeypatch.setattr(runner, "_command", _fake_command(fail={"teacher"}))
  messages = []
  failed = runner.run_table(config, seeds=[0, 1], workroot=workroot, results_dir=results,
                            workers=2, log=messages.append)
  assert sorted(failed) == ["kd/s0", "kd/s1", "teacher/s100"]
  started = [m.split()[1] for m in messages if m.startswith("start ")]
  assert started[0] == "teacher/s100"
  assert sorted(started[1:]) == ["ce/s0", "ce/s1", "lsr/s0", "lsr/s1"]
  assert any(m.startswith("skip kd/s0: its teacher failed") for m in messages)
  assert sorted(open(os.path.join(workroot, "order")).read().split()) == sorted(started)
  monkeypatch.setattr(runner, "_command", _fake_command(fail=set()))
  assert runner.run_table(config, seeds=[0, 1], workroot=workroot, results_dir=results,
                          workers=1, log=lambda m: None) == []
  order = open(os.path.join(workroot, "order")).read().split()
  # Only what had not succeeded runs again, teacher first.
  assert order[5:] == ["teacher/s100", "kd/s0", "kd/s1"]


def test_run_one_collects_what_the_engine_measured(tmp_path):
  """One smoke run through the engine: the record's final sums agree with its summary."""
  record = runner.run_one(FASHION, "lsr", 0, workroot=str(tmp_path / "w"),
                          results_dir=str(tmp_path / "r"), smoke=True)
  final, last = record["final"], record["summary"]["last"]
  assert final["count"] == 64 and sum(final["ece_bin_count"]) == 64  # the mock test split
  assert final["correct_top1"] / final["count"] == pytest.approx(last["top1"], abs=1e-6)
  assert final["nll"] == pytest.approx(last["nll"], rel=1e-4)
  assert 0.0 <= record["stability"]["features"] <= 1.0
  assert 0.0 < record["stability"]["probabilities"] <= 1.0  # Shen et al.'s S
  assert "projection" in record  # lsr is one of the study's projected rows
  assert record["curves"]["eval/top1"]["value"][-1] == pytest.approx(last["top1"], abs=1e-6)
  path = runner.result_path(str(tmp_path / "r"), runner.load_table(FASHION)[1], "lsr", 0)
  with open(path) as f:
    assert json.load(f)["seed"] == 0


def test_cli_report_errors_name_the_problem(tmp_path, capsys):
  status = cli.main(["report", "render", str(tmp_path / "missing.py")])
  assert status == 2 and "no such file" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    cli.main(["report", "run", FASHION, "--seeds", "a,b"])


def _writing_command(top1: float):
  """A stand-in for `jaxkd report one` that writes a renderable record and its workdir."""
  def command(config_path, job, *, workroot, results_dir, smoke):
    del config_path
    record = {**_record(job.row.name, job.seed, top1), "smoke": smoke}
    run_dir = os.path.join(workroot, "tiny", job.row.name, f"s{job.seed}")
    code = (f"import json, os\n"
            f"os.makedirs({run_dir!r}, exist_ok=True)\n"
            f"open(os.path.join({run_dir!r}, 'summary.json'), 'w').write('{{}}')\n"
            f"open(os.path.join({workroot!r}, 'order'), 'a').write({job.key!r} + '\\n')\n"
            f"p = os.path.join({results_dir!r}, 'tiny', 'runs', {job.row.name!r}, "
            f"'s{job.seed}.json')\n"
            f"os.makedirs(os.path.dirname(p), exist_ok=True)\n"
            f"open(p, 'w').write({json.dumps(record)!r})\n")
    return [sys.executable, "-c", code]
  return command


@pytest.fixture
def in_tmp(tiny, tmp_path, monkeypatch):
  """The tiny table, run from an empty current directory."""
  config, _ = tiny
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  return config, cwd


def test_default_directories_are_under_the_current_directory(in_tmp, capsys):
  from jaxkd.reporting import cli as report_cli
  import jaxkd
  _, cwd = in_tmp
  package = os.path.dirname(os.path.abspath(jaxkd.__file__))
  results, workroot = report_cli.resolve_paths(smoke=False)
  assert (results, workroot) == (str(cwd / "experiments" / "results"),
                                 str(cwd / "workdirs" / "tables"))
  smoke_results, smoke_workroot = report_cli.resolve_paths(smoke=True)
  assert (smoke_results, smoke_workroot) == (str(cwd / "workdirs" / "smoke" / "results"),
                                             str(cwd / "workdirs" / "smoke" / "tables"))
  assert not any(p.startswith(package) for p in (results, workroot, smoke_results))
  assert report_cli.resolve_paths(smoke=True, results_dir="r", workroot="w") == (
      str(cwd / "r"), str(cwd / "w"))
  for command in ("run", "render", "one"):
    with pytest.raises(SystemExit):
      cli.main(["report", command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "relative to the current directory, not to the installed package" in text, command
    assert "./experiments/results under the current directory" in text, command


@pytest.mark.slow
def test_smoke_results_are_kept_apart_and_render_finds_them(in_tmp, monkeypatch, capsys):
  config, cwd = in_tmp
  monkeypatch.setattr(runner, "_command", _writing_command(0.5))
  assert cli.main(["report", "run", config, "--smoke", "--seeds", "0", "--rows", "ce"]) == 0
  smoke_report = cwd / "workdirs" / "smoke" / "results" / "tiny" / "REPORT.md"
  assert f"wrote {smoke_report}" in capsys.readouterr().out
  assert (cwd / "workdirs" / "smoke" / "results" / "tiny" / "runs" / "ce" / "s0.json").is_file()
  assert (cwd / "workdirs" / "smoke" / "tables" / "tiny" / "ce" / "s0").is_dir()
  assert not (cwd / "experiments").exists() and not (cwd / "workdirs" / "tables").exists()
  # Without --smoke, render says where the smoke results are and which flag renders them.
  assert cli.main(["report", "render", config]) == 2
  err = capsys.readouterr().err
  assert str(cwd / "experiments" / "results" / "tiny" / "runs") in err
  assert str(cwd / "workdirs" / "smoke" / "results" / "tiny" / "runs") in err
  assert f"jaxkd report render {config} --smoke" in err
  os.remove(smoke_report)
  assert cli.main(["report", "render", config, "--smoke"]) == 0
  assert "Smoke runs" in smoke_report.read_text()
  # Real runs go to ./experiments/results and never see the smoke records.
  monkeypatch.setattr(runner, "_command", _writing_command(0.7))
  assert cli.main(["report", "run", config, "--seeds", "0", "--rows", "ce"]) == 0
  out = capsys.readouterr().out
  assert "0 already done" in out and "start ce/s0" in out
  real = json.loads((cwd / "experiments" / "results" / "tiny" / "runs" / "ce" / "s0.json")
                    .read_text())
  assert real["smoke"] is False
  assert "Smoke runs" not in (cwd / "experiments" / "results" / "tiny" / "REPORT.md").read_text()


@pytest.mark.slow
def test_smoke_run_through_the_real_subprocess_renders(in_tmp, capsys):
  """One real smoke run: `report one` in a subprocess writes where `render --smoke` reads."""
  config, cwd = in_tmp
  assert cli.main(["report", "run", config, "--smoke", "--seeds", "0", "--rows", "lsr"]) == 0
  assert "1/1 runs done" in capsys.readouterr().out
  record = cwd / "workdirs" / "smoke" / "results" / "tiny" / "runs" / "lsr" / "s0.json"
  assert json.loads(record.read_text())["smoke"] is True
  assert (cwd / "workdirs" / "smoke" / "tables" / "tiny" / "lsr" / "s0" / "summary.json").is_file()
  assert cli.main(["report", "render", config, "--smoke"]) == 0
  assert not (cwd / "experiments").exists()


@pytest.mark.slow
def test_rerun_trains_chosen_runs_again_and_overwrites_their_records(tiny, tmp_path,
                                                                      monkeypatch):
  config, results = tiny
  workroot = str(tmp_path / "work")
  stale = runner.workdir(workroot, runner.load_table(config)[1], "ce", 0)
  os.makedirs(stale)
  open(os.path.join(stale, "old_checkpoint"), "w").close()
  monkeypatch.setattr(runner, "_command", _writing_command(0.99))
  messages = []
  assert runner.run_table(config, seeds=[0, 1], workroot=workroot, results_dir=results,
                          log=messages.append) == []
  # The fixture's records count as done: only lsr, which has none, runs.
  assert messages[0].startswith("tiny: 7 runs, 5 already done")
  assert "--rerun trains them again, a new --results-dir starts from nothing" in messages[0]
  assert open(os.path.join(workroot, "order")).read().split() == ["lsr/s0", "lsr/s1"]
  messages.clear()
  assert runner.run_table(config, seeds=[0, 1], workroot=workroot, results_dir=results,
                          rows=["ce"], rerun=True, log=messages.append) == []
  assert open(os.path.join(workroot, "order")).read().split()[2:] == ["ce/s0", "ce/s1"]
  assert any(m.startswith("ce/s0: --rerun: its workdir") and "is overwritten" in m
             for m in messages)
  assert not os.path.exists(os.path.join(stale, "old_checkpoint"))
  for seed in (0, 1):
    with open(os.path.join(results, "tiny", "runs", "ce", f"s{seed}.json")) as f:
      assert json.load(f)["summary"]["best"]["top1"] == 0.99
  with open(os.path.join(results, "tiny", "runs", "kd", "s0.json")) as f:
    assert json.load(f)["summary"]["best"]["top1"] == 0.80  # not chosen: kept
  # --rerun on the command line reaches the runner.
  os.makedirs(tmp_path / "cwd")
  monkeypatch.chdir(tmp_path / "cwd")
  assert cli.main(["report", "run", config, "--seeds", "2", "--rows", "kd", "--rerun",
                   "--results-dir", results, "--workroot", workroot]) == 0
  assert open(os.path.join(workroot, "order")).read().split()[-1] == "kd/s2"


def test_fresh_results_dir_trains_every_run_again(tiny, tmp_path, monkeypatch):
  """Workdirs finished for another results dir are trained again, not copied."""
  config, results = tiny
  workroot, fresh = str(tmp_path / "work"), str(tmp_path / "fresh")
  monkeypatch.setattr(runner, "_command", _writing_command(0.6))
  assert runner.run_table(config, seeds=[0], workroot=workroot, results_dir=results,
                          rerun=True, log=lambda m: None) == []
  _, table = runner.load_table(config)
  for job in runner.plan(table, [0]):  # as `run_one` leaves them: claimed for `results`
    with open(runner.workdir(workroot, table, job.row.name, job.seed) + ".record", "w") as f:
      f.write(runner.result_path(results, table, job.row.name, job.seed) + "\n")
  interrupted = runner.workdir(workroot, table, "lsr", 0)
  os.remove(os.path.join(interrupted, "summary.json"))
  open(os.path.join(interrupted, "checkpoint"), "w").close()
  messages = []
  assert runner.run_table(config, seeds=[0], workroot=workroot, results_dir=fresh,
                          log=messages.append) == []
  assert "; 4/4 runs done in " in messages[-1]
  assert open(os.path.join(workroot, "order")).read().split()[4:] == [
      "teacher/s100", "ce/s0", "kd/s0", "lsr/s0"]
  stale = [m.split(":")[0] for m in messages if "made for another results directory" in m]
  assert stale == ["teacher/s100", "ce/s0", "kd/s0"]
  # An interrupted workdir is resumed, not deleted.
  assert os.path.isfile(os.path.join(interrupted, "checkpoint"))
  assert len(render.load_records(fresh, table)) == 4


def test_progress_counts_runs_and_estimates_from_the_runs_so_far(tiny, tmp_path, monkeypatch):
  clock = iter([100.0, 110.0, 130.0, 400.0, 2000.0])
  monkeypatch.setattr(runner.time, "time", lambda: next(clock))
  progress = runner._Progress(4)  # pylint: disable=protected-access
  assert progress.step(ran=True) == "1/4 runs done, ETA 30 s"  # 10 s a run, 3 left
  assert progress.step(ran=False) == "2/4 runs done, ETA 60 s"  # a skip: 30 s for 1 run, 2 left
  assert progress.step(ran=True) == "3/4 runs done, ETA 2 min"  # 300 s over 2 runs, 1 left
  assert progress.step(ran=True) == "4/4 runs done in 32 min"
  monkeypatch.undo()
  config, _ = tiny
  monkeypatch.setattr(runner, "_command", _writing_command(0.5))
  workroot = str(tmp_path / "work")
  os.makedirs(workroot)
  messages = []
  runner.run_table(config, seeds=[0], workroot=workroot, results_dir=str(tmp_path / "new"),
                   rows=["ce", "lsr"], log=messages.append)
  finished = [m for m in messages if m.startswith("done ")]
  assert "; 1/2 runs done, ETA " in finished[0] and "; 2/2 runs done in " in finished[1]


def test_defaults_rule_prefers_calibration_within_the_spread_and_bounds_nll():
  top1 = {"a": np.asarray([0.80, 0.81, 0.82]), "b": np.asarray([0.79, 0.81, 0.81]),
          "c": np.asarray([0.70, 0.71, 0.72]), "d": np.asarray([0.80, 0.82, 0.81])}
  nll = {"a": np.asarray([0.50, 0.52, 0.54]), "b": np.asarray([0.40, 0.40, 0.40]),
         "c": np.asarray([0.30, 0.30, 0.30]), "d": np.asarray([0.90, 0.90, 0.90])}
  ece = {n: np.zeros(3) for n in top1}
  # a, b, d tie in top-1 (Welch p >= 0.05); c is beyond the spread. d's NLL 0.9 is past the
  # bound 0.6: out. Among a and b, b's NLL 0.40 is the lowest: chosen, though a is higher.
  result = _stats.choose_default(top1, nll, ece, nll_bound=0.6)
  assert result["best"] == "a" and result["chosen"] == "b"
  assert result["admissible"] == {"a", "b", "c"} and result["tied"] == {"a", "b"}
  # A setting past the bound stays when its top-1 beats every setting within it beyond the
  # spread: here only c is within the bound, and d beats it clearly.
  result = _stats.choose_default({"c": top1["c"], "d": top1["d"]},
                                 {"c": nll["c"], "d": nll["d"]}, {"c": ece["c"], "d": ece["d"]},
                                 nll_bound=0.6)
  assert result["chosen"] == "d"
  # Equal NLL: the lower ECE decides.
  result = _stats.choose_default({"a": top1["a"], "b": top1["b"]}, {"a": nll["b"], "b": nll["b"]},
                                 {"a": np.full(3, 0.02), "b": np.full(3, 0.05)}, nll_bound=1.0)
  assert result["chosen"] == "a"


@pytest.mark.skipif(not os.path.isdir(os.path.join(COMMITTED, "defaults_sweep", "runs")),
                    reason="the defaults sweep's results are not committed")
def test_library_defaults_are_the_ones_the_rule_picks_from_the_committed_sweep():
  from jaxkd import objectives
  _, table = runner.load_table(SWEEP)
  by_row = render.load_records(COMMITTED, table)
  assert {c.method for c in table.choices} == {"lsrkd", "lsrkd_tc", "mrkd", "mrkd_tc", "alr",
                                               "ras_kd"}
  for choice in table.choices:
    chosen = render.choose(choice, by_row)["chosen"]
    settings = by_row[chosen][0]["config"]["method"]
    defaults = objectives.defaults(choice.method)
    assert {k: defaults[k] for k in settings if k != "name"} == {
        k: v for k, v in settings.items() if k != "name"}, (choice.method, chosen)


def test_pack_groups_a_rows_seeds_into_one_job(tiny, tmp_path, monkeypatch):
  """``--pack 2``: each row's seeds two to a job (``report one ROW --seed 0,1``), in the order
  of their first seed; the teacher stage alone; every run's record counted."""
  config, _ = tiny
  _, table = runner.load_table(config)
  jobs = runner.pack_jobs(runner.plan(table, [0, 1, 2]), 2, table)
  assert [j.key for j in jobs] == ["teacher/s100", "ce/s0+s1", "kd/s0+s1", "lsr/s0+s1",
                                   "ce/s2", "kd/s2", "lsr/s2"]
  assert jobs[2].needs == ("teacher/s100",) and jobs[2].keys == ("kd/s0", "kd/s1")
  command = runner._command(config, jobs[1], workroot="w", results_dir="r", smoke=False)
  assert command[command.index("--seed") + 1] == "0,1"
  results, workroot = str(tmp_path / "fresh"), str(tmp_path / "work")
  os.makedirs(workroot)

  def fake(config_path, job, *, workroot, results_dir, smoke):  # writes every seed's record
    del config_path, smoke
    paths = [os.path.join(results_dir, "tiny", "runs", job.row.name, f"s{s}.json")
             for s in job.seeds]
    code = (f"import os\nopen(os.path.join({workroot!r}, 'order'), 'a').write({job.key!r} + "
            f"'\\n')\nfor p in {paths!r}:\n  os.makedirs(os.path.dirname(p), exist_ok=True)\n"
            f"  open(p, 'w').write('{{}}')\n")
    return [sys.executable, "-c", code]

  monkeypatch.setattr(runner, "_command", fake)
  messages = []
  assert runner.run_table(config, seeds=[0, 1, 2], workroot=workroot, results_dir=results,
                          workers=2, pack=2, log=messages.append) == []
  assert sorted(open(os.path.join(workroot, "order")).read().split()) == sorted(
      j.key for j in jobs)
  assert messages[-1].startswith("done ") and "; 10/10 runs done in " in messages[-1]
  assert os.path.isfile(os.path.join(workroot, "tiny", "ce", "s0+s1.log"))
  assert cli.main(["report", "run", config, "--pack", "0"]) == 2
