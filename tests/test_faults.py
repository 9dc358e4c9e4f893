"""Short forms of the fault-injection scripts: SIGKILL at random points, resume, bit-exact;
a process of a 2-process streamed run dies, the survivor exits, the rerun resumes exactly."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "experiments", "faults"))
import kill_resume  # noqa: E402
import peer_death  # noqa: E402


@pytest.mark.slow
def test_kill_at_random_points_and_resume_bit_exact(tmp_path):
  report = kill_resume.run_trials(1, seed=1, root=str(tmp_path))
  for result in report["results"]:
    assert result["final_step"] == 60, result
    assert result["params_equal"], result
    assert result["metrics_steps_ordered"], result
  assert report["passed"] == 1


@pytest.mark.slow
def test_survivor_of_a_dead_peer_exits_clearly_and_the_rerun_resumes_exactly(tmp_path,
                                                                            imagenet_dir):
  record = peer_death.run_trial(imagenet_dir, str(tmp_path), steps=12, timeout_s=10)
  survivor = record["survivor"]
  if survivor["path"] == "watchdog":  # the peer went silent between collectives
    assert survivor["exit_status"] == 75, record
    assert 10 <= survivor["exit_after_kill_s"] < 40, record  # the watchdog, not JAX's 120 s
    assert "process 0 of 2" in survivor["message"] and "newest checkpoint is step" in \
        survivor["message"], record
  else:  # the kill cut a message mid-collective: gloo aborts the survivor at once
    assert survivor["path"] == "gloo abort" and survivor["exit_after_kill_s"] < 10, record
  assert record["bit_equal_to_uninterrupted"], record
  # float64 runs (model.dtype): another order of the sums moves only the last float64 bits.
  print("2 processes vs 1, max relative difference:",
        record["two_processes_vs_one_max_relative_diff"])
  assert record["two_processes_vs_one_max_relative_diff"] <= 1e-9, record
