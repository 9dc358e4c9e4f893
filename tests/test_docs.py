"""The documentation: docs/METHODS.md is the only methods reference the code points to."""
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = os.path.join(ROOT, "docs", "METHODS.md")
_SKIP_DIRS = {".git", "workdirs", "build", "dist", "__pycache__", ".pytest_cache"}
# Built from pieces so that this file does not match itself.
_OUTSIDE = ("shared" + "/METHODS", ".." + "/shared", "/work" + "/shared")
_REFERENCE = re.compile(r"docs/METHODS\.md[\s#]+section[\s#]+(\d+(?:\.\d+)?)")


def _files(*extensions):
  for directory, dirs, names in os.walk(ROOT):
    dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not d.endswith(".egg-info")]
    for name in sorted(names):
      if name.endswith(extensions):
        path = os.path.join(directory, name)
        with open(path, encoding="utf-8") as f:
          yield os.path.relpath(path, ROOT), f.read()


def _sections():
  """Section numbers of docs/METHODS.md: ``## N. Title`` and ``### N.M Title`` headings."""
  with open(METHODS, encoding="utf-8") as f:
    return set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)[. ]", f.read(), flags=re.M))


def test_no_file_points_outside_the_repository():
  offenders = [(path, s) for path, text in _files(".py", ".md") for s in _OUTSIDE if s in text]
  assert not offenders, offenders


def test_every_methods_reference_names_an_existing_section():
  sections = _sections()
  assert {str(n) for n in range(12)} <= sections, sorted(sections)
  references = [(path, n) for path, text in _files(".py", ".md")
                for n in _REFERENCE.findall(text)]
  assert len(references) >= 10, references  # the targets, losses, configs and tests cite it
  missing = [(path, n) for path, n in references if n not in sections]
  assert not missing, missing


def test_methods_md_is_only_named_by_its_repository_path():
  """A bare "METHODS.md" would send the reader to a file that is not next to the code."""
  bare = [(path, line) for path, text in _files(".py") if path != "tests/test_docs.py"
          for line in text.splitlines() if re.search(r"(?<!docs/)METHODS\.md", line)]
  assert not bare, bare


def test_methods_md_covers_every_method_and_its_links_resolve():
  import jaxkd.objectives as objectives  # pylint: disable=import-outside-toplevel
  with open(METHODS, encoding="utf-8") as f:
    text = f.read()
  for name in objectives.names():
    assert f"`{name}`" in text, name
  slugs = {re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
           for title in re.findall(r"^#+ (.+)$", text, flags=re.M)}
  links = re.findall(r"\]\(#([^)]+)\)", text)
  assert links and not [link for link in links if link not in slugs], sorted(slugs)


def test_methods_md_states_the_current_defaults_of_every_method():
  import ast  # pylint: disable=import-outside-toplevel
  import jaxkd.objectives as objectives  # pylint: disable=import-outside-toplevel
  with open(METHODS, encoding="utf-8") as f:
    stated = re.findall(r"^Defaults of `(\w+)`: `(.*)`\.\\?$", f.read(), flags=re.M)
  assert sorted(name for name, _ in stated) == sorted(objectives.names())
  for name, value in stated:
    assert ast.literal_eval(value) == objectives.defaults(name), (
        f"docs/METHODS.md states the defaults of {name} as {value}; the code's are "
        f"{objectives.defaults(name)}: update the page")


def _readme_example() -> str:
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    readme = f.read()
  section = readme.split("## Add a method to your own training loop\n", 1)[1].split("\n## ")[0]
  return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.slow
def test_readme_training_loop_example_runs():
  """The README's own-loop example, run as printed: finite losses, state fed back, ring full."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  namespace = {"__name__": "readme_example"}
  exec(compile(_readme_example(), "README.md", "exec"), namespace)  # pylint: disable=exec-used
  steps = 3 * namespace["STEPS_PER_EPOCH"]
  for name in ("lsr_losses", "ols_losses", "mrkd_losses"):
    losses = namespace[name]
    assert len(losses) == steps and np.all(np.isfinite(losses)), (name, losses)
  # OLS's matrix starts at zeros; it changed at the epoch boundaries only if the state was fed
  # back (every row is then a mean softmax or uniform, so it sums to 1).
  matrix = namespace["ols_state"]["targets"]["soft_ce"].matrix
  np.testing.assert_allclose(np.sum(matrix, axis=-1), 1.0, rtol=1e-5)
  ring = namespace["ring"]
  assert int(ring.refreshes) == 3  # a snapshot at the end of each of the 3 epochs
  assert bool(np.all(ring.filled()))
  # The ring starts as zeros: after the snapshots both backups hold trained weights.
  for leaf in jax.tree_util.tree_leaves(ring.params):
    assert np.all(np.any(np.asarray(leaf).reshape(2, -1) != 0, axis=1))


def test_readme_lists_the_keys_a_resume_may_change_as_the_code_does():
  from jaxkd.train import workdir  # pylint: disable=import-outside-toplevel
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    readme = f.read()
  passage = readme[readme.index("- Resume may change only"):readme.index("records them.")]
  listed = re.findall(r"`([a-z_.]+)`", passage.split("(`jaxkd.train.workdir")[0])
  assert tuple(listed) == workdir.OPERATIONAL
