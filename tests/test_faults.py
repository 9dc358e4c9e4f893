"""Short form of the fault-injection script: SIGKILL at random points, resume, bit-exact."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "experiments", "faults"))
import kill_resume  # noqa: E402


def test_kill_at_random_points_and_resume_bit_exact(tmp_path):
  report = kill_resume.run_trials(2, seed=1, root=str(tmp_path))
  for result in report["results"]:
    assert result["final_step"] == 60, result
    assert result["params_equal"], result
    assert result["metrics_steps_ordered"], result
  assert report["passed"] == 2
