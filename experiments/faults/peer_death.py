"""Fault injection: one process of a 2-process streamed run dies; the survivor must exit.

Two `jaxkd train` processes (2 simulated CPU devices each, 127.0.0.1) train a tiny ImageNet in
tfds's real layout (streamed: each process reads its rows). Process 1 is SIGKILLed after the
run's first checkpoints. Process 0 must exit by itself within ``distributed_timeout_s`` plus a
margin, with status 75 and one line naming what happened and the checkpoint to resume from.
Then both processes are started again on the same workdir; the resumed run must end with the
parameters of an uninterrupted 2-process run, bit for bit; and that uninterrupted run must
equal one process with the same 4 devices (to 1e-9: the runs are float64, `model.dtype`, so
another order of the sums moves only the last float64 bits).

    python experiments/faults/peer_death.py --out experiments/results/faults/peer_death.json

The test suite runs it once (tests/test_faults.py).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

from jaxkd.train import checkpoint, watchdog

__all__ = ["run_trial"]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _args(data_dir: str, steps: int, timeout_s: int) -> list[str]:
  return ["--config", os.path.join(ROOT, "configs", "default.py") + ":smoke",
          "--config.data.name=imagenet2012", f"--config.data.data_dir={data_dir}",
          "--config.data.image_size=16", "--config.data.num_workers=2",
          "--config.data.crop_padding=0", "--config.data.rotation_degrees=0.0",
          "--config.method.name=ce", "--config.train.batch_size=8",
          # The MLP (no BatchNorm) at lr 0.01: with small_cnn's BatchNorm, or at lr 0.05, the
          # 1000-class net memorising 24 images amplifies the float differences of 2 processes
          # vs 1 (other programs, other sums) to 1e-1 in 24 steps (measured).
          "--config.model.name=mlp", "--config.train.optimizer.learning_rate=0.01",
          "--config.train.eval_batch_size=8", f"--config.train.num_steps={steps}",
          "--config.train.checkpoint_every_steps=3", "--config.train.log_every_steps=3",
          f"--config.distributed_timeout_s={timeout_s}", "--config.model.dtype=float64"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start_pair(workdir: str, args: list[str]) -> list[subprocess.Popen]:
  port = _free_port()
  procs = []
  for i in range(2):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
               JAX_PROCESS_ID=str(i),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs.append(subprocess.Popen([sys.executable, "-m", "jaxkd.cli", "train", "--workdir",
                                   workdir, *args], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True))
  return procs


def _finish_pair(procs: list[subprocess.Popen], limit_s: float = 600) -> None:
  for p in procs:
    out, _ = p.communicate(timeout=limit_s)
    if p.returncode != 0:
      raise RuntimeError(f"a process exited with {p.returncode}:\n{out[-3000:]}")


def _params(workdir: str):
  with jax.enable_x64(True):  # float64 parameters read as float64
    variables, step = checkpoint.load_variables(workdir)
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(variables["params"])], step


def _single(workdir: str, args: list[str]) -> None:
  """The same run in one process with the pair's 4 devices."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  for key in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    env.pop(key, None)
  _finish_pair([subprocess.Popen([sys.executable, "-m", "jaxkd.cli", "train", "--workdir",
                                  workdir, *args], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)])


def run_trial(data_dir: str, root: str, *, steps: int = 24, kill_after_step: int = 6,
              timeout_s: int = 10) -> dict:
  """One trial; returns its record (raises when the survivor hangs or resumes wrongly).

  Also checks that the uninterrupted 2-process run equals one process with its 4 devices (to
  1e-9 in float64: the two sum across devices in different orders)."""
  args = _args(data_dir, steps, timeout_s)
  reference = os.path.join(root, "reference")
  _finish_pair(_start_pair(reference, args))
  _single(os.path.join(root, "single"), args)
  (pair, _), (single, _) = _params(reference), _params(os.path.join(root, "single"))
  one_vs_two = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))) /
                         max(float(np.max(np.abs(np.asarray(b)))), 1e-12))
                   for a, b in zip(pair, single))
  if one_vs_two > 1e-9 or pair[0].dtype != np.float64:
    raise RuntimeError(f"2 processes differ from 1 process by {one_vs_two:.2e} (relative)")
  workdir = os.path.join(root, "killed")
  procs = _start_pair(workdir, args)
  while max(checkpoint.checkpoint_steps(workdir), default=0) < kill_after_step:
    if any(p.poll() is not None for p in procs):
      raise RuntimeError("a process ended before the kill:\n" + procs[0].communicate()[0])
    time.sleep(0.2)
  procs[1].send_signal(signal.SIGKILL)
  killed_at = time.monotonic()
  out, _ = procs[0].communicate(timeout=timeout_s + 120)
  exit_s = time.monotonic() - killed_at
  procs[1].wait()
  with open(os.path.join(root, "survivor.log"), "w") as f:
    f.write(out)
  message = next((line for line in out.splitlines() if "waited" in line), "")
  # Two ways out, both without hanging: the watchdog's (status 75 and its line, once the peer
  # has been silent for timeout_s), or gloo's own abort when the kill cuts a message in half
  # mid-collective ("Received data size doesn't match": SIGABRT at once, nothing to catch).
  watchdog_exit = (procs[0].returncode == watchdog.EXIT_PEER_LOST
                   and "run the same command" in message)
  gloo_abort = procs[0].returncode == -signal.SIGABRT and "gloo::EnforceNotMet" in out
  survivor = dict(exit_status=procs[0].returncode, exit_after_kill_s=round(exit_s, 1),
                  message=message, path="watchdog" if watchdog_exit else
                  "gloo abort" if gloo_abort else "other")
  if not (watchdog_exit or gloo_abort):
    raise RuntimeError(f"survivor: {survivor}\n{out[:3000]}\n...\n{out[-2000:]}")
  resumed_from = max(checkpoint.checkpoint_steps(workdir))
  _finish_pair(_start_pair(workdir, args))
  (want, want_step), (got, got_step) = _params(reference), _params(workdir)
  equal = want_step == got_step == steps and all(
      np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(want, got))
  if not equal:
    raise RuntimeError(f"the resumed run differs from the uninterrupted one (steps "
                       f"{want_step}, {got_step})")
  return dict(survivor=survivor, timeout_s=timeout_s, resumed_from_step=resumed_from,
              steps=steps, bit_equal_to_uninterrupted=equal,
              two_processes_vs_one_max_relative_diff=one_vs_two)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", default=None, help="JSON file for the result")
  parser.add_argument("--timeout", type=int, default=10, help="distributed_timeout_s")
  args = parser.parse_args()
  from jaxkd import data  # pylint: disable=import-outside-toplevel
  from jaxkd.data import _demo  # pylint: disable=import-outside-toplevel  (the tiny ImageNet)
  root = tempfile.mkdtemp(prefix="jaxkd-peer-death-")
  try:
    _demo.write_imagenet_tars(os.path.join(root, "manual"))
    data.prepare_imagenet2012(os.path.join(root, "manual"), os.path.join(root, "data"))
    record = run_trial(os.path.join(root, "data"), root, timeout_s=args.timeout)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  record.update(command=" ".join(["python"] + sys.argv), jax=jax.__version__,
                machine=platform.machine(), processor=platform.processor() or None,
                date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
  print(json.dumps(record, indent=2))
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      json.dump(record, f, indent=2)


if __name__ == "__main__":
  main()
